"""Entry-point discovery: every built-in city loads; duplicates and broken plug-ins are refused."""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import EntryPoint

import pytest

from connectors import beijing, wuhu
from gateway.cities import GREEN_CHANNEL_KEYS
from gateway.connectors_registry import GROUP, describe_connectors, load_connectors
from gateway.errors import ConnectorError
from gateway.sdk import Connector

CITIES = set(GREEN_CHANNEL_KEYS)
HERE = __name__

# Objects the fake entry points below point at.
WUHU = wuhu.connector
RENAMED = replace(wuhu.connector, name="not-wuhu")
BAD_CODE = replace(wuhu.connector, city_code="34020")
NO_FAMILY = replace(wuhu.connector, family=" ")
SAME_CODE = replace(beijing.connector, name="beijing2")
NOT_A_CONNECTOR = object()


def _ep(name: str, attr: str) -> EntryPoint:
    return EntryPoint(name, f"{HERE}:{attr}", GROUP)


def test_every_built_in_city_loads() -> None:
    loaded = load_connectors()
    assert set(loaded) >= CITIES
    for name, connector in loaded.items():
        assert isinstance(connector, Connector)
        assert connector.name == name


def test_only_the_named_ones_load() -> None:
    assert set(load_connectors({"wuhu", "beijing"})) == {"wuhu", "beijing"}
    with pytest.raises(ConnectorError, match="no connector registered"):
        load_connectors({"atlantis"})


def test_describe_names_the_distribution() -> None:
    info = describe_connectors({"shenzhen"})["shenzhen"]
    assert info.entry_point == "connectors.shenzhen:connector"
    assert info.distribution.startswith("greenchannel ")
    assert info.auth == "oauth2-client-credentials"


def test_fake_entry_point_loads() -> None:
    assert load_connectors(eps=[_ep("wuhu", "WUHU")]) == {"wuhu": wuhu.connector}


@pytest.mark.parametrize(
    ("eps", "message"),
    [
        ([_ep("wuhu", "WUHU"), _ep("wuhu", "RENAMED")], "registered twice"),
        ([_ep("wuhu", "MISSING")], "cannot be loaded"),
        ([EntryPoint("wuhu", "no_such_module_xyz:connector", GROUP)], "cannot be loaded"),
        ([_ep("wuhu", "RENAMED")], "calls itself 'not-wuhu'"),
        ([_ep("wuhu", "BAD_CODE")], "not 6 digits"),
        ([_ep("wuhu", "NO_FAMILY")], "family is empty"),
        ([_ep("wuhu", "NOT_A_CONNECTOR")], "is not a Connector"),
        ([EntryPoint("beijing", "connectors.beijing:connector", GROUP), _ep("beijing2", "SAME_CODE")],
         "share city_code 110000"),
    ],
)  # fmt: skip
def test_broken_or_duplicate_connectors_are_refused(eps: list[EntryPoint], message: str) -> None:
    with pytest.raises(ConnectorError, match=message):
        load_connectors(eps=eps)


def test_duplicates_are_caught_even_when_not_requested() -> None:
    eps = [_ep("wuhu", "WUHU"), _ep("wuhu", "RENAMED"), _ep("x", "WUHU")]
    with pytest.raises(ConnectorError, match="registered twice"):
        load_connectors({"x"}, eps=eps)
