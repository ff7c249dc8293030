"""Many partitions' consumer positions in one pass over kafka-python's fetch state.

kafka-python's ``KafkaConsumer.position(tp)`` answers one partition, and every call first runs
work over *every* assigned partition (committed-offset refresh, reset and leader-epoch
validation checks): asking each of N partitions costs O(N²). The deliverer asks for the
positions of the partitions a poll returned records from, and of all assigned ones once a
second; with 100 cities (300 partitions) that was most of its poll loop's CPU.

:func:`reader` returns a function that reads, under the subscription state's lock, the position
of every partition that has a settled one (a valid position, not awaiting a reset nor a
leader-epoch validation): exactly what ``position()`` returns for it, without the scans. A
partition without a settled position is left to ``position()`` itself, which resolves it (the
same blocking semantics as before).

This reaches into kafka-python internals (``_subscription``, its ``_lock``, ``assignment`` and
each ``TopicPartitionState``'s ``has_valid_position``, ``awaiting_reset``,
``awaiting_validation`` and ``position``). :func:`self_check` exercises them on a real
``SubscriptionState`` at start-up; when anything differs, :func:`reader` returns ``None`` (a
warning says why) and the consumer keeps asking ``position()`` per partition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from kafka.consumer.subscription_state import SubscriptionState
from kafka.structs import TopicPartition as _KTP

log = logging.getLogger(__name__)
Positions = Callable[[Iterable[_KTP]], tuple[dict[_KTP, int], list[_KTP]]]
"""``read(tps) -> (positions, unsettled)``: the settled positions and the partitions left over."""


def _read_from(subscription: Any) -> Positions:
    lock = subscription._lock
    assignment = subscription.assignment

    def read(tps: Iterable[_KTP]) -> tuple[dict[_KTP, int], list[_KTP]]:
        out: dict[_KTP, int] = {}
        rest: list[_KTP] = []
        with lock:
            for tp in tps:
                state = assignment.get(tp)
                if (
                    state is None
                    or not state.has_valid_position
                    or state.awaiting_reset
                    or state.awaiting_validation
                ):
                    rest.append(tp)
                else:
                    out[tp] = state.position.offset
        return out, rest

    return read


def self_check() -> None:
    """Read positions from a kafka-python ``SubscriptionState`` set up the way a consumer sets
    one up; raise ``TypeError`` saying what differs."""
    sub = SubscriptionState("earliest")
    seeked, fresh, reset, other = (_KTP("gc-self-check", p) for p in range(4))
    sub.assign_from_user([seeked, fresh, reset])
    sub.seek(seeked, 42)
    sub.seek(reset, 7)
    sub.request_offset_reset(reset)
    got, rest = _read_from(sub)([seeked, fresh, reset, other])
    if got != {seeked: 42} or got[seeked] != sub.assignment[seeked].position.offset:
        raise TypeError(f"positions read {got}, expected {{{seeked}: 42}}")
    if rest != [fresh, reset, other]:
        raise TypeError(f"partitions without a settled position: {rest}")
    sub.assignment[seeked]._awaiting_validation = True  # what maybe_validate_position sets
    if _read_from(sub)([seeked])[1] != [seeked]:
        raise TypeError("a position awaiting validation was read as settled")


def reader(consumer: Any) -> Positions | None:
    """The one-pass reader of ``consumer``'s positions, or ``None`` when kafka-python's
    internals differ from what it reads (see the module docstring)."""
    try:
        self_check()
        subscription = consumer._subscription
        if not isinstance(subscription, SubscriptionState):
            raise TypeError(f"the consumer's subscription is a {type(subscription).__name__}")
        return _read_from(subscription)
    except Exception as exc:  # any surprise means: ask position() per partition
        log.warning(
            "kafka-python internals changed (%s: %s); positions are asked per partition",
            type(exc).__name__,
            exc,
        )
        return None


__all__ = ["Positions", "reader", "self_check"]
