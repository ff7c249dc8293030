"""The producer wrapper against a real broker: batching across transactions, key placement."""

from __future__ import annotations

import time
from typing import ClassVar

import pytest
from kafka.partitioner.default import murmur2 as kafka_python_murmur2
from kafka.producer import sender as kafka_sender
from kafka.structs import ConsumerGroupMetadata

from gateway.errors import BrokerRejected, FatalError, KafkaUnavailable
from gateway.kafka.append import batch_appender
from gateway.kafka.clients import Headers, Producer, Record, TopicPartition
from gateway.kafka.compat import TRANSACTION_RETRY_BACKOFF_MS
from gateway.kafka.partitioner import KeyHashPartitioner
from tests.conftest import TopicFactory
from tests.helpers import read_all

pytestmark = pytest.mark.integration


def test_a_transactional_producer_keeps_lingering_after_commits(
    topic_factory: TopicFactory,
) -> None:
    """kafka-python 3.0.12 leaves its accumulator in flush mode after the first commit (every
    batch then goes out at once, linger ignored); the wrapper ends that flush."""
    (topic,) = topic_factory.create("out", partitions=3)
    producer = Producer(
        topic_factory.kafka_settings(),
        transactional_id=topic_factory.name("tx"),
        linger_ms=2_000,
    )
    accumulator = producer._producer._accumulator
    try:
        producer.init_transactions()
        for i in range(3):
            producer.begin()
            producer.send(topic, f"v{i}".encode(), key=f"k{i}".encode())
            time.sleep(0.3)  # well under linger: the record must still wait in its batch
            assert accumulator.has_undrained(), f"transaction {i}: batch sent before linger"
            producer.commit()
            assert not accumulator.flush_in_progress()
    finally:
        producer.close()
    got = read_all(topic_factory.bootstrap, [topic], expect=3, timeout_s=30)
    assert sorted(r.value for r in got) == [b"v0", b"v1", b"v2"]


