"""What one benchmark run wrote, read back once with read_committed, for its exactly-once check.

Runs follow each other on the same broker, so a run's output is what its topics gained between
two marks: :func:`mark` (the high watermarks, commit markers included) before it starts and
after it stopped. :func:`written` reads that range with a read_committed consumer and returns the
keys per topic; aborted records and markers are never returned.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

Marks = dict[TopicPartition, int]


def mark(bootstrap: str, topics: Iterable[str]) -> Marks:
    """The end (high watermark) of every partition of ``topics``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends: Marks = consumer.end_offsets(tps)
        return ends
    finally:
        consumer.close()


def written(
    bootstrap: str, since: Marks, until: Marks, idle_s: float = 10.0
) -> dict[str, list[bytes]]:
    """The keys of the committed records between two marks, per topic (every topic of ``since``
    is in the result, possibly with none)."""
    keys: dict[str, list[bytes]] = {tp.topic: [] for tp in since}
    todo = [tp for tp in since if until[tp] > since[tp]]
    if not todo:
        return keys
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_poll_records=10_000,
    )
    try:
        consumer.assign(todo)
        for tp in todo:
            consumer.seek(tp, since[tp])
        last = time.monotonic()
        while todo and time.monotonic() - last < idle_s:
            for tp, records in consumer.poll(timeout_ms=200).items():
                keys[tp.topic].extend(r.key for r in records if r.offset < until[tp])
                last = time.monotonic()
            todo = [tp for tp in todo if consumer.position(tp) < until[tp]]
    finally:
        consumer.close()
    return keys
