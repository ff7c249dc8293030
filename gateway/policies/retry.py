"""Retry policy as a value: built once per city from config, all of it tenacity.

A *round* (:func:`build_retrying`): exponential backoff with jitter, a Retry-After (when the
bureau sent one) honoured but capped, a bounded number of attempts *and* a bounded total delay
(the budget), and an interruptible sleep so shutdown never waits out a backoff. Only
:class:`~gateway.errors.TransientError` is retried; :class:`Hold` (breaker open, maintenance
window) ends the round at once.

:class:`DeliveryRetry` is what a city uses: rounds inside a *hold* (a second tenacity
``Retrying``): a spent round or a :class:`Hold` parks the escalation — it is never
dead-lettered for an outage — and the next round starts when the city may be called again
(after the breaker's probe delay, at most 1 s later). Only the stop event ends the hold; then
the last transient error is raised and the caller hands the record back uncommitted.

Most deliveries succeed at their first attempt, so :class:`DeliveryRetry` makes it without
tenacity: copying and running the two ``Retrying`` objects cost ~65 us a delivery. A first
attempt that fails transiently is handed to them as their first attempt (the round's
``before_sleep`` sees it, it counts against ``max_attempts``, and the time it took against
``budget_s``), so the policy is the same either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from gateway.config import RetrySettings
from gateway.errors import RateLimited, TransientError

T = TypeVar("T")


class Hold(TransientError):
    """The city must not be called right now (breaker open, maintenance window)."""

    reason = "hold"

    def __init__(self, message: str, *, wait_s: float) -> None:
        super().__init__(message)
        self.wait_s = wait_s


class RetryLaterError(TransientError):
    """A bureau answer classified as RetryLater by the connector."""

    def __init__(self, message: str, *, reason: str, retry_after: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class wait_retry_after(wait_base):
    """Wait at least the bureau's Retry-After (capped), else the fallback backoff."""

    def __init__(self, fallback: wait_base, cap_s: float) -> None:
        self.fallback = fallback
        self.cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        base = float(self.fallback(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        hint = getattr(exc, "retry_after", None)
        if isinstance(exc, RetryLaterError | RateLimited) and hint:
            return max(min(float(hint), self.cap_s), min(base, self.cap_s))
        return base


def _sleep(stop_event: threading.Event, seconds: float) -> None:
    stop_event.wait(seconds)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, Hold)


HOLD_MIN_S, HOLD_MAX_S = 0.05, 1.0
"""How long a held escalation waits before the next round (bounds on the Hold's own hint)."""


def _round_stop(policy: RetrySettings, stop_event: threading.Event, budget_s: float) -> stop_base:
    return (
        stop_after_attempt(policy.max_attempts)
        | stop_after_delay(budget_s)
        | stop_when_event_set(stop_event)
    )


def build_retrying(
    policy: RetrySettings,
    *,
    stop_event: threading.Event,
    before_sleep: Callable[[RetryCallState], None] = lambda state: None,
) -> Retrying:
    """The city's retry policy. ``sleep`` waits on ``stop_event`` so shutdown interrupts it."""
    return Retrying(
        stop=_round_stop(policy, stop_event, policy.budget_s),
        wait=wait_retry_after(
            wait_exponential_jitter(
                multiplier=policy.initial_s, max=policy.max_wait_s, jitter=policy.jitter_s
            ),
            policy.retry_after_cap_s,
        ),
        retry=retry_if_exception(_retryable),
        sleep=lambda seconds: _sleep(stop_event, seconds),
        before_sleep=before_sleep,
        reraise=True,
    )


def _wait_hold(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, Hold):
        return min(max(exc.wait_s, HOLD_MIN_S), HOLD_MAX_S)
    return 0.0  # a spent round: the next one starts at once (the breaker decides if it may)


class DeliveryRetry:
    """One city's whole retry policy: rounds of :func:`build_retrying` inside a hold.

    ``on_held(exc)`` is called each time a round ends without a final answer (budget spent,
    breaker open, maintenance): for logs and metrics. Thread-safe: each call works on copies.
    ``monotonic`` times the first attempt (tenacity's own clock for ``budget_s``).
    """

    def __init__(
        self,
        policy: RetrySettings,
        *,
        stop_event: threading.Event,
        before_sleep: Callable[[RetryCallState], None] = lambda state: None,
        on_held: Callable[[BaseException], None] = lambda exc: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy, self.stop_event, self.monotonic = policy, stop_event, monotonic
        self.round = build_retrying(policy, stop_event=stop_event, before_sleep=before_sleep)

        def held(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if exc is not None:
                on_held(exc)

        self.hold = Retrying(
            stop=stop_when_event_set(stop_event),
            wait=_wait_hold,
            retry=retry_if_exception(lambda exc: isinstance(exc, TransientError)),
            sleep=lambda seconds: _sleep(stop_event, seconds),
            before_sleep=held,
            reraise=True,
        )

    def __call__(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` until it returns; raises only what is not transient, or the last
        :class:`~gateway.errors.TransientError` once the stop event is set."""
        started = self.monotonic()
        try:
            return fn(*args)  # the first attempt, without tenacity
        except TransientError as exc:
            pending = [exc]
        spent = self.monotonic() - started
        budget = max(0.0, self.policy.budget_s - spent)
        first_round = self.round.copy(stop=_round_stop(self.policy, self.stop_event, budget))
        later_rounds = self.round.copy()

        def attempt() -> T:
            if pending:  # the first attempt, already made: its failure is this round's first
                raise pending.pop()
            return fn(*args)

        def one_round() -> T:
            return (first_round if pending else later_rounds)(attempt)

        return self.hold.copy()(one_round)
