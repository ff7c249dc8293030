"""Per-city token bucket that is never exceeded, and backs off after a 429.

Every HTTP attempt (retries included) takes a token. The configured rate is a ceiling: the
current rate only ever goes *down* from it (halved on a 429, not below ``floor``) and creeps
back up (additively, every ``recover_every_s`` without a 429). A 429's Retry-After also blocks
the bucket until then. Time is injected; the bucket never sleeps itself — ``reserve`` returns
how long the caller must wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float],
        *,
        floor_fraction: float = 0.1,
        recover_every_s: float = 5.0,
        recover_step_fraction: float = 0.1,
    ) -> None:
        self.ceiling = rate_per_s
        self.rate = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._floor = rate_per_s * floor_fraction
        self._recover_every_s = recover_every_s
        self._recover_step = rate_per_s * recover_step_fraction
        self._tokens = float(burst)
        self._last = clock()
        self._blocked_until = 0.0
        self._last_penalty = float("-inf")
        self._last_recover = self._last
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        if (
            self.rate < self.ceiling
            and now - max(self._last_penalty, self._last_recover) >= self._recover_every_s
        ):
            self.rate = min(self.ceiling, self.rate + self._recover_step)
            self._last_recover = now

    def reserve(self) -> float:
        """Take a token now and return 0, or return seconds to wait before asking again."""
        with self._lock:
            now = self._clock()
            if now < self._blocked_until:
                return self._blocked_until - now
            self._refill(now)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def give_back(self) -> None:
        """Return a token taken by :meth:`reserve` but never used (no request was made)."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + 1.0)

    def penalize(self, retry_after_s: float | None) -> float:
        """A 429 arrived: halve the rate (not below the floor), honour Retry-After.
        Returns the new rate."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self.rate = max(self._floor, self.rate / 2)
            self._tokens = min(self._tokens, 0.0)
            self._last_penalty = now
            if retry_after_s:
                self._blocked_until = max(self._blocked_until, now + retry_after_s)
            return self.rate
