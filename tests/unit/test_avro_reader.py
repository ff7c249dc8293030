"""The compiled Avro reader must read exactly what fastavro reads, and refuse what is malformed."""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from gateway.avro.codec import Codec, current_schemas
from gateway.avro.reader import AvroReadError, Reader, accelerated, compile_reader
from gateway.config import CodecSettings
from gateway.dev.samples import SampleFactory
from gateway.errors import DecodeError
from gateway.routing.escalation import build_escalation

pytestmark = pytest.mark.unit

Compile = Callable[[dict[str, Any]], Reader | None]


@pytest.fixture(params=["compiled", "python"])
def compile_(request: pytest.FixtureRequest) -> Compile:
    """Each test below runs with both readers: the compiled one (gateway/avro/_readvm.c) and
    the generated Python one, its reference."""
    if request.param == "compiled":
        if not accelerated():
            pytest.skip("gateway/avro/_readvm.c is not built")
        return compile_reader
    return lambda schema: compile_reader(schema, pure=True)


EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "namespace": "test.v1",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "ratio", "type": "float"},
        {"name": "precise", "type": "double"},
        {"name": "text", "type": "string"},
        {"name": "blob", "type": "bytes"},
        {"name": "nothing", "type": "null"},
        {"name": "colour", "type": {"type": "enum", "name": "Colour", "symbols": ["R", "G", "B"]}},
        {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 4}},
        {
            "name": "inner",
            "type": {
                "type": "record",
                "name": "Inner",
                "fields": [
                    {"name": "label", "type": ["null", "string"]},
                    {"name": "again", "type": "Colour"},
                ],
            },
        },
        {"name": "choice", "type": ["null", "long", "string", "Inner", "Tag"]},
        {"name": "maybe_inner", "type": ["null", "Inner"]},
    ],
}


def random_everything(rnd: random.Random) -> dict[str, Any]:
    def text() -> str:
        return "".join(rnd.choice("aZ9 投诉消费者€\U0001f600") for _ in range(rnd.randrange(0, 90)))

    def inner() -> dict[str, Any]:
        return {"label": rnd.choice([None, text()]), "again": rnd.choice("RGB")}

    return {
        "flag": rnd.random() < 0.5,
        "small": rnd.randrange(-(2**31), 2**31),
        "big": rnd.choice(
            [0, -1, 63, 64, -65, 2**63 - 1, -(2**63), rnd.randrange(-(2**40), 2**40)]
        ),
        "ratio": rnd.choice([0.0, 1.5, -2.25, 3.0e10]),
        "precise": rnd.uniform(-1e12, 1e12),
        "text": text(),
        "blob": rnd.randbytes(rnd.randrange(0, 300)),
        "nothing": None,
        "colour": rnd.choice("RGB"),
        "tag": rnd.randbytes(4),
        "inner": inner(),
        "choice": rnd.choice(
            [None, rnd.randrange(-(2**50), 2**50), text(), inner(), rnd.randbytes(4)]
        ),
        "maybe_inner": rnd.choice([None, inner()]),
    }


def encode(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, schema, record)
    return buf.getvalue()


def test_every_supported_type_reads_as_fastavro_reads_it(compile_: Compile) -> None:
    schema = parse_schema(EVERYTHING)
    reader = compile_(schema)
    assert reader is not None
    rnd = random.Random(3)
    for _ in range(3000):
        data = encode(schema, random_everything(rnd))
        record, end = reader(b"xyz" + data, 3)  # starts where the codec's header ends
        assert end == len(data) + 3
        assert record == schemaless_reader(io.BytesIO(data), schema, None)


def test_complaints_read_as_fastavro_reads_them(compile_: Compile) -> None:
    info = current_schemas()["complaint"]
    reader = compile_(info.plain_read)
    assert reader is not None
    for sample in SampleFactory(seed=11).complaints(2000):
        data = encode(info.write, sample.record)
        record, end = reader(data, 0)
        assert end == len(data)
        assert record == schemaless_reader(io.BytesIO(data), info.plain_read, None)


