"""The fast record encoder (gateway.kafka.append.encode_into) against kafka-python's own
``MemoryRecordsBuilder.append``: the same records read back, the same batch-full rule."""

from __future__ import annotations

import random

import pytest
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from gateway.kafka import append
from gateway.kafka.append import Grouped, _append_each, encode_into
from tests.helpers import compiled_or_python

pytestmark = pytest.mark.unit


@pytest.fixture(params=["compiled", "python"], autouse=True)
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with the compiled encoder (gateway/kafka/_records.c) and with the
    Python one alone."""
    return compiled_or_python(
        request, monkeypatch, append, "_encode_records", "gateway/kafka/_records.c"
    )


def _group(rng: random.Random, n: int) -> list[Grouped]:
    return [
        (
            rng.randbytes(rng.choice([1, 16, 40, 200])),
            rng.randbytes(rng.choice([0, 63, 64, 380, 1024, 20_000])),
            [
                (rng.choice(["gc-rule", "traceparent", "名前", "", "h" * 70]), rng.randbytes(k))
                for k in rng.choices([0, 3, 100, 17_000], k=rng.choice([0, 1, 3]))
            ],
        )
        for _ in range(n)
    ]


def _read(builder: MemoryRecordsBuilder) -> list[tuple[object, ...]]:
    builder.close()
    out: list[tuple[object, ...]] = []
    for batch in MemoryRecords(bytes(builder.buffer())):
        assert batch.validate_crc()
        out.extend((r.offset, r.key, r.value, list(r.headers)) for r in batch)
    return out


@pytest.mark.parametrize("batch_size", [1 << 22, 16_384, 1_000])
def test_encode_into_writes_what_kafka_python_writes_and_stops_where_it_stops(
    batch_size: int,
) -> None:
    rng = random.Random(batch_size)
    for _ in range(20):
        group = _group(rng, rng.choice([1, 5, 60]))
        start = rng.choice([0, 0, 1]) if len(group) > 1 else 0
        theirs = MemoryRecordsBuilder(2, 0, batch_size)
        ours = MemoryRecordsBuilder(2, 0, batch_size)
        for b in (theirs, ours):  # a batch that already holds a record, sometimes
            if start:
                b.append(None, b"first", b"record", [])
        taken_theirs, largest_theirs = _append_each(theirs, group, start)
        taken_ours, largest_ours = encode_into(ours, group, start)
        assert (taken_ours, largest_ours) == (taken_theirs, largest_theirs)
        assert ours.next_offset() == theirs.next_offset()
        assert _read(ours) == _read(theirs)


def test_a_closed_batch_takes_nothing_and_legacy_batches_use_kafka_python() -> None:
    group = _group(random.Random(1), 3)
    closed = MemoryRecordsBuilder(2, 0, 1 << 20)
    closed.close()
    assert encode_into(closed, group, 0) == (0, 0)
    legacy = MemoryRecordsBuilder(1, 0, 1 << 20)
    group = [(k, v, []) for k, v, _ in group]  # v1 has no headers
    taken, _ = encode_into(legacy, group, 0)
    assert taken == 3
    legacy.close()
    assert [r.key for b in MemoryRecords(bytes(legacy.buffer())) for r in b] == [
        k for k, _, _ in group
    ]
