"""The producer wrapper against a real broker: batching across transactions, key placement."""

from __future__ import annotations

import time

import pytest
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from gateway.errors import KafkaUnavailable
from gateway.kafka import Producer
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
