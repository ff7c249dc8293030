"""Reading whole partitions without a consumer group (restoring state from a compacted topic).

:func:`read_partitions` assigns the partitions directly (no group, no commits), reads them
``read_committed`` from the beginning up to the end offsets taken when it starts, and returns
the records. The case keeper uses it to load the case states of the partitions it is assigned.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from kafka import KafkaConsumer
from kafka.structs import TopicPartition as _KTP

from gateway.config import KafkaSettings
from gateway.errors import KafkaUnavailable
from gateway.kafka.clients import _wrap, client_config
from gateway.kafka.records import Record, TopicPartition, consumed


def read_partitions(
    settings: KafkaSettings,
    tps: Iterable[TopicPartition],
    *,
    timeout_s: float = 60.0,
) -> list[Record]:
    """Every committed record of ``tps`` up to their end offsets at the start, in offset order
    per partition."""
    wanted = [_KTP(t, p) for t, p in tps]
    if not wanted:
        return []
    conf = client_config(settings) | {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 2000,
    }
    try:
        consumer = KafkaConsumer(**conf)
    except Exception as exc:
        raise _wrap("create reader", exc) from exc
    try:
        consumer.assign(wanted)
        consumer.seek_to_beginning(*wanted)
        ends = {tp: int(o) for tp, o in consumer.end_offsets(wanted).items()}
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"reading {wanted}: did not reach the end offsets in time")
            for tp, records in consumer.poll(timeout_ms=200).items():
                out.extend(consumed(r) for r in records if r.offset < ends.get(tp, 0))
        return out
    except KafkaUnavailable:
        raise
    except Exception as exc:
        raise _wrap("read partitions", exc) from exc
    finally:
        with contextlib.suppress(Exception):
            consumer.close(autocommit=False)
