"""Per-city circuit breaker.

closed --(failure_threshold consecutive transient failures)--> open
open   --(open_s elapsed)--> half_open: exactly one probe request is let through
half_open --(probe succeeds)--> closed;  --(probe fails)--> open again, open_s doubled up to
max_open_s. While a city's breaker is not closed the engine pauses that city's partitions.
A permanent rejection is a *successful* round trip for the breaker (the bureau is up).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        open_s: float,
        max_open_s: float,
        clock: Callable[[], float],
        on_change: Callable[[str], None] = lambda state: None,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.base_open_s = open_s
        self.max_open_s = max_open_s
        self._clock = clock
        self._on_change = on_change
        self.state = CLOSED
        self._failures = 0
        self._open_s = open_s
        self._opened_at = 0.0
        self._probe_out = False
        self._lock = threading.Lock()

    def _set(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._on_change(state)

    def allow(self) -> bool:
        """May a request go out now? In half-open, only one probe at a time."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self._clock() - self._opened_at >= self._open_s:
                self._set(HALF_OPEN)
                self._probe_out = False
            if self.state == HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return True
            return False

    def seconds_until_probe(self) -> float:
        with self._lock:
            if self.state != OPEN:
                return 0.0
            return max(0.0, self._opened_at + self._open_s - self._clock())

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._open_s = self.base_open_s
            self._probe_out = False
            self._set(CLOSED)

    def release_probe(self) -> None:
        """The allowed request never reached the bureau (it failed before sending): let the
        next one probe instead, without counting a success or a failure."""
        with self._lock:
            self._probe_out = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self.state == HALF_OPEN:
                self._open_s = min(self.max_open_s, self._open_s * 2)
                self._trip()
            elif self.state == CLOSED and self._failures >= self.failure_threshold:
                self._trip()

    def _trip(self) -> None:
        self._opened_at = self._clock()
        self._probe_out = False
        self._set(OPEN)
