"""Token bucket, breaker, retry policy and offset tracking, with injected time."""

from __future__ import annotations

import threading

import pytest
from tenacity import RetryError

from gateway.config import RetrySettings
from gateway.delivery.offsets import OffsetTracker
from gateway.errors import BureauUnavailable
from gateway.kafka.clients import TopicPartition
from gateway.policies.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from gateway.policies.ratelimit import TokenBucket
from gateway.policies.retry import DeliveryRetry, Hold, RetryLaterError, build_retrying

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_never_exceeds_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 2, clock)
    granted = 0
    for _ in range(10_000):  # 10 simulated seconds in 1 ms steps
        if bucket.reserve() == 0:
            granted += 1
        clock.now += 0.001
    assert granted <= 2 + 10 * 10  # burst + rate * seconds
    assert granted >= 99


def test_bucket_tells_how_long_to_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(4.0, 1, clock)
    assert bucket.reserve() == 0
    assert bucket.reserve() == pytest.approx(0.25)


def test_429_halves_rate_blocks_for_retry_after_and_recovers() -> None:
    clock = Clock()
    bucket = TokenBucket(20.0, 1, clock, recover_every_s=5.0)
    assert bucket.penalize(3.0) == 10.0
    assert bucket.reserve() == pytest.approx(3.0)
    assert bucket.penalize(None) == 5.0
    for _ in range(30):
        bucket.penalize(None)
    assert bucket.rate == pytest.approx(2.0)  # floor: 10% of the ceiling
    clock.now += 100
    for _ in range(40):
        clock.now += 5.0
        bucket.reserve()
    assert bucket.rate == pytest.approx(20.0)  # back to, never above, the ceiling


def test_breaker_opens_probes_and_closes() -> None:
    clock = Clock()
    states: list[str] = []
    breaker = CircuitBreaker(3, 10.0, 40.0, clock, on_change=states.append)
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.seconds_until_probe() == pytest.approx(10.0)
    clock.now += 10
    assert breaker.allow()  # the single probe
    assert not breaker.allow()  # nobody else while it is out
    assert breaker.state == HALF_OPEN
    breaker.record_failure()  # probe failed: open twice as long
    assert breaker.state == OPEN and breaker.seconds_until_probe() == pytest.approx(20.0)
    clock.now += 20
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED
    assert states == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_retry_policy_honours_capped_retry_after_and_budget() -> None:
    slept: list[float] = []
    stop = threading.Event()
    policy = RetrySettings(
        max_attempts=4,
        initial_s=0.1,
        max_wait_s=1.0,
        jitter_s=0.0,
        budget_s=1000,
        retry_after_cap_s=5.0,
    )
    retrying = build_retrying(policy, stop_event=stop)
    retrying.sleep = slept.append  # type: ignore[method-assign,assignment]
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RetryLaterError("busy", reason="rate_limited", retry_after=60)
        if calls == 2:
            raise RetryLaterError("busy", reason="rate_limited", retry_after=2)
        if calls == 3:
            raise BureauUnavailable("down")
        return "ok"

    assert retrying(flaky) == "ok"
    assert slept[0] == 5.0  # 60 s capped to 5 s
    assert slept[1] == 2.0  # honoured
    assert slept[2] == pytest.approx(0.4)  # exponential backoff: 0.1 * 2**2
    assert calls == 4


def test_retry_policy_stops_after_attempts_and_never_retries_hold() -> None:
    stop = threading.Event()
    retrying = build_retrying(
        RetrySettings(max_attempts=3, initial_s=0.01, jitter_s=0), stop_event=stop
    )
    retrying.sleep = lambda s: None  # type: ignore[method-assign,assignment]
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise BureauUnavailable("down")

    with pytest.raises(BureauUnavailable):
        retrying(down)
    assert calls == 3

    def held() -> None:
        raise Hold("breaker open", wait_s=1)

    with pytest.raises(Hold):
        retrying(held)
    assert not isinstance(RetryError, type(None))


