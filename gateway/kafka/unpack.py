"""Turn fetched record batches into our :class:`Record` tuples in one pass.

kafka-python's fetcher unpacks each record through four layers: ``DefaultRecordBatch._read_msg``
(a function call per varint, seven per record), a ``DefaultRecord``, a ``ConsumerRecord`` of
thirteen fields (with two deserializer calls and a header-size sum), and then our own
:class:`Record`. Measured on 500-record batches of ~380-byte complaints with two headers:
~23 µs of CPU per record, more than half of what a kafka-python consume→produce pipe costs.

:func:`install` gives one ``KafkaConsumer``'s fetcher a ``PartitionRecords`` subclass whose
``_unpack_records`` decodes a message-format-v2 batch straight into :class:`Record` tuples
(varints inline, one ``bytes`` copy of the batch, headers with null values as ``b""``). It
keeps everything else the original does, in the same order: the batch CRC check, the
read_committed filter (aborted transactions, abort markers), control batches skipped, the
leader epoch, ``next_fetch_offset`` after each record returned, the fetch metrics' counts, and
:class:`kafka.errors.CorruptRecordError` for a malformed record. Legacy (v0/v1) batches and
consumers with deserializers go through the original code.

This reaches into kafka-python internals (3.0.x): :func:`install` checks they are there and
runs a self-test, decoding the same batches (plain, with headers and a null header value,
a compressed one, a transactional one with an abort marker) with both the original and the
fast unpacker and comparing every field. Anything different or missing logs a warning and
leaves the consumer on the original path; :meth:`gateway.kafka.clients.Consumer.poll` then
converts records one by one.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

from kafka.consumer.fetcher import IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition as _KTP

from gateway.compiled import optional
from gateway.kafka.records import Record, consumed, consumed_record

log = logging.getLogger(__name__)

_LOG_APPEND_TIME = DefaultRecordBatch.LOG_APPEND_TIME
_READ_COMMITTED = IsolationLevel.READ_COMMITTED


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint (Kafka's varint and varlong) at ``pos``: (value, next position)."""
    shift = 0
    value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def decode_batch(  # noqa: PLR0912, PLR0915  (one flat loop: the varints inlined, ~4x faster)
    buf: bytes,
    pos: int,
    count: int,
    topic: str,
    partition: int,
    base_offset: int,
    first_timestamp: int,
    log_append_time: int | None,
) -> list[Record]:
    """The ``count`` records of an uncompressed v2 batch body starting at ``pos``.

    Raises ``ValueError``/``IndexError`` on malformed data (the caller words it as Kafka's
    CorruptRecordError). ``log_append_time``: the batch's max timestamp when the topic stamps
    records at append time (every record then carries it), else ``None``.
    """
    out: list[Record] = []
    append = out.append
    new = tuple.__new__
    varint = _varint
    end = len(buf)
    for _ in range(count):
        b = buf[pos]  # Length => Varint
        if b < 0x80:
            length = (b >> 1) ^ -(b & 1)
            pos += 1
        elif buf[pos + 1] < 0x80:
            u = (b & 0x7F) | (buf[pos + 1] << 7)
            length = (u >> 1) ^ -(u & 1)
            pos += 2
        else:
            length, pos = varint(buf, pos)
        start = pos
        pos += 1  # Attributes => Int8 (unused)
        b = buf[pos]  # TimestampDelta => Varlong
        if b < 0x80:
            ts_delta = (b >> 1) ^ -(b & 1)
            pos += 1
        elif buf[pos + 1] < 0x80:
            u = (b & 0x7F) | (buf[pos + 1] << 7)
            ts_delta = (u >> 1) ^ -(u & 1)
            pos += 2
        else:
            ts_delta, pos = varint(buf, pos)
        b = buf[pos]  # OffsetDelta => Varint
        if b < 0x80:
            offset_delta = (b >> 1) ^ -(b & 1)
            pos += 1
        elif buf[pos + 1] < 0x80:
            u = (b & 0x7F) | (buf[pos + 1] << 7)
            offset_delta = (u >> 1) ^ -(u & 1)
            pos += 2
        else:
            offset_delta, pos = varint(buf, pos)
        b = buf[pos]  # Key => Bytes
        if b < 0x80:
            n = (b >> 1) ^ -(b & 1)
            pos += 1
        elif buf[pos + 1] < 0x80:
            u = (b & 0x7F) | (buf[pos + 1] << 7)
            n = (u >> 1) ^ -(u & 1)
            pos += 2
        else:
            n, pos = varint(buf, pos)
        if n >= 0:
            key: bytes | None = buf[pos : pos + n]
            pos += n
        else:
            key = None
        b = buf[pos]  # Value => Bytes
        if b < 0x80:
            n = (b >> 1) ^ -(b & 1)
            pos += 1
        elif buf[pos + 1] < 0x80:
            u = (b & 0x7F) | (buf[pos + 1] << 7)
            n = (u >> 1) ^ -(u & 1)
            pos += 2
        else:
            n, pos = varint(buf, pos)
        if n >= 0:
            value: bytes | None = buf[pos : pos + n]
            pos += n
        else:
            value = None
        b = buf[pos]  # Headers => [HeaderKey HeaderValue]
        if b < 0x80:
            n_headers = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            n_headers, pos = varint(buf, pos)
        if n_headers < 0:
            raise ValueError(f"invalid number of record headers {n_headers}")
        headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]] = ()
        if n_headers:
            headers = []
            for _h in range(n_headers):
                b = buf[pos]
                if b < 0x80:
                    n = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    n, pos = varint(buf, pos)
                if n < 0:
                    raise ValueError(f"invalid negative header key size {n}")
                name = buf[pos : pos + n].decode("utf-8")
                pos += n
                b = buf[pos]
                if b < 0x80:
                    n = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    n, pos = varint(buf, pos)
                if n >= 0:
                    headers.append((name, buf[pos : pos + n]))
                    pos += n
                else:  # a null header value: b"" (see gateway.kafka.records.consumed_headers)
                    headers.append((name, b""))
        if pos - start != length or pos > end:
            raise ValueError(
                f"invalid record size: expected to read {length} bytes, read {pos - start}"
            )
        append(
            new(  # tuple.__new__: a C call, where Record(...) runs a Python-level __new__
                Record,
                (
                    topic,
                    partition,
                    base_offset + offset_delta,
                    key,
                    value,
                    headers,
                    first_timestamp + ts_delta if log_append_time is None else log_append_time,
                ),
            )
        )
    if pos != end:
        raise ValueError(f"{end - pos} unconsumed bytes after all records consumed")
    return out