ARRAYS = {
    "type": "record",
    "name": "Arrays",
    "namespace": "test.v1",
    "fields": [
        {"name": "words", "type": {"type": "array", "items": "string"}},
        {"name": "numbers", "type": {"type": "array", "items": "long"}},
        {"name": "maybe", "type": ["null", {"type": "array", "items": "double"}]},
        {
            "name": "pairs",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Pair",
                    "fields": [
                        {"name": "k", "type": "string"},
                        {"name": "v", "type": ["null", "int"]},
                        {"name": "c", "type": {"type": "enum", "name": "C", "symbols": ["X", "Y"]}},
                    ],
                },
            },
        },
        {"name": "nested", "type": {"type": "array", "items": {"type": "array", "items": "C"}}},
    ],
}


def random_arrays(rnd: random.Random) -> dict[str, Any]:
    def some(make: Any, most: int = 40) -> list[Any]:
        return [make() for _ in range(rnd.choice([0, 1, 2, rnd.randrange(0, most)]))]

    def word() -> str:
        return "".join(rnd.choice("aZ9 投诉€\U0001f600") for _ in range(rnd.randrange(0, 20)))

    return {
        "words": some(word),
        "numbers": some(lambda: rnd.randrange(-(2**62), 2**62), 200),
        "maybe": rnd.choice([None, some(lambda: rnd.uniform(-1e9, 1e9))]),
        "pairs": some(
            lambda: {
                "k": word(),
                "v": rnd.choice([None, rnd.randrange(-9, 9)]),
                "c": "XY"[rnd.randrange(2)],
            }
        ),
        "nested": some(lambda: some(lambda: rnd.choice("XY"), 5), 5),
    }


def blocked(items: list[bytes], sizes: list[int], with_byte_size: bool) -> bytes:
    """An array written in blocks of ``sizes`` items (negative counts with byte sizes when
    ``with_byte_size``), as other Avro writers may write it; zig-zag varints by hand."""

    def varint(n: int) -> bytes:
        n = (n << 1) ^ (n >> 63)
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    out, i = b"", 0
    for size in sizes:
        body = b"".join(items[i : i + size])
        i += size
        out += varint(-size) + varint(len(body)) + body if with_byte_size else varint(size) + body
    return out + b"\x00"


def test_arrays_read_as_fastavro_reads_them(compile_: Compile) -> None:
    schema = parse_schema(ARRAYS)
    reader = compile_(schema)
    assert reader is not None
    rnd = random.Random(5)
    for _ in range(3000):
        data = encode(schema, random_arrays(rnd))
        record, end = reader(b"ab" + data, 2)
        assert end == len(data) + 2
        assert record == schemaless_reader(io.BytesIO(data), schema, None)


@pytest.mark.parametrize("with_byte_size", [False, True])
def test_arrays_in_several_blocks_read_as_fastavro_reads_them(
    with_byte_size: bool, compile_: Compile
) -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [{"name": "x", "type": {"type": "array", "items": "string"}}],
        }
    )
    reader = compile_(schema)
    assert reader is not None
    words = [f"w{i}".encode() for i in range(9)]
    data = blocked([bytes([len(w) * 2]) + w for w in words], [2, 3, 1, 3], with_byte_size)
    record, end = reader(data, 0)
    assert end == len(data)
    assert record == schemaless_reader(io.BytesIO(data), schema, None)
    assert record == {"x": [w.decode() for w in words]}


