"""The one-pass position reader (gateway.kafka.positions) against kafka-python's own state."""

from __future__ import annotations

from typing import Any

from kafka.consumer.subscription_state import SubscriptionState
from kafka.structs import TopicPartition as KTP

from gateway.kafka import positions


class _Consumer:
    def __init__(self, subscription: Any) -> None:
        self._subscription = subscription


def test_self_check_passes_on_the_installed_kafka_python() -> None:
    positions.self_check()


def test_reads_what_position_would_and_leaves_the_unsettled() -> None:
    sub = SubscriptionState("earliest")
    tps = [KTP("t", p) for p in range(5)]
    sub.assign_from_user(tps[:4])
    for p in (0, 1, 2):
        sub.seek(tps[p], 100 + p)
    sub.request_offset_reset(tps[2])  # awaiting reset: position() must resolve it
    read = positions.reader(_Consumer(sub))
    assert read is not None
    got, rest = read(tps)
    assert got == {tps[0]: 100, tps[1]: 101}
    assert got[tps[1]] == sub.assignment[tps[1]].position.offset
    assert rest == [tps[2], tps[3], tps[4]]  # reset pending, never positioned, not assigned


def test_a_consumer_of_another_shape_gets_no_reader() -> None:
    assert positions.reader(_Consumer(object())) is None
    assert positions.reader(object()) is None