def _delivery_retry(policy: RetrySettings, **kw: object) -> tuple[DeliveryRetry, list[float]]:
    slept: list[float] = []
    retry = DeliveryRetry(policy, stop_event=threading.Event(), **kw)  # type: ignore[arg-type]
    retry.round.sleep = retry.hold.sleep = slept.append  # type: ignore[method-assign,assignment]
    return retry, slept


def test_delivery_retry_first_attempt_success_calls_once_without_retry_hooks() -> None:
    before: list[object] = []
    retry, slept = _delivery_retry(RetrySettings(), before_sleep=before.append)
    calls: list[tuple[object, ...]] = []

    def ok(*args: object) -> str:
        calls.append(args)
        return "case-1"

    assert retry(ok, "esc", 7) == "case-1"
    assert calls == [("esc", 7)]
    assert before == [] and slept == []


def test_delivery_retry_a_failed_first_attempt_is_the_rounds_first_attempt() -> None:
    """max_attempts counts the first attempt, made outside tenacity, and before_sleep sees
    its failure: 3 attempts, 2 backoffs, then the round is spent and the record is held."""
    seen: list[str] = []
    held: list[BaseException] = []
    retry, slept = _delivery_retry(
        RetrySettings(max_attempts=3, initial_s=0.1, jitter_s=0),
        before_sleep=lambda state: seen.append(str(state.outcome.exception())),  # type: ignore[union-attr]
        on_held=held.append,
    )
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise BureauUnavailable(f"down {calls}")
        return "ok"

    assert retry(flaky) == "ok"
    assert calls == 4  # 3 in the first round, then the next round's first succeeds
    assert seen == ["down 1", "down 2"]
    assert slept[:2] == [pytest.approx(0.1), pytest.approx(0.2)]
    assert [str(e) for e in held] == ["down 3"]


def test_delivery_retry_first_attempt_time_counts_against_the_budget() -> None:
    """A first attempt that took longer than budget_s leaves its round no time for a retry."""
    clock = iter([0.0, 100.0])
    held: list[BaseException] = []
    retry, slept = _delivery_retry(
        RetrySettings(max_attempts=8, initial_s=0.1, jitter_s=0, budget_s=60.0),
        on_held=held.append,
        monotonic=lambda: next(clock),
    )
    calls = 0

    def slow_then_ok() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise BureauUnavailable("timed out")
        return "ok"

    assert retry(slow_then_ok) == "ok"
    assert [str(e) for e in held] == ["timed out"]  # the round was spent at once: held
    assert slept == [0.0]  # no backoff inside the spent round; the next round starts at once
    assert calls == 2


def test_delivery_retry_a_hold_at_the_first_attempt_waits_and_tries_again() -> None:
    retry, slept = _delivery_retry(RetrySettings())
    calls = 0

    def breaker_open_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Hold("breaker open", wait_s=0.5)
        return "ok"

    assert retry(breaker_open_once) == "ok"
    assert calls == 2 and slept == [0.5]


def test_delivery_retry_does_not_retry_what_is_not_transient() -> None:
    retry, slept = _delivery_retry(RetrySettings())

    def bug() -> None:
        raise ValueError("connector bug")

    with pytest.raises(ValueError, match="connector bug"):
        retry(bug)
    assert slept == []


def test_offsets_commit_only_contiguous_final_records() -> None:
    tracker = OffsetTracker()
    tp = TopicPartition("t", 0)
    for offset in (10, 11, 12, 13):
        tracker.add(tp, offset)
    tracker.done(tp, 12)
    tracker.done(tp, 11)
    assert tracker.to_commit() == {tp: 10}  # 10 still in flight: nothing past it
    tracker.committed({tp: 10})
    assert tracker.to_commit() == {}
    tracker.done(tp, 10)
    assert tracker.to_commit() == {tp: 13}  # offset + 1 of the last contiguous final record
    tracker.done(tp, 13)
    assert tracker.to_commit() == {tp: 14}
    tracker.forget([tp])
    assert tracker.to_commit() == {}
