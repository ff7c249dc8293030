"""Retry policy as a value: built once per city from config as a tenacity ``Retrying``.

Exponential backoff with jitter, a Retry-After (when the bureau sent one) honoured but capped,
a bounded number of attempts *and* a bounded total delay (the budget), and an interruptible
sleep so shutdown never waits out a backoff. Only :class:`~gateway.errors.TransientError`
is retried; :class:`Hold` (breaker open, maintenance window) ends the round at once so the
caller can park the escalation until the city is available again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from gateway.config import RetrySettings
from gateway.errors import RateLimited, TransientError


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


def build_retrying(
    policy: RetrySettings,
    *,
    stop_event: threading.Event,
    before_sleep: Callable[[RetryCallState], None] = lambda state: None,
) -> Retrying:
    """The city's retry policy. ``sleep`` waits on ``stop_event`` so shutdown interrupts it."""
    return Retrying(
        stop=stop_after_attempt(policy.max_attempts)
        | stop_after_delay(policy.budget_s)
        | stop_when_event_set(stop_event),
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
