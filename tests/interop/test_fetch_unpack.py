"""Batches written by librdkafka (confluent-kafka), read back through the fast fetch unpacker
(gateway.kafka.unpack) and through kafka-python's own: the same records, field for field.

The producer is not ours, so the batches carry what another client writes: gzip and
uncompressed batches, null keys, values and header values, non-ASCII header names, large
values; then transactions of our own producer, one aborted between committed ones. Both
consumers read ``read_committed``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer as CKProducer

from gateway.kafka import unpack
from gateway.kafka.clients import Consumer, Producer
from gateway.kafka.records import Record
from tests.conftest import TopicFactory

pytestmark = pytest.mark.integration
COMMITTED = 2 * 400 + 2 * 25  # librdkafka twice (plain, gzip), two committed transactions
HEADERS = (("gc-source", b"librdkafka"), ("nul", None), ("名前", b"\x00\xff"))


def _record(n: int) -> dict[str, Any]:
    return {
        "value": None if n % 97 == 0 else (b"v%d-" % n) * (1 + n % 300),
        "key": None if n % 89 == 0 else b"k%d" % n,
        "headers": list(HEADERS) if n % 3 else None,
        "partition": n % 3,
    }


def _produce(topic_factory: TopicFactory, topic: str) -> None:
    bootstrap = topic_factory.bootstrap
    for n0, compression in ((0, "none"), (1000, "gzip")):  # librdkafka's batches
        producer = CKProducer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "compression.type": compression,
                "linger.ms": 50,
            }
        )
        for n in range(n0, n0 + 400):
            producer.produce(topic, **_record(n))
        assert producer.flush(30) == 0
    # an aborted transaction between committed ones (kafka-python: librdkafka's transactional
    # producer fails EndTxn with INVALID_TXN_STATE now and then against this broker); its
    # header values cannot be null
    ours = Producer(topic_factory.kafka_settings(), transactional_id=topic_factory.name("tx"))
    try:
        ours.init_transactions()
        for n0, commit in ((2000, True), (3000, False), (4000, True)):
            ours.begin()
            for n in range(n0, n0 + 25):
                r = _record(n)
                ours.send(topic, r["value"], key=r["key"], partition=r["partition"])
            if commit:
                ours.commit()
            else:
                ours.abort()
    finally:
        ours.close()


def _read(topic_factory: TopicFactory, topic: str, expected: int) -> tuple[bool, list[Record]]:
    consumer = Consumer(
        topic_factory.kafka_settings(),
        group_id=topic_factory.name(f"g-{uuid.uuid4().hex[:6]}"),
        topics=[topic],
    )
    out: list[Record] = []
    try:
        deadline = time.monotonic() + 60
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(consumer.poll(500))
        out.extend(consumer.poll(1000))  # nothing more may come
        return consumer.fast_unpack, out
    finally:
        consumer.close()


def _normal(records: list[Record]) -> list[Any]:
    return sorted(
        (r._replace(headers=tuple(r.headers)) for r in records),
        key=lambda r: (r.partition, r.offset),
    )


def test_librdkafka_batches_unpack_the_same_through_both_paths(
    topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    (topic,) = topic_factory.create("ck-batches", partitions=3)
    _produce(topic_factory, topic)
    fast, fast_records = _read(topic_factory, topic, COMMITTED)
    assert fast is True
    assert all(type(r) is Record for r in fast_records)
    with monkeypatch.context() as m:
        m.setattr(unpack, "install", lambda consumer: False)
        slow, slow_records = _read(topic_factory, topic, COMMITTED)
    assert slow is False
    assert len(fast_records) == COMMITTED
    assert _normal(fast_records) == _normal(slow_records)
    aborted = {b"k%d" % (3000 + i) for i in range(25)}
    assert not aborted & {r.key for r in fast_records}  # the aborted transaction's keys
    with_headers = [r for r in fast_records if r.headers]
    assert with_headers
    assert all(
        tuple(r.headers) == (("gc-source", b"librdkafka"), ("nul", b""), ("名前", b"\x00\xff"))
        for r in with_headers
    )
    assert any(r.key is None for r in fast_records) and any(r.value is None for r in fast_records)