_records = optional("gateway.kafka._records", "GC_PURE_RECORDS")
_decode_compiled: Any = _records.decode_batch if _records is not None else None
"""The compiled decoding loop (``gateway/kafka/_records.c``) where it is built, unless
``GC_PURE_RECORDS=1``."""


def decode_records(
    buf: bytes,
    pos: int,
    count: int,
    topic: str,
    partition: int,
    base_offset: int,
    first_timestamp: int,
    log_append_time: int | None,
) -> list[Record]:
    """:func:`decode_batch`, compiled where that is built: it takes the well-formed batches and
    gives back ``None`` for anything else, which :func:`decode_batch` then decodes or refuses
    with its own error (:func:`self_check` compares both paths with kafka-python's)."""
    if _decode_compiled is not None:
        records: list[Record] | None = _decode_compiled(
            buf, pos, count, topic, partition, base_offset, first_timestamp, log_append_time, Record
        )
        if records is not None:
            return records
    return decode_batch(
        buf, pos, count, topic, partition, base_offset, first_timestamp, log_append_time
    )


def _fast_unpack(  # noqa: PLR0912, PLR0915  (kafka-python's method, same order of steps)
    self: Any, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
) -> Iterator[Any]:
    """``PartitionRecords._unpack_records`` of kafka-python 3.0.12, decoding v2 batches with
    :func:`decode_batch`. Only for consumers without deserializers (see :func:`install`)."""
    read_committed = self.isolation_level == _READ_COMMITTED
    topic = tp.topic
    partition = tp.partition
    try:
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset "
                    f"{batch.base_offset} failed crc check"
                )
            if batch.magic != 2:  # legacy formats: the original record objects, converted
                for record in batch:
                    if self.check_crcs and not record.validate_crc():
                        raise CorruptRecordError(
                            f"Record for partition {self.topic_partition} at offset "
                            f"{record.offset} failed crc check"
                        )
                    self.records_read += 1
                    self.bytes_read += record.size_in_bytes
                    self.next_fetch_offset = record.offset + 1
                    yield consumed_record(
                        topic,
                        partition,
                        record.offset,
                        record.key,
                        record.value,
                        record.headers,
                        record.timestamp,
                    )
                batch = records.next_batch()
                continue
            self.leader_epoch = batch.leader_epoch
            if read_committed and batch.has_producer_id():
                self._consume_aborted_transactions_up_to(batch.last_offset)
                producer_id = batch.producer_id
                if self._contains_abort_marker(batch):
                    self.aborted_producer_ids.discard(producer_id)
                elif self._is_batch_aborted(batch):
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
            if batch.is_control_batch:
                self.next_fetch_offset = batch.next_offset
                batch = records.next_batch()
                continue
            batch._maybe_uncompress()
            header = batch._header_data
            try:
                decoded = decode_records(
                    bytes(batch._buffer),
                    batch._pos,
                    header[12],
                    topic,
                    partition,
                    header[0],
                    header[7],
                    header[8] if batch.timestamp_type == _LOG_APPEND_TIME else None,
                )
            except (ValueError, IndexError) as err:
                raise CorruptRecordError(f"Found invalid record structure: {err!r}") from err
            self.records_read += len(decoded)
            self.bytes_read += len(batch._buffer) - batch._pos
            for record in decoded:
                self.next_fetch_offset = record.offset + 1
                yield record
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()
    except StopIteration:  # as the original: never let it end the generator silently
        log.exception("StopIteration raised unpacking messageset")
        raise RuntimeError("StopIteration raised unpacking messageset") from None


