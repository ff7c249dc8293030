"""The compiled Avro reader (gateway/avro/_readvm.c) against the generated Python reader, its
reference: the same record and end offset for every valid input, the same failure (type and
reason) for every malformed one, bounded by the buffer, and no references left behind."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from fastavro import parse_schema

import gateway.avro as avro_package
from gateway.avro import reader as avro_reader
from gateway.avro.codec import current_schemas
from gateway.avro.reader import AvroReadError, Reader, accelerated, compile_reader
from gateway.dev.samples import SampleFactory
from tests.helpers import traced_growth
from tests.unit.test_avro_reader import (
    ARRAYS,
    EVERYTHING,
    encode,
    random_everything,
    sample_escalations,
)

pytestmark = pytest.mark.unit

try:
    from gateway.avro import _readvm
except ImportError:  # not built: every test here skips (and so fails in CI, which builds it)
    _readvm = None  # type: ignore[assignment]


# the op codes, for the parameters below (collected even where the extension is not built)
OP = SimpleNamespace(
    **{
        name: getattr(_readvm, name, i)
        for i, name in enumerate(
            [
                "NULL",
                "BOOLEAN",
                "LONG",
                "FLOAT",
                "DOUBLE",
                "STRING",
                "BYTES",
                "FIXED",
                "ENUM",
                "UNION",
                "RECORD",
                "ARRAY",
            ]
        )
    }
)


@pytest.fixture(autouse=True)
def _built() -> None:
    if _readvm is None:
        pytest.skip("gateway/avro/_readvm.c is not built")


def outcome(read: Reader, data: bytes, start: int = 0) -> Any:
    try:
        return ("ok", repr(read(data, start)))  # repr: a NaN equals a NaN
    except AvroReadError as exc:
        return ("AvroReadError", exc.reason)
    except UnicodeDecodeError as exc:
        return ("UnicodeDecodeError", exc.start, exc.end, exc.reason)
    except Exception as exc:  # compared: each reader must raise the same type
        return (type(exc).__name__,)


def both(schema: dict[str, Any]) -> tuple[Reader, Reader]:
    python = compile_reader(schema, pure=True)
    compiled = avro_reader._vm_reader(_readvm, schema)  # also where GC_PURE_AVRO=1 is set
    assert python is not None and compiled is not None
    assert isinstance(compiled, _readvm.Reader)
    return python, compiled


def mutations(rnd: random.Random, data: bytes, n: int) -> list[bytes]:
    """Cut, flipped, overwritten, inserted and long-varint variants of ``data``."""
    out = []
    for _ in range(n):
        b = bytearray(data)
        how = rnd.randrange(6)
        at = rnd.randrange(len(b)) if b else 0
        if how == 0:
            b = b[: rnd.randrange(len(b) + 1)]
        elif how == 1 and b:
            b[at] ^= 1 << rnd.randrange(8)
        elif how == 2 and b:
            b[at] = rnd.choice([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFE, 0xFF, rnd.randrange(256)])
        elif how == 3:
            b[at:at] = rnd.randbytes(rnd.randrange(1, 12))
        elif how == 4:
            # a varint of 9-11 bytes: the 64-bit edge, 70-bit values and over-long ones
            b[at:at] = b"\xff" * rnd.randrange(8, 11) + bytes([rnd.randrange(128)])
        else:
            b = bytearray(rnd.randbytes(rnd.randrange(0, 64)))
        out.append(bytes(b))
    return out


def test_the_compiled_reader_is_built_and_in_use() -> None:
    if os.environ.get("GC_PURE_AVRO") == "1":
        pytest.skip("GC_PURE_AVRO=1 asks for the Python reader")
    assert accelerated()
    for kind, info in current_schemas().items():
        assert isinstance(info.writer.compiled, _readvm.Reader), kind


def test_the_python_reader_can_be_forced() -> None:
    env = dict(os.environ, GC_PURE_AVRO="1")
    code = (
        "import gateway.avro.reader as r; from gateway.avro.codec import current_schemas as c; "
        "print(r.accelerated(), type(c()['complaint'].writer.compiled).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "function"]


@pytest.mark.parametrize("kind", ["complaint", "escalation"])
def test_valid_and_mutated_records_read_alike(kind: str) -> None:
    info = current_schemas()[kind]
    python, compiled = both(info.write)
    if kind == "complaint":
        records = [s.record for s in SampleFactory(seed=5).complaints(300)]
    else:
        records = [esc for _, esc in sample_escalations(300)]
    rnd = random.Random(13)
    seen: set[str] = set()
    for record in records:
        data = encode(info.write, record)
        assert compiled(data, 0) == python(data, 0)
        for bad in mutations(rnd, data, 40):
            expected = outcome(python, bad)
            assert outcome(compiled, bad) == expected, bad
            seen.add(expected[0])
    # the mutations reached every way of failing a complaint can fail, and some still read
    assert {"ok", "AvroReadError", "IndexError", "UnicodeDecodeError"} <= seen


@pytest.mark.parametrize("schema", [EVERYTHING, ARRAYS], ids=["everything", "arrays"])
def test_every_type_reads_alike_valid_and_mutated(schema: dict[str, Any]) -> None:
    parsed = parse_schema(schema)
    python, compiled = both(parsed)
    rnd = random.Random(17)
    if schema is EVERYTHING:
        records = [random_everything(rnd) for _ in range(300)]
    else:
        records = [
            {
                "words": ["a", "投诉"][: rnd.randrange(3)],
                "numbers": [rnd.randrange(-(2**62), 2**62) for _ in range(rnd.randrange(4))],
                "maybe": rnd.choice([None, [0.5, -1.0]]),
                "pairs": [{"k": "k", "v": rnd.choice([None, 3]), "c": "Y"}],
                "nested": [["X", "Y"], []],
            }
            for _ in range(300)
        ]
    for record in records:
        data = encode(parsed, record)
        assert compiled(b"hdr" + data, 3) == python(b"hdr" + data, 3)
        for bad in mutations(rnd, data, 30):
            assert outcome(compiled, bad) == outcome(python, bad), bad


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", 2**63 - 1),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", -(2**63)),
        (b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 2**69 - 1),  # beyond 64 bits, as Python
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", -(2**69)),
        (b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x02", 2**63),
    ],
)
def test_longs_at_and_beyond_64_bits_read_as_the_python_reader_reads_them(
    raw: bytes, value: int
) -> None:
    python, compiled = both(parse_schema("long"))  # type: ignore[arg-type]
    assert compiled(raw, 0) == python(raw, 0) == (value, 10)
    for schema in ("string", {"type": "enum", "name": "E", "symbols": ["A"]}, ["null", "long"]):
        python, compiled = both(parse_schema(schema))  # type: ignore[arg-type]
        assert outcome(compiled, raw) == outcome(python, raw)
    with pytest.raises(AvroReadError, match="varint_too_long"):
        compiled(b"\xff" * 10 + b"\x01", 0)


def test_a_reader_reads_only_bytes_from_a_start_inside_them() -> None:
    _, compiled = both(parse_schema("long"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compiled(bytearray(b"\x02"), 0)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        compiled(b"\x02", -1)
    with pytest.raises(IndexError):
        compiled(b"\x02", 5)
    assert compiled(b"\x00\x02", 1) == (1, 2)


@pytest.mark.parametrize(
    "program",
    [
        (),
        "x",
        (99,),
        (-1,),
        (OP.LONG, 3),
        (OP.FIXED,),
        (OP.FIXED, -1),
        (OP.ENUM, ("A", 1)),
        (OP.ENUM, ["A"]),
        (OP.UNION, [(OP.NULL,)]),
        (OP.RECORD, ("a",), ()),
        (OP.RECORD, ("a", "b"), ((OP.LONG,),)),
        (OP.ARRAY, ()),
    ],
)
def test_a_malformed_program_is_refused(program: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        _readvm.Reader(program, AvroReadError, ValueError)


def test_a_program_nested_too_deep_is_refused() -> None:
    program: Any = (_readvm.LONG,)
    for _ in range(100):
        program = (_readvm.ARRAY, program)
    with pytest.raises(ValueError, match="too deep"):
        _readvm.Reader(program, AvroReadError, ValueError)


def test_reads_and_failures_leave_nothing_behind() -> None:
    info = current_schemas()["complaint"]
    _, compiled = both(info.write)
    data = encode(info.write, next(SampleFactory(seed=3).complaints(1)).record)
    inputs = [data, data[:-3], data[:40] + b"\xff" * 11, data.replace(b"a", b"\xff", 1)]

    def run() -> None:
        for _ in range(2_000):
            for d in inputs:
                outcome(compiled, d)

    grown = traced_growth(run)
    assert grown < 64 * 1024, f"{grown} bytes more after 8,000 reads"


def test_a_disagreeing_build_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    class Wrong:
        """A 'compiled' module whose reader drops the last field."""

        def __getattr__(self, name: str) -> Any:
            return getattr(_readvm, name)

        @staticmethod
        def Reader(program: Any, read_error: Any, struct_error: Any) -> Reader:
            real = _readvm.Reader(program, read_error, struct_error)

            def read(b: bytes, p: int) -> Any:
                record, end = real(b, p)
                if isinstance(record, dict) and record:
                    record.pop(next(reversed(record)))
                return record, end

            return read

    monkeypatch.setitem(sys.modules, "gateway.avro._readvm", Wrong())
    monkeypatch.setattr(avro_package, "_readvm", Wrong())
    assert avro_reader._load_vm() is None


def test_a_schema_nested_deeper_than_the_compiled_reader_takes_is_read_in_python() -> None:
    schema: Any = {"type": "record", "name": "L0", "fields": [{"name": "v", "type": "long"}]}
    for depth in range(1, 80):
        schema = {"type": "record", "name": f"L{depth}", "fields": [{"name": "in", "type": schema}]}
    parsed = parse_schema(schema)
    reader = compile_reader(parsed)
    assert reader is not None and not isinstance(reader, _readvm.Reader)
    record, end = reader(b"\x06", 0)
    assert end == 1
    for _ in range(79):
        record = record["in"]
    assert record == {"v": 3}
