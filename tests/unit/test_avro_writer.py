"""The compiled Avro writer must write exactly what fastavro writes, and leave to fastavro every
record it does not take as is (so that, for any record, the codec's result is fastavro's)."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from gateway.avro.codec import Codec, current_schemas
from gateway.avro.writer import Slow, compile_writer
from gateway.config import CodecSettings
from gateway.errors import RecordError
from tests.unit.test_avro_reader import (
    ARRAYS,
    EVERYTHING,
    random_arrays,
    random_everything,
    sample_escalations,
)

pytestmark = pytest.mark.unit

# EVERYTHING without its union of several non-null branches (not compiled: fastavro's rules
# pick the branch)
SINGLE_BRANCH = {
    **EVERYTHING,
    "fields": [f for f in EVERYTHING["fields"] if f["name"] != "choice"]
    + [{"name": "tail", "type": [{"type": "array", "items": "Inner"}, "null"]}],
}


def fastavro_bytes(schema: dict[str, Any], record: Any) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, schema, record)
    return buf.getvalue()


def random_single_branch(rnd: random.Random) -> dict[str, Any]:
    record = random_everything(rnd)
    del record["choice"]
    inner = {"label": None, "again": "G"}
    record["tail"] = rnd.choice([None, [], [inner] * rnd.randrange(1, 4)])
    return record


@pytest.mark.parametrize(
    ("schema", "make"),
    [(SINGLE_BRANCH, random_single_branch), (ARRAYS, random_arrays)],
    ids=["every-supported-type", "arrays"],
)
def test_records_write_as_fastavro_writes_them(schema: dict[str, Any], make: Any) -> None:
    parsed = parse_schema(schema)
    writer = compile_writer(parsed)
    assert writer is not None
    rnd = random.Random(3)
    for _ in range(3000):
        record = make(rnd)
        assert writer(record) == fastavro_bytes(parsed, record)


def test_long_arrays_and_strings_take_multi_byte_counts() -> None:
    schema = parse_schema(ARRAYS)
    writer = compile_writer(schema)
    assert writer is not None
    record = random_arrays(random.Random(1))
    record["words"] = ["x" * 17_000, "投" * 6_000, ""] * 6_000  # lengths and a count past 16,383
    record["numbers"] = list(range(-70_000, 70_000, 7))
    assert writer(record) == fastavro_bytes(schema, record)


@pytest.mark.parametrize("kind", sorted(current_schemas()))
def test_every_gateway_schema_compiles(kind: str) -> None:
    assert current_schemas()[kind].encoder is not None  # type: ignore[index]


def test_escalations_and_complaints_encode_as_fastavro_encodes_them() -> None:
    codec = Codec(CodecSettings())
    schemas = current_schemas()
    for complaint, esc in sample_escalations(500):
        for kind, record in (("escalation", esc), ("complaint", complaint)):
            info = schemas[kind]  # type: ignore[index]
            assert codec.encode(kind, record) == info.header + fastavro_bytes(info.write, record)  # type: ignore[arg-type]


RECEIPT = {
    "escalation_id": "6f1c7e2a-1111-5222-8333-944455556666",
    "complaint_id": "CP2026120700000001",
    "city": "beijing",
    "outcome": "ACCEPTED",
    "case_number": "BJ2026120700012345",
    "reason": None,
    "attempts": 1,
    "first_attempt_at": 1_765_000_000_000,
    "completed_at": 1_765_000_000_050,
    "latency_ms": 50,
}


@pytest.mark.parametrize(
    "change",
    [
        {"attempts": True},  # a bool where an int goes
        {"attempts": 2**31},  # past an int's range
        {"latency_ms": 2**63},  # past a long's range
        {"latency_ms": 5.0},  # a float where a long goes
        {"outcome": "LOST"},  # not a symbol
        {"outcome": ["ACCEPTED"]},  # not even hashable
        {"case_number": 12345},  # neither branch of the union
        {"city": b"beijing"},  # bytes for a string
        {"city": "\udc80"},  # a lone surrogate: not UTF-8
        {"reason": "x" * 20_000},  # fine: a long string, multi-byte length
    ],
)
def test_what_the_compiled_writer_does_not_take_is_fastavros_to_write_or_refuse(
    change: dict[str, Any],
) -> None:
    codec = Codec(CodecSettings())
    info = current_schemas()["receipt"]
    record = RECEIPT | change
    try:
        expected: bytes | None = info.header + fastavro_bytes(info.write, record)
    except Exception:
        expected = None
    if expected is None:
        with pytest.raises(RecordError) as raised:
            codec.encode("receipt", record)
        assert raised.value.reason == "unencodable"
    else:
        assert codec.encode("receipt", record) == expected


def test_a_missing_field_is_fastavros_to_fill_or_refuse() -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "a", "type": "string"},
                {"name": "b", "type": ["null", "string"], "default": None},
                {"name": "c", "type": "long", "default": 7},
            ],
        }
    )
    writer = compile_writer(schema)
    assert writer is not None
    with pytest.raises(KeyError):
        writer({"a": "x"})
    with pytest.raises(Slow):
        writer({"a": "x", "b": 3, "c": 1})
    assert writer({"a": "x", "b": "y", "c": 1}) == fastavro_bytes(
        schema, {"a": "x", "b": "y", "c": 1}
    )


def one_field(field_type: Any) -> dict[str, Any]:
    return {"type": "record", "name": "R", "fields": [{"name": "x", "type": field_type}]}


@pytest.mark.parametrize(
    "schema",
    [
        one_field({"type": "map", "values": "string"}),
        one_field(["null", "string", "long"]),
        one_field(["string", {"type": "array", "items": "long"}]),
        {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]},
    ],
    ids=["map", "union-of-three", "union-of-two-non-null", "recursive"],
)
def test_maps_unions_of_several_branches_and_recursion_are_left_to_fastavro(
    schema: dict[str, Any],
) -> None:
    assert compile_writer(parse_schema(schema)) is None


def test_names_in_a_schema_never_become_code() -> None:
    evil = "x'] or __import__('os').system('false') or r['"
    schema = parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "ok", "type": "string"},
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
            ],
        }
    )
    schema["fields"][0]["name"] = evil  # as a parsed schema could hold it
    writer = compile_writer(schema)
    assert writer is not None
    assert writer({evil: "v", "e": "B"}) == b"\x02v\x02"


def random_datum(schema: Any, rnd: random.Random, names: dict[str, Any]) -> Any:
    """A random valid value of a parsed schema (records, enums, arrays, unions, primitives)."""
    if isinstance(schema, list):
        return random_datum(rnd.choice(schema), rnd, names)
    if isinstance(schema, str) and schema in names:
        schema = names[schema]
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(schema, dict) and "name" in schema:
        names.setdefault(schema["name"], schema)
    values: dict[str, Any] = {
        "null": None,
        "boolean": rnd.random() < 0.5,
        "int": rnd.randrange(-(2**31), 2**31),
        "long": rnd.choice([0, 1, -1, 2**63 - 1, rnd.randrange(-(2**62), 2**62)]),
        "float": rnd.choice([0.0, 0.5, -3.25]),
        "double": rnd.uniform(-1e9, 1e9),
        "string": "".join(rnd.choice("a9 投诉€\U0001f600") for _ in range(rnd.randrange(0, 30))),
        "bytes": rnd.randbytes(rnd.randrange(0, 20)),
    }
    if kind in values:
        return values[kind]
    if kind == "record":
        return {f["name"]: random_datum(f["type"], rnd, names) for f in schema["fields"]}
    if kind == "enum":
        return rnd.choice(schema["symbols"])
    if kind == "array":
        return [random_datum(schema["items"], rnd, names) for _ in range(rnd.randrange(0, 4))]
    raise AssertionError(f"not generated: {kind}")


@pytest.mark.parametrize("kind", sorted(current_schemas()))
def test_every_gateway_kind_encodes_as_fastavro_encodes_it(kind: str) -> None:
    """Random valid records of each of the gateway's schemas (cases, results and receipts
    included), through the codec: the bytes fastavro writes."""
    codec = Codec(CodecSettings())
    info = current_schemas()[kind]  # type: ignore[index]
    rnd = random.Random(kind)
    assert info.encoder is not None
    for _ in range(1000):
        record = random_datum(info.write, rnd, {})
        expected = fastavro_bytes(info.write, record)
        assert info.encoder(record) == expected  # the compiled path itself, not the fallback
        assert codec.encode(kind, record) == info.header + expected  # type: ignore[arg-type]