def _fast_class(base: type) -> type:
    return type("FastPartitionRecords", (base,), {"_unpack_records": _fast_unpack})


def install(consumer: Any) -> bool:
    """Give ``consumer``'s fetcher the fast unpacker; True when installed (the records it
    returns are then :class:`Record` already), False when its internals differ (see the
    module docstring; a warning says why)."""
    try:
        fetcher = consumer._fetcher
        if fetcher.config["key_deserializer"] or fetcher.config["value_deserializer"]:
            return False
        base = fetcher.PartitionRecords
        fast = _fast_class(base)
        self_check(base, fast)
    except Exception as exc:  # any surprise means: keep kafka-python's own unpacking
        log.warning(
            "kafka-python internals changed (%s: %s); fetched records are unpacked by "
            "kafka-python itself",
            type(exc).__name__,
            exc,
        )
        return False
    fetcher.PartitionRecords = fast
    return True


class _Aborted(NamedTuple):  # a FetchResponse AbortedTransaction: what PartitionRecords reads
    producer_id: int
    first_offset: int


def _sample_batch(
    base_offset: int,
    records: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    *,
    compression: int = 0,
    producer_id: int = -1,
    batch_size: int = 1 << 20,
) -> bytes:
    """A v2 batch as a broker returns it (kafka-python's builder, ``base_offset`` set)."""
    builder = DefaultRecordBatchBuilder(
        2, compression, producer_id >= 0, producer_id, 0 if producer_id >= 0 else -1, 0, batch_size
    )
    for i, (ts, key, value, headers) in enumerate(records):
        builder.append(i, ts, key, value, headers)
    buf = builder.build()
    struct.pack_into(">q", buf, 0, base_offset)  # the broker's part (outside the CRC)
    return bytes(buf)


def _samples() -> bytes:
    big = bytes(range(256)) * 3  # multi-byte length varints
    ts = 1_764_000_000_000
    return b"".join(
        [
            _sample_batch(
                0,
                [
                    (ts, b"k0", b"v0", []),
                    (ts + 1, None, big, [("a", b"1"), ("traceparent", b"00-" + big[:55])]),
                    (ts - 5, b"k2", None, [("null", None), ("\u00e9", b"")]),
                    (ts + 10_000_000, b"k3" * 100, b"v3", [("h", big)]),
                ],
            ),
            _sample_batch(4, [(ts, b"t", b"aborted", [])], producer_id=7),
            _sample_batch(5, [(ts, b"c", b"committed", [("x", b"y")])], producer_id=8),
            _sample_batch(6, [(ts, b"g%d" % i, big, []) for i in range(70)], compression=1),
        ]
    )


def self_check(base: type, fast: type) -> None:
    """Unpack sample batches with ``base`` (kafka-python's) and ``fast``; raise ``TypeError``
    saying what differs."""
    tp = _KTP("gc-self-check", 3)
    aborted = [_Aborted(7, 4)]
    for fetch_offset, isolation in ((0, _READ_COMMITTED), (2, _READ_COMMITTED), (0, None)):
        got: list[list[Any]] = []
        state: list[tuple[int, int, int]] = []
        for cls in (base, fast):
            kwargs: dict[str, Any] = {"check_crcs": True}
            if isolation is not None:
                kwargs |= {"isolation_level": isolation, "aborted_transactions": aborted}
            part = cls(fetch_offset, tp, MemoryRecords(_samples()), **kwargs)
            taken = part.take(3) + part.take(None)
            records = [r if type(r) is Record else consumed(r) for r in taken]
            got.append([r._replace(headers=tuple(r.headers)) for r in records])  # list or tuple
            state.append((part.next_fetch_offset, part.records_read, part.leader_epoch))
        if got[0] != got[1]:
            raise TypeError(f"unpacked records differ from kafka-python's (from {fetch_offset})")
        if state[0] != state[1]:
            raise TypeError(f"fetch state differs from kafka-python's: {state}")
        expected = 76 - fetch_offset - (1 if isolation is not None else 0)
        if len(got[1]) != expected:
            raise TypeError(f"{len(got[1])} records unpacked, expected {expected}")


__all__ = ["decode_batch", "install", "self_check"]