def sample_escalations(count: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(complaint, escalation) pairs: major complaints of a green city, severities at random."""
    rnd = random.Random(8)
    signals = ["safety_hazard", "media_attention", "group_complaint", "投诉"]
    for sample in SampleFactory(seed=13, major_share=1.0, green_share=1.0).complaints(count):
        esc = build_escalation(
            sample.record, city="wuhu", rule_id="unit", now_ms=1_790_000_000_000, working_days=10
        )
        esc["severity"] = rnd.sample(signals, rnd.randrange(0, 5))
        yield sample.record, esc


def test_escalations_read_as_fastavro_reads_them() -> None:
    info = current_schemas()["escalation"]
    assert info.writer.compiled is not None
    for _, esc in sample_escalations(500):
        data = encode(info.write, esc)
        record, end = info.writer.compiled(data, 0)
        assert end == len(data)
        assert record == schemaless_reader(io.BytesIO(data), info.plain_read, None)


def test_an_array_count_over_the_bytes_left_is_refused_before_reading() -> None:
    info = current_schemas()["escalation"]
    codec = Codec(CodecSettings())
    esc = build_escalation(
        next(SampleFactory(seed=2).complaints(1)).record,
        city="wuhu",
        rule_id="unit",
        now_ms=1_790_000_000_000,
        working_days=10,
    )
    esc["severity"] = []
    body = encode(info.write, esc)
    assert body.endswith(b"\x00")  # the empty severity array ends the record
    huge = b"\xfe\xff\xff\xff\x0f"  # 2**31 - 1 items (zig-zag), no bytes for them
    assert _compiled_reason(codec, info.header, body[:-1] + huge) == "truncated"
    assert _compiled_reason(codec, info.header, body[:-1] + b"\x01\x02") == "truncated"
    reasons = {_compiled_reason(codec, info.header, body[:cut]) for cut in range(len(body))}
    assert reasons == {"truncated"}


@pytest.mark.parametrize(
    "field_type",
    [
        {"type": "map", "values": "string"},
        ["null", {"type": "map", "values": "long"}],
        {"type": "array", "items": "null"},
        {"type": "array", "items": {"type": "record", "name": "Empty", "fields": []}},
    ],
)
def test_maps_and_arrays_of_items_without_bytes_are_left_to_fastavro(
    field_type: Any, compile_: Compile
) -> None:
    schema = parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "x", "type": field_type}]}
    )
    assert compile_(schema) is None


def test_a_recursive_type_is_left_to_fastavro(compile_: Compile) -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "Node",
            "fields": [{"name": "next", "type": ["null", "Node"]}],
        }
    )
    assert compile_(schema) is None


def _compiled_reason(codec: Codec, header: bytes, body: bytes) -> str:
    with pytest.raises(DecodeError) as caught:
        codec.decode(header + body)
    return caught.value.reason


def test_every_truncation_of_a_complaint_is_refused_as_truncated() -> None:
    info = current_schemas()["complaint"]
    assert info.writer.compiled is not None
    codec = Codec(CodecSettings())
    body = encode(info.write, next(SampleFactory(seed=2).complaints(1)).record)
    reasons = {_compiled_reason(codec, info.header, body[:cut]) for cut in range(len(body))}
    assert reasons == {"truncated"}


def test_malformed_bodies_are_refused_with_the_codecs_reasons(compile_: Compile) -> None:
    schema = parse_schema(EVERYTHING)
    reader = compile_(schema)
    assert reader is not None
    good = encode(schema, random_everything(random.Random(1)))
    with pytest.raises(AvroReadError, match="bad_boolean"):
        reader(b"\x02" + good[1:], 0)
    # receipt: the codec maps the compiled reader's failures like fastavro's
    info = current_schemas()["receipt"]
    assert info.writer.compiled is not None
    codec = Codec(CodecSettings())
    assert _compiled_reason(codec, info.header, b"\x02\xff\xff") in {"truncated", "invalid_utf8"}
    assert _compiled_reason(codec, info.header, b"\x01") == "truncated"  # negative length
    assert _compiled_reason(codec, info.header, b"\xff" * 12) == "truncated"  # endless varint
    assert _compiled_reason(codec, info.header, b"\x04\xc3\x28") == "invalid_utf8"


def test_out_of_range_enum_and_union_indexes_are_refused(compile_: Compile) -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
                {"name": "u", "type": ["null", "long"]},
            ],
        }
    )
    reader = compile_(schema)
    assert reader is not None
    assert reader(b"\x02\x02\x06", 0) == ({"e": "B", "u": 3}, 3)
    for bad in (b"\x01\x00", b"\x04\x00", b"\x00\x01", b"\x00\x04"):  # -1 and 2, each place
        with pytest.raises(AvroReadError, match="bad_index"):
            reader(bad, 0)