def test_back_to_back_transactions_retry_a_busy_coordinator_quickly(
    topic_factory: TopicFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction begun right after a commit is refused with CONCURRENT_TRANSACTIONS while
    the coordinator writes the previous commit's markers; the sender retries it after
    TRANSACTION_RETRY_BACKOFF_MS (not the producer's retry_backoff_ms), and every transaction
    commits its records exactly once."""
    (source,) = topic_factory.create("in", partitions=3)
    (sink,) = topic_factory.create("out", partitions=3)
    slept: list[float] = []
    real_sleep = kafka_sender.time.sleep

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(kafka_sender.time, "sleep", sleep)
    producer = Producer(
        topic_factory.kafka_settings(), transactional_id=topic_factory.name("tx"), linger_ms=500
    )
    assert producer._producer._sender.config["retry_backoff_ms"] == TRANSACTION_RETRY_BACKOFF_MS
    assert producer._producer.config["retry_backoff_ms"] == 10  # batches and metadata: as set
    group_metadata = ConsumerGroupMetadata(topic_factory.name("g"))
    sent = 0
    try:
        producer.init_transactions()
        # the conflict is the common case (most back-to-back transactions meet it here), but
        # it is the broker's timing: go on until it was met a few times, bounded
        while sent < 200 and (len(slept) < 3 or sent < 20):
            producer.begin()
            for k in range(5):
                producer.send(sink, f"v{sent}-{k}".encode(), key=f"k{k}".encode())
            producer.send_offsets({TopicPartition(source, 0): sent + 1}, group_metadata)
            producer.commit()
            sent += 1
    finally:
        producer.close()
    assert len(slept) >= 3, f"{sent} back-to-back transactions met no busy coordinator"
    assert set(slept) == {TRANSACTION_RETRY_BACKOFF_MS / 1000}
    got = read_all(topic_factory.bootstrap, [sink], expect=5 * sent, timeout_s=60)
    assert sorted(r.value for r in got) == sorted(
        f"v{i}-{k}".encode() for i in range(sent) for k in range(5)
    )


def test_keyed_records_land_on_the_java_clients_partition(topic_factory: TopicFactory) -> None:
    (topic,) = topic_factory.create("keys", partitions=6)
    producer = Producer(topic_factory.kafka_settings())
    keys = [f"C{i:06d}".encode() for i in range(300)]
    try:
        for key in keys:
            producer.send(topic, b"x", key=key)
        producer.flush(30)
    finally:
        producer.close()
    got = read_all(topic_factory.bootstrap, [topic], expect=len(keys), timeout_s=30)
    assert len(got) == len(keys)
    for r in got:
        assert r.key is not None
        assert r.partition == (kafka_python_murmur2(r.key) & 0x7FFFFFFF) % 6
    assert len({r.partition for r in got}) == 6


def test_load_metadata_learns_every_topic_and_names_a_missing_one(
    topic_factory: TopicFactory,
) -> None:
    topics = topic_factory.create(*(f"m{i}" for i in range(12)), partitions=2)
    producer = Producer(topic_factory.kafka_settings(), max_block_ms=3_000)
    try:
        producer.load_metadata(topics)
        cluster = producer._producer._metadata
        assert all(cluster.partitions_for_topic(t) == {0, 1} for t in topics)
        missing = topic_factory.name("never-created")
        with pytest.raises(KafkaUnavailable, match="never-created"):
            producer.load_metadata([*topics, missing])
    finally:
        producer.close()


def _records(topic: str, count: int, prefix: str = "C") -> list[tuple[str, bytes, bytes, Headers]]:
    return [
        (
            topic,
            f"{prefix}{i:06d}".encode(),
            f"value {i}".encode(),
            (("gc-rule", b"r"), ("n", b"%d" % i)),
        )
        for i in range(count)
    ]


def test_send_all_places_orders_and_labels_records_exactly_as_send_does(
    topic_factory: TopicFactory,
) -> None:
    one, many = topic_factory.create("one-by-one", "send-all", partitions=6)
    producer = Producer(topic_factory.kafka_settings(), transactional_id=topic_factory.name("tx"))
    assert producer._appender is not None, "the fast path must be active on this kafka-python"
    try:
        producer.init_transactions()
        producer.begin()
        for topic, key, value, headers in _records(one, 400):
            producer.send(topic, value, key=key, headers=headers)
        producer.send_all(_records(many, 400))
        producer.commit()
    finally:
        producer.close()
    got = read_all(topic_factory.bootstrap, [one, many], expect=800, timeout_s=60)
    by_topic: dict[str, list[Record]] = {one: [], many: []}
    for r in got:
        by_topic[r.topic].append(r)
    placed = {t: {r.key: r.partition for r in rs} for t, rs in by_topic.items()}
    assert len(placed[many]) == 400
    assert placed[many] == placed[one]
    assert len(set(placed[many].values())) == 6
    for r in by_topic[many]:
        assert r.key is not None
        i = int(r.key[1:])
        assert r.value == f"value {i}".encode()
        assert list(r.headers) == [("gc-rule", b"r"), ("n", b"%d" % i)]
    for partition in range(6):  # order kept within each partition
        offsets_order = [
            int(r.key[1:])
            for r in sorted(by_topic[many], key=lambda r: r.offset)
            if r.key and r.partition == partition
        ]
        assert offsets_order == sorted(offsets_order)


def test_send_all_in_an_aborted_transaction_is_never_read(topic_factory: TopicFactory) -> None:
    (topic,) = topic_factory.create("aborted", partitions=3)
    producer = Producer(topic_factory.kafka_settings(), transactional_id=topic_factory.name("tx"))
    try:
        producer.init_transactions()
        producer.begin()
        producer.send_all(_records(topic, 300, prefix="A"))
        producer.abort()
        producer.begin()
        producer.send_all(_records(topic, 100, prefix="B"))
        producer.commit()
    finally:
        producer.close()
    got = read_all(topic_factory.bootstrap, [topic], expect=100, timeout_s=30)
    assert sorted(r.key for r in got if r.key) == [f"B{i:06d}".encode() for i in range(100)]
    assert len(got) == 100


def test_send_all_sends_what_it_is_not_sure_about_through_send(
    topic_factory: TopicFactory,
) -> None:
    """Cold partition cache, no key, odd header types and near-limit sizes take send(); the
    rest the fast path. Oversized records fail exactly as send() fails them."""
    (topic,) = topic_factory.create("slow-path", partitions=3)
    producer = Producer(topic_factory.kafka_settings(), max_request_size=64 * 1024)
    appender = batch_appender(producer._producer)
    assert appender is not None
    slow: list[tuple[str, bytes | None]] = []

    def send_one(t: str, value: bytes, key: bytes | None, headers: Headers) -> None:
        slow.append((t, key))
        producer.send(t, value, key=key, headers=headers)

    batch: list[tuple[str, bytes | None, bytes, Headers]] = [
        (topic, b"k0", b"first: partitions not cached yet", ()),
        (topic, b"k1", b"fast", (("h", b"v"),)),
        (topic, None, b"no key", ()),
        (topic, b"k3", b"near the limit".ljust(65_420, b"."), ()),  # within 128 B
        (topic, b"k4", b"fast too", [("h", b"v")]),
    ]
    try:
        assert appender.append_all(batch, send_one) == 3
        assert slow == [(topic, b"k0"), (topic, None), (topic, b"k3")]
        producer.flush(30)
        # too large for max_request_size: record-attributable (the router dead-letters it)
        with pytest.raises(BrokerRejected, match="MessageSizeTooLarge"):
            producer.send_all([(topic, b"k5", b"x" * 70 * 1024, ())])
        with pytest.raises(FatalError, match="headers"):  # send()'s check, not a broken batch
            producer.send_all([(topic, b"k6", b"v", (("h", None),))])
    finally:
        producer.close()
    got = read_all(topic_factory.bootstrap, [topic], expect=5, timeout_s=30)
    assert sorted(r.value[:5] for r in got if r.value) == [
        b"fast",
        b"fast ",
        b"first",
        b"near ",
        b"no ke",
    ]


def test_send_all_keeps_a_keys_order_when_some_of_its_records_take_send(
    topic_factory: TopicFactory,
) -> None:
    """Fast records of a partition are appended in groups; one that takes send() (near the size
    limit) must still land between the ones before and after it."""
    (topic,) = topic_factory.create("mixed-order", partitions=3)
    producer = Producer(
        topic_factory.kafka_settings(),
        transactional_id=topic_factory.name("tx"),
        max_request_size=64 * 1024,
    )
    near = b"".ljust(65_420, b".")
    values = [b"%02d" % i + (near if i % 4 == 1 else b"") for i in range(12)]
    try:
        producer.init_transactions()
        producer.load_metadata([topic])
        producer.begin()
        producer.send_all([(topic, b"same-key", v, ()) for v in values])
        producer.commit()
    finally:
        producer.close()
    got = read_all(topic_factory.bootstrap, [topic], expect=12, timeout_s=30)
    assert [r.value[:2] for r in sorted(got, key=lambda r: r.offset) if r.value] == [
        b"%02d" % i for i in range(12)
    ]
    assert len({r.partition for r in got}) == 1


def test_batch_appender_declines_producers_it_was_not_written_for() -> None:
    class Unknown:
        config: ClassVar[dict[str, object]] = {"partitioner": KeyHashPartitioner()}

    class Accumulator:
        def append(self, tp: object, key: bytes, value: bytes) -> None: ...

    class ChangedAppend(Unknown):
        _accumulator = Accumulator()
        _sender = _transaction_manager = None

    assert batch_appender(Unknown()) is None
    assert batch_appender(ChangedAppend()) is None
    assert batch_appender(object()) is None
