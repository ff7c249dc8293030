"""The compiled Avro reader must read exactly what fastavro reads, and refuse what is malformed."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from gateway.avro.codec import Codec, current_schemas
from gateway.avro.reader import AvroReadError, compile_reader
from gateway.config import CodecSettings
from gateway.dev.samples import SampleFactory
from gateway.errors import DecodeError

pytestmark = pytest.mark.unit

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


def test_every_supported_type_reads_as_fastavro_reads_it() -> None:
    schema = parse_schema(EVERYTHING)
    reader = compile_reader(schema)
    assert reader is not None
    rnd = random.Random(3)
    for _ in range(3000):
        data = encode(schema, random_everything(rnd))
        record, end = reader(b"xyz" + data, 3)  # starts where the codec's header ends
        assert end == len(data) + 3
        assert record == schemaless_reader(io.BytesIO(data), schema, None)


def test_complaints_read_as_fastavro_reads_them() -> None:
    info = current_schemas()["complaint"]
    reader = compile_reader(info.plain_read)
    assert reader is not None
    for sample in SampleFactory(seed=11).complaints(2000):
        data = encode(info.write, sample.record)
        record, end = reader(data, 0)
        assert end == len(data)
        assert record == schemaless_reader(io.BytesIO(data), info.plain_read, None)


@pytest.mark.parametrize(
    "field_type",
    [
        {"type": "array", "items": "long"},
        {"type": "map", "values": "string"},
        ["null", {"type": "array", "items": "string"}],
    ],
)
def test_repeated_types_are_left_to_fastavro(field_type: Any) -> None:
    schema = parse_schema(
        {"type": "record", "name": "R", "fields": [{"name": "x", "type": field_type}]}
    )
    assert compile_reader(schema) is None


def test_a_recursive_type_is_left_to_fastavro() -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "Node",
            "fields": [{"name": "next", "type": ["null", "Node"]}],
        }
    )
    assert compile_reader(schema) is None


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


def test_malformed_bodies_are_refused_with_the_codecs_reasons() -> None:
    schema = parse_schema(EVERYTHING)
    reader = compile_reader(schema)
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


def test_out_of_range_enum_and_union_indexes_are_refused() -> None:
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
    reader = compile_reader(schema)
    assert reader is not None
    assert reader(b"\x02\x02\x06", 0) == ({"e": "B", "u": 3}, 3)
    for bad in (b"\x01\x00", b"\x04\x00", b"\x00\x01", b"\x00\x04"):  # -1 and 2, each place
        with pytest.raises(AvroReadError, match="bad_index"):
            reader(bad, 0)
