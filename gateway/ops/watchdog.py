"""Deadlines for client calls that can block forever, and loop heartbeats for liveness.

kafka-python's ``commit``, ``commit_transaction``, ``abort_transaction`` and
``send_offsets_to_transaction`` can wait without a timeout (dpkp/kafka-python#3121). Each such
call runs inside ``watchdog.guard("name")``; a monitor thread calls ``on_stuck`` (by default:
log and ``os._exit(3)``) when one outlives its deadline, so the supervisor restarts a stuck
process instead of it hanging silently. The same object records poll-loop heartbeats that
``/healthz`` reads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gateway.errors import StuckError

log = logging.getLogger(__name__)

EXIT_STUCK = 3


def _exit_stuck(error: StuckError) -> None:
    log.critical("watchdog: %s; exiting so the supervisor restarts us", error)
    logging.shutdown()
    os._exit(EXIT_STUCK)


class Watchdog:
    def __init__(
        self,
        deadline_s: float,
        *,
        on_stuck: Callable[[StuckError], None] = _exit_stuck,
        clock: Callable[[], float] = time.monotonic,
        check_every_s: float = 0.5,
    ) -> None:
        self.deadline_s = deadline_s
        self._on_stuck = on_stuck
        self._clock = clock
        self._check_every_s = check_every_s
        self._lock = threading.Lock()
        self._active: dict[int, tuple[str, float]] = {}
        self._beats: dict[str, float] = {}
        self._next_token = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._active[token] = (what, self._clock())
        try:
            yield
        finally:
            with self._lock:
                self._active.pop(token, None)

    def beat(self, loop: str) -> None:
        """Record that ``loop`` made progress (called once per poll iteration)."""
        self._beats[loop] = self._clock()

    def heartbeat_ages(self) -> dict[str, float]:
        now = self._clock()
        return {loop: now - at for loop, at in list(self._beats.items())}

    def check(self) -> StuckError | None:
        now = self._clock()
        with self._lock:
            for what, started in self._active.values():
                if now - started > self.deadline_s:
                    return StuckError(
                        f"{what} blocked for {now - started:.1f}s (deadline {self.deadline_s}s)"
                    )
        return None

    def _run(self) -> None:
        while not self._stop.wait(self._check_every_s):
            error = self.check()
            if error is not None:
                self._on_stuck(error)
                return
