"""Every registered connector (entry points) certified against its simulated bureau."""

from __future__ import annotations

import pytest

from gateway.connectors_registry import load_connectors
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.conformance import certify

CONNECTORS = load_connectors()

pytestmark = pytest.mark.timeout(120)


def _city_of(sim: BureauSimulator, connector_name: str) -> str:
    settings = sim.settings
    keys = [k for k in settings.cities if settings.connector_of(k) == connector_name]
    assert keys, f"no cities block uses connector {connector_name!r}"
    return keys[0]


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_connector_is_conformant(sim: BureauSimulator, name: str) -> None:
    connector = CONNECTORS[name]
    city = _city_of(sim, name)
    results = certify(connector, sim.settings.cities[city], sim.endpoint(city), sim.city(city))
    failed = [f"{c.name}: {c.detail}" for c in results if not c.ok]
    assert not failed, "\n".join(failed)
    expected = {"accepted", "duplicate", "invalid_rejected", "rate_limited", "outage", "hang"}
    assert expected <= {c.name for c in results}
    if connector.token_grant is not None:
        assert "token_expired" in {c.name for c in results}
    if connector.requires_client_cert:
        assert "client_cert" in {c.name for c in results}
    names = {c.name for c in results}
    assert "result" in names and ({"callback", "poll"} & names)


def test_certify_reports_a_broken_connector(sim: BureauSimulator) -> None:
    """A connector with the wrong category table must fail certification, not pass quietly."""
    from dataclasses import replace

    from connectors import beijing

    broken = replace(beijing.connector, body=lambda e: {**beijing.body(e), "tslb": "XX"})
    results = {c.name: c for c in certify(broken, sim.settings.cities["beijing"],
                                          sim.endpoint("beijing"), sim.city("beijing"))}  # fmt: skip
    assert not results["accepted"].ok
    assert "1003" in results["accepted"].detail
