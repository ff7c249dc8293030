"""One source for each fact: what is written twice is checked against its source here.

* the ten green-channel cities: ``gateway/cities.py`` is the table; the connector entry points
  (``pyproject.toml``), each connector's ``city_code``, the built-in config, the simulator's
  profiles and the default ``router.green_cities`` must agree with it;
* the complaint's enums and record types: ``schemas/*.avsc`` are the source; the routing rules'
  lists, the SDK's Consumer/Merchant/Escalation and the deliverer's conversion must agree;
* one time formatter for the dead-letter headers and the operator's tool.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from gateway import sdk
from gateway.cities import (
    CITIES,
    GREEN_CHANNEL,
    GREEN_CHANNEL_KEYS,
    default_cities_config,
    default_city_config,
)
from gateway.config import RouterSettings, default_yaml, load_settings
from gateway.connectors_registry import GROUP, load_connectors
from gateway.deadletters.headers import iso
from gateway.delivery.convert import to_escalation
from gateway.dev.bureau_profiles import profile_for
from gateway.errors import ConnectorError
from gateway.routing import rules

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"


def _schema(kind: str) -> dict[str, Any]:
    data = json.loads((SCHEMAS / f"{kind}.avsc").read_text("utf-8"))
    assert isinstance(data, dict)
    return data


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: f for f in record["fields"]}


def _named(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The named type ``name`` defined anywhere in ``schema``."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("name") == name and node.get("type") in ("record", "enum"):
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert len(found) == 1, f"{name}: {len(found)} definitions"
    return found[0]


# --- cities -----------------------------------------------------------------------------------


def test_the_table_has_ten_green_channel_cities_with_defaults() -> None:
    assert len(GREEN_CHANNEL) == 10
    assert len({c.key for c in CITIES}) == len({c.code for c in CITIES}) == len(CITIES)
    for city in CITIES:
        assert (city.connector is not None) == (city.defaults is not None) == city.green_channel
        if city.connector is not None:
            assert city.connector == city.key
    ports = [c.defaults.sim_port for c in GREEN_CHANNEL if c.defaults is not None]
    assert len(set(ports)) == 10, "two cities on one simulator port"


def test_connector_entry_points_are_the_tables_cities() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    registered = project["project"]["entry-points"][GROUP]
    assert set(registered) == {c.connector for c in GREEN_CHANNEL}
    loaded = load_connectors(set(registered))
    for city in GREEN_CHANNEL:
        assert city.connector is not None
        assert loaded[city.connector].city_code == city.code, city.key


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("wuhu", "340100", "the city table gives wuhu 340200"),  # Hefei's code
        ("lanzhou", "620100", "not in the city table"),
        ("shanghai-bureau", "310000", "shanghai, without a green channel"),
    ],
)
def test_loading_refuses_a_connector_the_city_table_does_not_know(
    name: str, code: str, message: str
) -> None:
    from importlib.metadata import EntryPoint

    from connectors import wuhu

    odd = dataclasses.replace(wuhu.connector, name=name, city_code=code)
    globals()["_ODD"] = odd
    ep = EntryPoint(name, f"{__name__}:_ODD", GROUP)
    with pytest.raises(ConnectorError, match=message):
        load_connectors(eps=[ep])


def test_the_built_in_config_is_the_tables() -> None:
    settings = load_settings(None)
    assert list(settings.cities) == list(GREEN_CHANNEL_KEYS)
    assert settings.router.green_cities == list(GREEN_CHANNEL_KEYS) == RouterSettings().green_cities
    assert default_yaml()["cities"] == default_cities_config()
    for city in GREEN_CHANNEL:
        assert city.defaults is not None
        configured = settings.cities[city.key]
        assert configured.endpoint.endswith(f":{city.defaults.sim_port}")
        assert configured.rate_per_s == city.defaults.rate_per_s
        assert (configured.tls.cert_file is not None) == city.defaults.mtls
        assert settings.connector_of(city.key) == city.connector
        assert profile_for(city.key).city == city.key  # the simulator knows every city


def test_cities_without_a_green_channel_have_no_config_block() -> None:
    shanghai = next(c for c in CITIES if c.key == "shanghai")
    with pytest.raises(ValueError, match="no green channel"):
        default_city_config(shanghai)


# --- schemas -----------------------------------------------------------------------------------


def test_routing_rule_lists_are_the_complaint_schemas_enums() -> None:
    complaint = _schema("complaint")
    assert tuple(_named(complaint, "ComplaintCategory")["symbols"]) == rules.CATEGORIES
    assert tuple(_named(complaint, "ProductCategory")["symbols"]) == rules.PRODUCTS
    assert tuple(_named(complaint, "Channel")["symbols"]) == rules.CHANNELS
    signals = _fields(_named(complaint, "SeveritySignals"))
    assert set(rules.SIGNALS) == {n for n, f in signals.items() if f["type"] == "boolean"}
    with pytest.raises(Exception, match="categories"):
        rules.Conditions(categories=["NOT_IN_THE_SCHEMA"])


@pytest.mark.parametrize("name", ["Consumer", "Merchant", "Channel"])
def test_shared_types_are_the_same_in_both_schemas(name: str) -> None:
    def strip_docs(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip_docs(v) for k, v in node.items() if k != "doc"}
        if isinstance(node, list):
            return [strip_docs(v) for v in node]
        return node

    in_complaint = strip_docs(_named(_schema("complaint"), name))
    in_escalation = strip_docs(_named(_schema("escalation"), name))
    assert in_complaint == in_escalation


def _python_type(avro: Any) -> Any:
    primitive = {"string": str, "long": int, "int": int, "boolean": bool}
    if isinstance(avro, list):
        assert avro[0] == "null" and len(avro) == 2, avro
        return _python_type(avro[1]) | None
    if isinstance(avro, dict):
        if avro.get("type") == "enum":
            return str
        if avro.get("logicalType") == "timestamp-millis":
            return int
        if avro.get("type") == "array":
            return tuple[_python_type(avro["items"]), ...]
        return primitive[avro["type"]]
    return primitive[avro]


def _same_type(declared: Any, expected: Any) -> bool:
    if typing.get_origin(declared) in (typing.Union, types.UnionType):
        if typing.get_origin(expected) not in (typing.Union, types.UnionType):
            return False
        return set(typing.get_args(declared)) == set(typing.get_args(expected))
    return bool(declared == expected)


@pytest.mark.parametrize(
    ("cls", "record"), [(sdk.Consumer, "Consumer"), (sdk.Merchant, "Merchant")]
)
def test_sdk_records_match_the_schema(cls: type, record: str) -> None:
    fields = _fields(_named(_schema("escalation"), record))
    hints = typing.get_type_hints(cls)
    declared = [f.name for f in dataclasses.fields(cls)]
    assert declared == list(fields), f"{cls.__name__} fields differ from {record}"
    for field in dataclasses.fields(cls):
        avro = fields[field.name]
        assert _same_type(hints[field.name], _python_type(avro["type"])), field.name
        optional = "default" in avro
        assert (field.default is not dataclasses.MISSING) == optional, field.name
        if optional:
            assert field.default == avro["default"], field.name


def test_sdk_escalation_carries_every_schema_field() -> None:
    fields = _fields(_schema("escalation"))
    hints = typing.get_type_hints(sdk.Escalation)
    # timestamps are epoch milliseconds, named ``*_ms`` in the SDK
    names = {n: n + "_ms" if fields[n]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
             else n for n in fields}  # fmt: skip
    assert sorted(names.values()) == sorted(f.name for f in dataclasses.fields(sdk.Escalation))
    for avro_name, sdk_name in names.items():
        if avro_name in ("consumer", "merchant"):
            continue
        assert _same_type(hints[sdk_name], _python_type(fields[avro_name]["type"])), avro_name


def _escalation_record() -> dict[str, Any]:
    """A decoded escalation with a distinct value in every field (as the codec returns it)."""
    return {
        "escalation_id": "e-1",
        "complaint_id": "c-1",
        "city": "wuhu",
        "city_code": "340200",
        "created_at": 1_700_000_000_001,
        "received_at": 1_700_000_000_002,
        "handling_deadline": 1_700_000_000_003,
        "channel": "APP",
        "rule_id": "r-1",
        "consumer": {
            "name": "n-1",
            "phone": "p-1",
            "id_number": "i-1",
            "address": "a-1",
            "email": "m-1",
        },
        "merchant": {"merchant_id": "mid-1", "name": "mn-1", "credit_code": "cc-1"},
        "order_id": "o-1",
        "amount_fen": 12_345,
        "product_category": "FOOD",
        "category": "SAFETY",
        "description": "d-1",
        "severity": ["injury"],
    }


def test_the_deliverers_conversion_carries_every_schema_field() -> None:
    record = _escalation_record()
    assert set(record) == set(_fields(_schema("escalation")))
    assert set(record["consumer"]) == set(_fields(_named(_schema("escalation"), "Consumer")))
    assert set(record["merchant"]) == set(_fields(_named(_schema("escalation"), "Merchant")))
    escalation = to_escalation(record)
    assert dataclasses.asdict(escalation.consumer) == record["consumer"]
    assert dataclasses.asdict(escalation.merchant) == record["merchant"]
    flat = dataclasses.asdict(escalation)
    for name, value in record.items():
        if name in ("consumer", "merchant"):
            continue
        got = flat.get(name, flat.get(f"{name}_ms"))
        assert got == (tuple(value) if isinstance(value, list) else value), name


# --- time -------------------------------------------------------------------------------------


def test_one_time_formatter_for_headers_and_the_operator_tool() -> None:
    ms = 1_767_319_445_678  # 2026-01-02T02:04:05.678Z
    assert iso(ms) == "2026-01-02T02:04:05.678+00:00"  # gc-dlq-* time headers (wire format)
    assert iso(ms, precision="s") == "2026-01-02T02:04:05Z"  # dlq list / show
    assert iso(None) == ""
