"""Commit points follow the consumer's position past transaction markers and aborted batches."""

from __future__ import annotations

import pytest

from gateway.delivery.offsets import OffsetTracker
from gateway.kafka.clients import TopicPartition

pytestmark = pytest.mark.unit
TP = TopicPartition("t", 0)


def test_commit_point_is_the_position_once_nothing_is_in_flight() -> None:
    tracker = OffsetTracker()
    for offset in (0, 1, 2):
        tracker.add(TP, offset)
    tracker.position(TP, 4)  # 3 is the transaction's commit marker
    assert tracker.to_commit() == {TP: 0}
    for offset in (2, 1, 0):
        tracker.done(TP, offset)
    assert tracker.to_commit() == {TP: 4}  # not 3 (= last + 1): that leaves lag 1 forever


def test_position_alone_moves_the_commit_point() -> None:
    """An aborted batch or a marker fetched on its own returns no records but is committed."""
    tracker = OffsetTracker()
    tracker.position(TP, 0)
    assert tracker.to_commit() == {}
    tracker.position(TP, 7)
    assert tracker.to_commit() == {TP: 7}
    tracker.committed({TP: 7})
    tracker.position(TP, 5)  # an older reading never moves it back
    assert tracker.to_commit() == {}


def test_records_in_flight_hold_the_commit_point_below_the_position() -> None:
    tracker = OffsetTracker()
    tracker.add(TP, 10)
    tracker.add(TP, 11)
    tracker.position(TP, 13)
    tracker.done(TP, 11)
    assert tracker.to_commit() == {TP: 10}
    tracker.done(TP, 10)
    assert tracker.to_commit() == {TP: 13}
