"""Key partitioning must agree with Kafka's Java client and with kafka-python's own partitioner."""

from __future__ import annotations

import random
from typing import Any

import pytest
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from gateway.kafka.partitioner import KeyHashPartitioner, murmur2

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints)
JAVA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize(("text", "expected"), JAVA_VECTORS.items())
def test_murmur2_matches_the_java_client(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected & 0xFFFFFFFF


def test_murmur2_matches_kafka_python_for_every_length_and_tail() -> None:
    rnd = random.Random(7)
    for length in range(70):
        for _ in range(50):
            data = rnd.randbytes(length)
            assert murmur2(data) == kafka_python_murmur2(data), (length, data)


class FakeCluster:
    """The two ClusterMetadata calls the partitioners make, plus its listener hook."""

    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions
        self.listeners: list[Any] = []

    def topics(self) -> set[str]:
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.partitions[topic]) if topic in self.partitions else None

    def available_partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions_for_topic(topic)

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def updated(self) -> None:
        for listener in self.listeners:
            listener(self)


def test_keyed_records_land_where_kafka_pythons_default_partitioner_puts_them() -> None:
    cluster = FakeCluster({"a": set(range(6)), "b": set(range(3)), "c": {0}})
    ours, theirs = KeyHashPartitioner(), DefaultPartitioner()
    for i in range(3000):
        key = f"C{i:08d}".encode()
        for topic in ("a", "b", "c"):
            assert ours.partition(topic, key, key, None, b"v", cluster) == theirs.partition(
                topic, key, key, None, b"v", cluster
            )


def test_partition_counts_are_reread_after_a_metadata_update() -> None:
    cluster = FakeCluster({"t": set(range(3))})
    partitioner = KeyHashPartitioner()
    keys = [f"k{i}".encode() for i in range(200)]
    before = {partitioner.partition("t", k, k, None, b"", cluster) for k in keys}
    assert before == {0, 1, 2}
    cluster.partitions["t"] = set(range(12))
    assert {partitioner.partition("t", k, k, None, b"", cluster) for k in keys} == before  # cached
    cluster.updated()
    after = {partitioner.partition("t", k, k, None, b"", cluster) for k in keys}
    assert after == set(range(12))
    assert len(cluster.listeners) == 1


def test_unkeyed_records_spread_over_available_partitions() -> None:
    cluster = FakeCluster({"t": set(range(4))})
    partitioner = KeyHashPartitioner()
    chosen = {partitioner.partition("t", None, None, None, b"", cluster) for _ in range(400)}
    assert chosen == {0, 1, 2, 3}


def test_an_unknown_topic_is_an_error() -> None:
    with pytest.raises(ValueError, match="not found"):
        KeyHashPartitioner().partition("nope", b"k", b"k", None, b"", FakeCluster({}))
