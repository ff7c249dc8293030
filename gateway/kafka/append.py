"""Queue many keyed records with one call: what ``KafkaProducer.send()`` does, once per batch.

kafka-python's ``send()`` costs ~40 µs of CPU per record, and ~15 µs of it is work a batch of
records needs only once, or that the router's own types already guarantee: argument and header
type checks, serializer calls, a metadata lookup, the debug-log call (its ``str(self)`` is built
even when debug is off), the size estimate, and asking the transaction manager to add the
partition (a lock and two set lookups) for every record.

:class:`BatchAppender` appends straight to the producer's record accumulator. It keeps what
matters: the same partition as ``send()`` (the producer's :class:`KeyHashPartitioner`), the
partition added to the open transaction before its first record, the sender woken when a batch
filled or started (once per call, not per batch), and the record-size limit. Any record the fast
path is not sure about (no key, a topic whose partitions are not known yet, a record near the
size limit, a header that is not ``(str, bytes)``) goes through ``send()`` itself, so its errors
are exactly ``send()``'s.

Records of one partition are appended in one go, in order, under the partition's lock, straight
into its open batch: without the ``FutureRecordMetadata`` the accumulator builds for every
record (nobody waits on those: a failed batch fails the transaction, and ``commit`` raises),
~10 % of the router's CPU. A record that needs a new batch goes through the accumulator's own
``append``, which starts it.

This reaches into kafka-python internals (3.0.x): :func:`batch_appender` checks they are there
and returns ``None`` otherwise, and :meth:`gateway.kafka.clients.Producer.send_all` then sends one by one.
The check is a start-up self-test, not only a look at names: :func:`self_check` appends two
records to a throwaway accumulator of the producer's own class and checks what comes back
(``(future, batch_is_full, new_batch_created, abort_for_new_batch)``, the first append creating
a batch, the second joining it), then appends a partition's records the fast way to another and
reads the batch back. Upstream has changed that shape (a later ``append`` returns
three values); a mismatch logs a warning and falls back to ``send()``, never an unpacking error
inside a transaction.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition as _KTP

from gateway.compiled import optional
from gateway.kafka.partitioner import KeyHashPartitioner
from gateway.varint import SMALL as _SMALL
from gateway.varint import TABLE as _VARINT
from gateway.varint import encoded as _vi

log = logging.getLogger(__name__)

# A record's bytes beyond key, value and header bytes: the record's own varints and attributes
# (at most ~25 bytes plus 10 per header) and the record batch header (61 bytes) for a batch of
# one; records this close to the limit go through send(), which checks exactly.
_OVERHEAD = 128
_PER_HEADER = 12
_APPEND_PARAMS = ("tp", "timestamp_ms", "key", "value", "headers")

Outgoing = tuple[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]]]
Grouped = tuple[bytes, bytes, Sequence[tuple[str, bytes]]]
"""A record to produce: (topic, key, value, headers)."""
SendOne = Callable[[str, bytes | None, bytes | None, Sequence[tuple[str, bytes]]], Any]


class BatchAppender:
    """Appends records to one kafka-python producer; see the module docstring."""

    def __init__(self, producer: Any, partitioner: KeyHashPartitioner) -> None:
        self._producer = producer
        self._partitioner = partitioner
        self._accumulator = producer._accumulator
        self._append = producer._accumulator.append
        self._wakeup = producer._sender.wakeup
        manager = producer._transaction_manager
        self._transactional = manager is not None and bool(manager.is_transactional())
        self._add_partition = manager.maybe_add_partition_to_transaction if manager else None
        self._limit = int(producer.config["max_request_size"])
        self._tps: dict[str, list[_KTP]] = {}
        self._last_key: bytes | None = None
        self._last_count = 0
        self._last_index = 0

    def append_all(self, records: Iterable[Outgoing], send_one: SendOne) -> int:
        """Queue ``records`` (topic, key, value, headers), in order per partition; returns how
        many went through ``send_one`` instead of the fast path (``send_one(topic, value, key,
        headers)``)."""
        partitions_of = self._partitioner.cached_partitions
        limit = self._limit - _OVERHEAD
        groups: dict[_KTP, list[Grouped]] = {}
        slow = 0
        wake = False
        for topic, key, value, headers in records:
            partitions = partitions_of(topic)
            size = _size(key, value, headers)
            if partitions is None or key is None or size is None or size > limit:
                wake = self._append_groups(groups) or wake  # keep each partition's order
                groups.clear()
                send_one(topic, value, key, headers)
                slow += 1
                continue
            tp = self._tp(topic, partitions, key)
            group = groups.get(tp)
            if group is None:
                group = groups[tp] = []
            group.append((key, value, headers))  # type: ignore[arg-type]  # bytes: _size said so
        wake = self._append_groups(groups) or wake
        # Once, at the end: send() wakes the sender thread for every new or full batch (~90 per
        # 8,000-record transaction), and each wake-up runs its Python against ours for the GIL
        # (measured: ~10 % less router throughput). A commit sends everything anyway.
        if wake:
            self._wakeup()
        return slow

    def _append_groups(self, groups: dict[_KTP, list[Grouped]]) -> bool:
        wake = False
        for tp, group in groups.items():
            if self._transactional and self._add_partition is not None:
                self._add_partition(tp)  # before the partition's first record
            wake = self._append_group(tp, group) or wake
        return wake

    def _append_group(self, tp: _KTP, group: list[Grouped]) -> bool:
        """Append one partition's records in order: into its open batch under the partition's
        lock, as the accumulator does, but without a per-record future (nobody waits on one:
        the batch's own result fails the transaction); a record that needs a new batch goes
        through the accumulator's ``append``. Returns whether the sender should be woken."""
        accumulator = self._accumulator
        lock = accumulator._tp_lock(tp)
        dq = accumulator._batches[tp]
        wake = False
        i = 0
        n = len(group)
        accumulator._appends_in_progress.increment()  # as append(): abort/close wait for it
        try:
            while i < n:
                with lock:
                    if dq:
                        batch = dq[-1]
                        i, largest = encode_into(batch.records, group, i)
                        if largest:
                            batch.max_record_size = max(batch.max_record_size, largest)
                            batch.last_append = time.monotonic()
                            wake = wake or len(dq) > 1 or batch.records.is_full()
                if i < n:  # no open batch: the accumulator starts one with this record
                    key, value, headers = group[i]
                    _, full, created, _ = self._append(tp, None, key, value, headers)
                    wake = wake or full or created
                    i += 1
        finally:
            accumulator._appends_in_progress.decrement()
        return wake

    def _tp(self, topic: str, partitions: list[int], key: bytes) -> _KTP:
        tps = self._tps.get(topic)
        if tps is None or len(tps) != len(partitions):
            tps = self._tps[topic] = [_KTP(topic, p) for p in partitions]
        # a routed complaint's outputs (department, escalation) share its key and come one
        # after the other: hash each key once
        if key is not self._last_key or len(tps) != self._last_count:
            self._last_key = key
            self._last_count = len(tps)
            self._last_index = self._partitioner.index(key, len(tps))
        return tps[self._last_index]


def _append_each(records: Any, group: Sequence[Grouped], i: int) -> tuple[int, int]:
    """``MemoryRecordsBuilder.append`` for ``group[i:]`` until the batch is full or closed;
    returns (next index, largest record size)."""
    append = records.append
    largest = 0
    for key, value, headers in group[i:]:
        metadata = append(None, key, value, headers)
        if metadata is None:  # full or closed (drained by the sender)
            break
        largest = max(largest, metadata.size)
        i += 1
    return i, largest


_names: dict[str, bytes] = {}
_NAMES_CACHED = 256


_records = optional("gateway.kafka._records", "GC_PURE_RECORDS")
_encode_records: Callable[..., tuple[int, int] | None] | None = (
    _records.encode_records if _records is not None else None
)
"""The compiled encoding loop (``gateway/kafka/_records.c``) where it is built, unless
``GC_PURE_RECORDS=1``; :func:`self_check` reads a batch it wrote back with kafka-python."""


def encode_into(records: Any, group: Sequence[Grouped], i: int) -> tuple[int, int]:
    """What ``MemoryRecordsBuilder.append(None, key, value, headers)`` does for each record of
    ``group[i:]`` (message format v2, until the batch is full or closed), with the varints
    from a table and one buffer extension per record (or all of them at once, compiled, where
    that is built and the records are the plain kind it takes). Returns (next index, largest
    record size). :func:`self_check` reads a batch written this way back with kafka-python."""
    if records._closed:
        return i, 0
    if records._magic != 2:
        return _append_each(records, group, i)
    builder = records._builder
    buf = builder._buffer
    batch_size = builder._batch_size
    offset = records._next_offset
    ts = int(time.time() * 1000)
    first = builder._first_timestamp
    start = i
    compiled = (
        _encode_records(
            buf,
            batch_size,
            builder._num_records,
            group,
            i,
            offset,
            0 if first is None else ts - first,
        )
        if _encode_records is not None
        else None
    )
    if compiled is not None:
        appended, largest = compiled
        if appended:
            builder._num_records += appended
            offset += appended
            builder._last_offset = offset - 1
            i += appended
    else:
        i, largest, offset = _encode_each(builder, group, i, offset, ts, first)
    if i > start:
        records._next_offset = offset
        if first is None:
            builder._first_timestamp = builder._max_timestamp = ts
        elif builder._max_timestamp < ts:
            builder._max_timestamp = ts
    return i, largest


def _encode_each(
    builder: Any, group: Sequence[Grouped], i: int, offset: int, ts: int, first: int | None
) -> tuple[int, int, int]:
    """:func:`encode_into`'s records one by one: (next index, largest record size, next
    offset)."""
    buf = builder._buffer
    batch_size = builder._batch_size
    delta = _vi(0 if first is None else ts - first)
    table = _VARINT
    names = _names
    largest = 0
    for key, value, headers in group[i:]:
        n = len(key)
        parts = [b"\x00", delta, _vi(offset), table[n] if n < _SMALL else _vi(n), key]
        n = len(value)
        parts += (table[n] if n < _SMALL else _vi(n), value)
        parts.append(table[len(headers)] if len(headers) < _SMALL else _vi(len(headers)))
        for name, data in headers:
            raw = names.get(name)
            if raw is None:
                raw = name.encode("utf-8")
                if len(names) < _NAMES_CACHED:  # consumed headers: any name may come
                    names[name] = raw
            parts += (_vi(len(raw)), raw, _vi(len(data)), data)
        body = b"".join(parts)
        size = len(body)
        length = table[size] if size < _SMALL else _vi(size)
        required = size + len(length)
        if required + len(buf) > batch_size and builder._num_records:
            break  # full: kafka-python's own rule (a batch's first record always fits)
        buf += length
        buf += body
        builder._num_records += 1
        builder._last_offset = offset
        offset += 1
        largest = max(largest, required)
        i += 1
    return i, largest, offset


def _size(key: bytes | None, value: Any, headers: Sequence[Any]) -> int | None:
    """Key, value and header bytes plus per-header overhead; ``None`` if a type is not the
    (bytes, bytes, [(str, bytes)]) the fast path takes."""
    if type(value) is not bytes or (key is not None and type(key) is not bytes):
        return None
    size = len(value) + (len(key) if key is not None else 0)
    for header in headers:
        if type(header) is not tuple or len(header) != 2:
            return None
        name, data = header
        if type(name) is not str or type(data) is not bytes:
            return None
        size += len(name) * 4 + len(data) + _PER_HEADER  # a str's UTF-8 is at most 4x its length
    return size


def self_check(producer: Any) -> None:
    """Exercise the internals :class:`BatchAppender` uses; raise ``TypeError`` (saying what
    differs) when they are not what it was written against. No record reaches the producer."""
    accumulator = producer._accumulator
    params = tuple(inspect.signature(accumulator.append).parameters)
    if params[:5] != _APPEND_PARAMS:
        raise TypeError(f"RecordAccumulator.append{params}")
    for needed in ("_sender", "_transaction_manager"):
        getattr(producer, needed)
    if not callable(producer._sender.wakeup):
        raise TypeError("sender.wakeup is not callable")
    manager = producer._transaction_manager
    if manager is not None and not callable(manager.maybe_add_partition_to_transaction):
        raise TypeError("transaction_manager.maybe_add_partition_to_transaction is not callable")
    config = {k: v for k, v in accumulator.config.items() if k != "transaction_manager"}
    probe = type(accumulator)(**config)
    tp = _KTP("gc-self-check", 0)
    first = probe.append(tp, None, b"k", b"v", [("h", b"x")])
    second = probe.append(tp, None, b"k", b"v", [])
    for result in (first, second):
        if not isinstance(result, tuple) or len(result) != 4:
            shape = len(result) if isinstance(result, tuple) else type(result).__name__
            raise TypeError(f"RecordAccumulator.append returned {shape} values, expected 4")
        if not all(isinstance(flag, bool) for flag in result[1:]):
            raise TypeError("RecordAccumulator.append flags are not booleans")
    if not first[2] or second[2]:
        raise TypeError("RecordAccumulator.append reports new batches differently")
    _check_group_append(type(accumulator)(**(config | {"batch_size": 1 << 20})))


def _check_group_append(probe: Any) -> None:
    """Append a partition's records the fast way to a throwaway accumulator and read the batch
    back: the records in order, in one batch, with the batch's bookkeeping updated."""
    appender = BatchAppender.__new__(BatchAppender)
    appender._accumulator = probe
    appender._append = probe.append
    tp = _KTP("gc-self-check", 1)
    big = bytes(range(256)) * 80  # lengths beyond the varint table
    group: list[Grouped] = [
        (
            b"k%d" % i,
            b"v%d" % i * (1 + i * 40),
            [("h", b"%d" % i), ("\u540d", big)] if i % 2 else [],
        )
        for i in range(6)
    ]
    before = int(time.time() * 1000)
    appender._append_group(tp, group)
    after = int(time.time() * 1000)
    batches = list(probe._batches[tp])
    if len(batches) != 1 or batches[0].record_count != len(group):
        raise TypeError("records appended to the open batch are not counted in it")
    batch = batches[0]
    if batch.max_record_size <= 0 or not isinstance(batch.last_append, float):
        raise TypeError("ProducerBatch bookkeeping fields differ")
    batch.records.close()
    read = [
        (r.offset, r.key, r.value, list(r.headers), before <= r.timestamp <= after)
        for b in MemoryRecords(bytes(batch.records.buffer()))
        for r in b
    ]
    expected = [(i, k, v, list(h), True) for i, (k, v, h) in enumerate(group)]
    if read != expected:
        raise TypeError("records appended to the open batch read back differently")
    for b in MemoryRecords(bytes(batch.records.buffer())):
        if not b.validate_crc() or b.records_count != len(group):
            raise TypeError("the batch written by the fast path fails its CRC or count")


def batch_appender(producer: Any) -> BatchAppender | None:
    """A :class:`BatchAppender` for a kafka-python ``KafkaProducer``, or ``None`` if its internals
    are not the ones this was written against (then send one by one)."""
    try:
        partitioner = producer.config["partitioner"]
        if not isinstance(partitioner, KeyHashPartitioner):
            return None  # another partitioner was configured: only send() knows its placement
        self_check(producer)
        return BatchAppender(producer, partitioner)
    except Exception as exc:  # any surprise in the self-check means: do not use the fast path
        log.warning(
            "kafka-python internals changed (%s: %s); records are sent one by one with send()",
            type(exc).__name__,
            exc,
        )
        return None


__all__ = ["BatchAppender", "Outgoing", "batch_appender", "self_check"]
