"""The compiled record loops (gateway/kafka/_records.c) against the Python ones they stand in
for: the same records decoded and the same bytes encoded wherever they take the input, and
``None`` (nothing decided, nothing written) wherever the Python code would fail or the input is
of another kind."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

import pytest
from kafka.record.default_records import DefaultRecordBatch

from gateway.kafka import append, unpack
from gateway.kafka.records import Record
from tests.helpers import traced_growth
from tests.unit.test_unpack import batch, random_records

pytestmark = pytest.mark.unit

try:
    from gateway.kafka import _records
except ImportError:  # not built: every test here skips (and so fails in CI, which builds it)
    _records = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _built() -> None:
    if _records is None:
        pytest.skip("gateway/kafka/_records.c is not built")


Args = tuple[bytes, int, int, str, int, int, int, int | None]


def body_args(data: bytes, log_append_time: int | None = None) -> Args:
    b = DefaultRecordBatch(data)
    header = b._header_data
    return (bytes(b._buffer), b._pos, header[12], "t", 3, header[0], header[7], log_append_time)


def python_outcome(args: Args) -> Any:
    try:
        return unpack.decode_batch(*args)
    except (ValueError, IndexError):
        return "error"


def test_the_compiled_loops_are_built_and_in_use() -> None:
    if os.environ.get("GC_PURE_RECORDS") == "1":
        pytest.skip("GC_PURE_RECORDS=1 asks for the Python loops")
    assert unpack._decode_compiled is _records.decode_batch
    assert append._encode_records is _records.encode_records


def test_the_python_loops_can_be_forced() -> None:
    env = dict(os.environ, GC_PURE_RECORDS="1")
    code = (
        "from gateway.kafka import append, unpack; "
        "print(unpack._decode_compiled, append._encode_records)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["None", "None"]


def test_well_formed_batches_decode_exactly_as_the_python_loop_decodes_them() -> None:
    rng = random.Random(5)
    for n in range(60):
        args = body_args(batch(rng.randrange(1 << 40), random_records(rng, n % 9)))
        for log_append in (None, rng.randrange(1 << 41)):
            args = (*args[:7], log_append)
            compiled = _records.decode_batch(*args, Record)
            assert compiled is not None
            expected = unpack.decode_batch(*args)
            assert compiled == expected
            assert [type(r) for r in compiled] == [Record] * len(expected)
            assert [type(r.headers) for r in compiled] == [type(r.headers) for r in expected]


def test_every_corruption_is_left_to_the_python_loop_or_decoded_alike() -> None:
    rng = random.Random(9)
    outcomes = set()
    for _ in range(40):
        args = body_args(batch(rng.randrange(1 << 40), random_records(rng, rng.randrange(1, 4))))
        body = bytearray(args[0])
        for _ in range(60):
            bad = bytearray(body)
            how = rng.randrange(4)
            at = rng.randrange(args[1], len(bad))
            if how == 0:
                bad[at] = rng.randrange(256)
            elif how == 1:
                del bad[at:]
            elif how == 2:
                bad[at:at] = b"\xff" * rng.randrange(1, 12)
            else:
                bad[at] ^= 0x80
            bad_args = (bytes(bad), *args[1:])
            compiled = _records.decode_batch(*bad_args, Record)
            expected = python_outcome(bad_args)
            if compiled is None:
                outcomes.add("left")
            else:
                assert compiled == expected, bytes(bad)
                outcomes.add("decoded")
            if expected == "error":
                assert compiled is None
    assert outcomes == {"left", "decoded"}


@pytest.mark.parametrize(
    "args",
    [
        (b"\x00", 0, 1, "t", 0, 0, 0, None),  # one byte: cut off
        (b"", 0, 0, "t", 0, 0, 0, None),  # nothing, as asked
        (b"\x02", 5, 1, "t", 0, 0, 0, None),  # a start past the end
        (b"\x02", -1, 1, "t", 0, 0, 0, None),
        (b"\x02", 0, 10**6, "t", 0, 0, 0, None),  # more records than bytes
        (b"\x02", 0, 1, "t", 0, 2**70, 0, None),  # an offset beyond 64 bits
        (bytearray(b"\x02"), 0, 1, "t", 0, 0, 0, None),  # not bytes
    ],
)
def test_arguments_it_does_not_take_are_left_to_python(args: Any) -> None:
    out = _records.decode_batch(*args, Record)
    assert out is None or (out == [] and args[2] == 0)


def python_encode(
    group: list[Any], i: int, batch_size: int, start: bytes, num: int, offset: int, delta: int
) -> tuple[bytes, int, int]:
    builder = type("B", (), {})()
    builder._buffer = bytearray(start)
    builder._batch_size = batch_size
    builder._num_records = num
    builder._last_offset = 0
    ts, first = (1000 + delta, 1000)
    j, largest, _ = append._encode_each(builder, group, i, offset, ts, first)
    return bytes(builder._buffer), j - i, largest


def random_group(rng: random.Random, n: int) -> list[Any]:
    return [
        (
            rng.randbytes(rng.choice([0, 1, 36, 200])),
            rng.randbytes(rng.choice([0, 63, 64, 1000, 20_000])),
            rng.choice(
                [
                    [],
                    (),
                    [("gc-rule", b"r1")],
                    [("名前", rng.randbytes(9000)), ("", b"")],
                    tuple((f"h{k}", b"v") for k in range(70)),
                ]
            ),
        )
        for _ in range(n)
    ]


def test_encoding_writes_the_python_loops_bytes_and_stops_where_it_stops() -> None:
    rng = random.Random(3)
    for _ in range(300):
        group = random_group(rng, rng.randrange(0, 12))
        i = rng.randrange(len(group) + 1)
        batch_size = rng.choice([0, 100, 2_000, 30_000, 1 << 22])
        start = rng.randbytes(rng.choice([0, 61, 5_000]))
        num = 0 if not start else rng.randrange(0, 5)
        offset = rng.choice([0, 5, 127, 128, 20_000])
        delta = rng.choice([0, 1, -3, 64, 1 << 35])
        buf = bytearray(start)
        done = _records.encode_records(buf, batch_size, num, group, i, offset, delta)
        assert done is not None
        expected = python_encode(group, i, batch_size, start, num, offset, delta)
        assert (bytes(buf), *done) == expected


@pytest.mark.parametrize(
    "group",
    [
        [(b"k", "text", [])],  # a str value
        [(None, b"v", [])],  # no key
        [(b"k", b"v", [("h", None)])],  # a null header value
        [(b"k", b"v", [("\ud800", b"x")])],  # a header name that is not UTF-8
        [(b"k", b"v", [("h", b"x", b"y")])],
        [(b"k", bytearray(b"v"), [])],
        [(b"k", b"v", {"h": b"x"})],  # headers not a list or tuple
        [[b"k", b"v", []]],  # a record that is not a tuple
        [(b"k", b"v", []), (b"k", 1, [])],  # the second one: nothing written for the first
    ],
)
def test_records_of_another_kind_are_left_to_python_with_nothing_written(group: Any) -> None:
    buf = bytearray(b"head")
    assert _records.encode_records(buf, 1 << 20, 0, group, 0, 0, 0) is None
    assert buf == b"head"


def test_a_buffer_with_a_view_open_is_left_to_python() -> None:
    buf = bytearray(b"head")
    view = memoryview(buf)
    try:
        assert _records.encode_records(buf, 1 << 20, 0, [(b"k", b"v", [])], 0, 0, 0) is None
    finally:
        view.release()
    assert buf == b"head"


def test_decoding_and_encoding_leave_nothing_behind() -> None:
    rng = random.Random(1)
    args = body_args(batch(7, random_records(rng, 5)))
    broken = (args[0][:-3], *args[1:])
    group = random_group(rng, 6)

    def run() -> None:
        for _ in range(3_000):
            _records.decode_batch(*args, Record)
            _records.decode_batch(*broken, Record)
            _records.encode_records(bytearray(), 1 << 22, 0, group, 0, 0, 0)
            _records.encode_records(bytearray(), 1 << 22, 0, [(b"k", 1, [])], 0, 0, 0)

    grown = traced_growth(run)
    assert grown < 64 * 1024, f"{grown} bytes more after 12,000 calls"
