"""The consumed-record types every stage sees, and their conversion from kafka-python's.

No kafka-python import here: :mod:`gateway.kafka.clients` and :mod:`gateway.kafka.unpack`
build these tuples, the rest of the gateway reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

Headers = Sequence[tuple[str, bytes]]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class Record(NamedTuple):
    """One consumed record (a tuple: built once per record on the hot path)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def consumed_headers(raw: Sequence[tuple[str, bytes | None]]) -> Headers:
    """A consumed record's headers with null values as ``b""``: Kafka allows a null header
    value, kafka-python cannot produce one (``send()`` raises TypeError), and every record we
    consume may be forwarded or dead-lettered with its headers."""
    for _, value in raw:
        if value is None:
            return tuple((k, b"" if v is None else v) for k, v in raw)
    return raw  # type: ignore[return-value]  # no None left


def consumed_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    timestamp_ms: int,
) -> Record:
    return Record(
        topic,
        partition,
        offset,
        key,
        value,
        consumed_headers(headers) if headers else (),
        timestamp_ms,
    )


def consumed(r: Any) -> Record:
    """Our :class:`Record` of a kafka-python ``ConsumerRecord``."""
    return consumed_record(r.topic, r.partition, r.offset, r.key, r.value, r.headers, r.timestamp)


__all__ = [
    "Headers",
    "Record",
    "TopicPartition",
    "consumed",
    "consumed_headers",
    "consumed_record",
]
