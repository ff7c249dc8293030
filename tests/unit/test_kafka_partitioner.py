"""Key partitioning must agree with Kafka's Java client and with kafka-python's own partitioner."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from gateway.kafka.partitioner import KeyHashPartitioner, agrees, murmur2, murmur2_py

HASHES = {"in use": murmur2, "pure": murmur2_py}

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints)
JAVA_VECTORS = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("which", HASHES)
@pytest.mark.parametrize(("text", "expected"), JAVA_VECTORS.items())
def test_murmur2_matches_the_java_client(which: str, text: str, expected: int) -> None:
    assert HASHES[which](text.encode()) == expected & 0xFFFFFFFF


@pytest.mark.parametrize("which", HASHES)
def test_murmur2_matches_kafka_python_for_every_length_and_tail(which: str) -> None:
    rnd = random.Random(7)
    for length in range(70):
        for _ in range(50):
            data = rnd.randbytes(length)
            assert HASHES[which](data) == kafka_python_murmur2(data), (length, data)


def test_the_compiled_hash_is_built_and_in_use() -> None:
    if os.environ.get("GC_PURE_MURMUR2") == "1":
        pytest.skip("GC_PURE_MURMUR2=1 asks for the Python hash")
    # built by the editable install wherever a C compiler is (CI has one: a skip fails there)
    if importlib.util.find_spec("gateway.kafka._murmur2") is None:
        pytest.skip("gateway/kafka/_murmur2.c is not built (no C compiler at install)")
    assert murmur2 is not murmur2_py


def test_the_compiled_hash_keeps_the_interpreter_lock() -> None:
    """A hash that let go of the lock on each call handed the router thread's turn to a
    waiting thread once per record (the ``murmurhash2`` package does): while the loop below
    runs, well inside one switch interval, a spinning thread must not run at all."""
    spun = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            spun[0] += 1

    keys = [bytes([i]) * 36 for i in range(200)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.1)
    thread = threading.Thread(target=spin, daemon=True)
    try:
        thread.start()
        time.sleep(0.01)  # the spinner runs; this thread takes the lock back
        before = spun[0]
        for key in keys:
            murmur2(key)
        during = spun[0] - before
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert during == 0, f"the spinner ran {during} times during 200 hashes"


def wrong_on_high_tails(data: bytes) -> int:
    """Wrong only where a tail byte is >= 0x80 (a port hashing the tail as signed chars)."""
    return murmur2_py(data) ^ (1 if len(data) & 3 and data[-1] >= 0x80 else 0)


def raising(data: bytes) -> int:
    raise RuntimeError("a broken accelerator")


@pytest.mark.parametrize(
    "candidate",
    [
        lambda d: murmur2_py(d) ^ 0x1,  # wrong everywhere
        lambda d: murmur2_py(d) if len(d) < 40 else 0,  # wrong only on long keys
        wrong_on_high_tails,
        raising,
    ],
)
def test_an_accelerator_that_disagrees_anywhere_is_refused(
    candidate: Callable[[bytes], int],
) -> None:
    assert not agrees(candidate)
    assert agrees(murmur2_py) and agrees(murmur2)


def test_the_pure_hash_can_be_forced() -> None:
    env = dict(os.environ, GC_PURE_MURMUR2="1")
    code = "import gateway.kafka.partitioner as p; print(p.murmur2 is p.murmur2_py)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"


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
