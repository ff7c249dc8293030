"""The fast fetch unpacker (gateway.kafka.unpack) against kafka-python's own, record for record.

Batches are built with kafka-python's record builder (the bytes a broker returns), so each case
is decoded by both the original ``PartitionRecords`` and the fast subclass and compared field by
field, and by the fetch state each leaves behind (next fetch offset, records read, leader epoch).
"""

from __future__ import annotations

import logging
import random
import struct
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.consumer.fetcher import Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record.memory_records import MemoryRecords
from kafka.record.util import calc_crc32c, decode_varint
from kafka.structs import TopicPartition as KTP

from gateway.kafka import unpack
from gateway.kafka.records import Record, consumed
from tests.helpers import compiled_or_python

BASE = Fetcher.PartitionRecords
FAST = unpack._fast_class(BASE)
TP = KTP("complaints.v1", 7)
RawRecord = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]


@pytest.fixture(params=["compiled", "python"], autouse=True)
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with the compiled decoder (gateway/kafka/_records.c) taking what it
    takes and with the Python one alone."""
    return compiled_or_python(
        request, monkeypatch, unpack, "_decode_compiled", "gateway/kafka/_records.c"
    )


def batch(
    base_offset: int,
    records: list[RawRecord],
    *,
    compression: int = 0,
    producer_id: int = -1,
    log_append_time: int | None = None,
) -> bytes:
    buf = bytearray(
        unpack._sample_batch(
            base_offset,
            records,
            compression=compression,
            producer_id=producer_id,
            batch_size=1 << 28,
        )
    )
    if log_append_time is not None:  # what a topic with LogAppendTime returns: flag + max ts
        attrs = struct.unpack_from(">h", buf, 21)[0] | 0x08
        struct.pack_into(">h", buf, 21, attrs)
        struct.pack_into(">q", buf, 35, log_append_time)
        struct.pack_into(">I", buf, 17, calc_crc32c(memoryview(buf)[21:]))
    return bytes(buf)


def random_records(rng: random.Random, n: int) -> list[RawRecord]:
    out: list[RawRecord] = []
    ts = rng.randrange(0, 1 << 42)
    for _ in range(n):
        key = None if rng.random() < 0.1 else rng.randbytes(rng.choice([0, 1, 16, 70, 300]))
        value = None if rng.random() < 0.05 else rng.randbytes(rng.choice([0, 63, 64, 380, 20_000]))
        headers: list[tuple[str, bytes | None]] = [
            (
                rng.choice(["gc-source", "traceparent", "é-名", "", "x" * 200]),
                None if rng.random() < 0.1 else rng.randbytes(rng.choice([0, 5, 100, 9_000])),
            )
            for _ in range(rng.choice([0, 0, 1, 2, 5, 70]))
        ]
        out.append((ts + rng.randrange(-(1 << 40), 1 << 40), key, value, headers))
    return out


def unpacked(cls: type, data: bytes, fetch_offset: int = 0, **kwargs: Any) -> tuple[Any, ...]:
    part = cls(fetch_offset, TP, MemoryRecords(data), **kwargs)
    taken = part.take(5)
    if part:  # not drained by the first take
        taken += part.take(None)
    records = [r if type(r) is Record else consumed(r) for r in taken]
    normal = [r._replace(headers=tuple(r.headers)) for r in records]
    return normal, part.next_fetch_offset, part.records_read, part.leader_epoch


def test_random_batches_unpack_exactly_as_kafka_python_does() -> None:
    rng = random.Random(20261202)
    for case in range(40):
        n = rng.choice([1, 2, 50, 300])
        data = batch(rng.randrange(0, 1 << 40), random_records(rng, n), compression=case % 2)
        expected = unpacked(BASE, data)
        got = unpacked(FAST, data)
        assert got == expected, case
        assert len(got[0]) == n
        assert all(type(r) is Record for r in FAST(0, TP, MemoryRecords(data)).take(None))


def test_null_header_values_become_empty_bytes_and_keys_values_stay_null() -> None:
    data = batch(10, [(5, None, None, [("a", None), ("b", b"1")])])
    (record,), next_offset, read, _ = unpacked(FAST, data)
    assert record == Record(TP.topic, TP.partition, 10, None, None, (("a", b""), ("b", b"1")), 5)
    assert (next_offset, read) == (11, 1)


def test_log_append_time_stamps_every_record_with_the_batch_time() -> None:
    data = batch(0, [(1, b"k", b"v", []), (2, b"k", b"w", [])], log_append_time=99_000)
    records = unpacked(FAST, data)[0]
    assert [r.timestamp_ms for r in records] == [99_000, 99_000]
    assert unpacked(BASE, data) == unpacked(FAST, data)


def test_read_committed_skips_aborted_batches_and_markers_as_kafka_python_does() -> None:
    rng = random.Random(7)
    data = b"".join(
        [
            batch(0, random_records(rng, 3)),
            batch(3, random_records(rng, 4), producer_id=11),  # aborted
            batch(7, random_records(rng, 2), producer_id=12),  # committed
            batch(9, random_records(rng, 5), producer_id=11),  # aborted again, later
            batch(14, random_records(rng, 1)),
        ]
    )
    aborted = [unpack._Aborted(11, 3), unpack._Aborted(11, 9)]
    for fetch_offset in (0, 2, 8, 14):
        kwargs = {"isolation_level": IsolationLevel.READ_COMMITTED, "aborted_transactions": aborted}
        expected = unpacked(BASE, data, fetch_offset, **kwargs)
        got = unpacked(FAST, data, fetch_offset, **kwargs)
        assert got == expected, fetch_offset
        assert 11 not in {r.offset for r in got[0]}  # inside the second aborted batch
    uncommitted = unpacked(FAST, data)
    assert [r.offset for r in uncommitted[0]] == list(range(15))
    assert uncommitted == unpacked(BASE, data)


def outcome(cls: type, data: bytes) -> Any:
    try:
        return unpacked(cls, data, check_crcs=False)
    except CorruptRecordError:
        return CorruptRecordError


def test_every_corrupted_byte_gives_kafka_pythons_outcome_records_or_corrupt_record_error() -> None:
    """Each byte of the record area (after the 61-byte batch header) is damaged in turn, CRC
    check off to reach the decoder: the fast unpacker must raise CorruptRecordError exactly
    where kafka-python does and otherwise return the same records. The attributes byte is left
    out: kafka-python reads that Int8 as a varint, the fast path skips it as the format says."""
    data = batch(0, [(1, b"key", b"value" * 30, [("h", b"x"), ("hh", None)]), (2, b"k", b"v", [])])
    attributes = set()  # each record's attributes byte: right after its length varint
    pos = 61
    while pos < len(data):
        length, after = decode_varint(data, pos)
        attributes.add(after)
        pos = after + length
    corrupt = 0
    for pos in range(61, len(data)):
        if pos in attributes:
            continue
        for damage in (0x7F, 0xFF, 0x80):
            broken = bytearray(data)
            broken[pos] = broken[pos] ^ damage if damage != 0x80 else 0x80
            expected = outcome(BASE, bytes(broken))
            assert outcome(FAST, bytes(broken)) == expected, (pos, damage)
            corrupt += expected is CorruptRecordError
    assert corrupt > 20  # the structure was hit, not only payload bytes
    broken = bytearray(data)
    broken[100] ^= 1
    with pytest.raises(CorruptRecordError, match="crc"):
        FAST(0, TP, MemoryRecords(bytes(broken)), check_crcs=True).take(None)


def test_the_self_check_passes_on_the_installed_kafka_python() -> None:
    unpack.self_check(BASE, FAST)


def test_a_fast_class_that_disagrees_is_refused_and_the_consumer_keeps_kafka_pythons(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = unpack.decode_records

    def drops_headers(*args: Any) -> list[Record]:
        return [r._replace(headers=()) for r in original(*args)]

    monkeypatch.setattr(unpack, "decode_records", drops_headers)
    fetcher = SimpleNamespace(
        config={"key_deserializer": None, "value_deserializer": None}, PartitionRecords=BASE
    )
    with caplog.at_level(logging.WARNING, logger="gateway.kafka.unpack"):
        assert unpack.install(SimpleNamespace(_fetcher=fetcher)) is False
    assert fetcher.PartitionRecords is BASE
    assert "unpacked by kafka-python itself" in caplog.text


def test_install_gives_only_that_fetcher_the_fast_class_and_declines_deserializers() -> None:
    plain = SimpleNamespace(
        config={"key_deserializer": None, "value_deserializer": None}, PartitionRecords=BASE
    )
    assert unpack.install(SimpleNamespace(_fetcher=plain)) is True
    assert plain.PartitionRecords is not BASE and issubclass(plain.PartitionRecords, BASE)
    assert Fetcher.PartitionRecords is BASE  # the class itself is untouched
    with_deserializer = SimpleNamespace(
        config={"key_deserializer": None, "value_deserializer": bytes.decode},
        PartitionRecords=BASE,
    )
    assert unpack.install(SimpleNamespace(_fetcher=with_deserializer)) is False
    assert with_deserializer.PartitionRecords is BASE
    assert unpack.install(SimpleNamespace()) is False  # no fetcher at all: internals changed
