"""Liveness from progress: what ``/healthz`` reports.

A loop heartbeat that ticks on every iteration stays green while the loop aborts the same batch
forever; liveness must come from *progress*. Each loop (or worker) registers a component and
reports progress; ``/healthz`` is 503 when one of them is stale, failed, or its thread is gone::

    liveness = Liveness()                                  # one per process (App builds it)
    liveness.register("router", stale_after_s=120, thread=router_thread)
    liveness.beat("router")            # progress: a transaction committed, an idle poll,
                                       # a deliberate transient wait; clears an earlier fail()
    liveness.fail("router", "batch aborted 10 times")      # unhealthy until the next beat()
    liveness.unregister("router")      # a component that ended on purpose (drain)
    liveness.status()  -> {"router": Component(ok=False, age_s=3.2, reason="...")}
    liveness.healthy() -> bool         # every registered component ok (and at least one)

Rules: ``beat`` only on progress, never merely per iteration; a component waiting on purpose for
a transient outage (broker, registry, bureau) is alive and keeps beating (``/readyz`` says it
cannot work, not ``/healthz``: restarting would not help). ``register`` with a ``thread``
also fails the component when that thread is no longer alive. Thread-safe, no IO, the clock is
injectable; reasons are short texts without personal data (they are shown by ``/healthz``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Component:
    ok: bool
    age_s: float
    """Seconds since the last progress (``beat``), or since ``register``."""
    reason: str | None = None


@dataclass(slots=True)
class _Entry:
    stale_after_s: float
    last: float
    thread: threading.Thread | None
    failed: str | None = None


class Liveness:
    """A registry of components that report progress; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def register(
        self, name: str, stale_after_s: float, *, thread: threading.Thread | None = None
    ) -> None:
        """Watch ``name``: unhealthy after ``stale_after_s`` without ``beat`` (or when ``thread``
        is not alive). Registering again replaces the entry and counts as progress."""
        with self._lock:
            self._entries[name] = _Entry(stale_after_s, self._clock(), thread)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def beat(self, name: str) -> None:
        """``name`` made progress; clears an earlier :meth:`fail`. Unknown names are ignored."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.last = self._clock()
            entry.failed = None

    def fail(self, name: str, reason: str) -> None:
        """``name`` cannot make progress: unhealthy until its next :meth:`beat`."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.failed = reason

    def status(self) -> dict[str, Component]:
        now = self._clock()
        with self._lock:
            entries = list(self._entries.items())
        out: dict[str, Component] = {}
        for name, e in entries:
            age = now - e.last
            reason = e.failed
            if reason is None and e.thread is not None and not e.thread.is_alive():
                reason = "thread is gone"
            if reason is None and age > e.stale_after_s:
                reason = f"no progress for {age:.0f}s (limit {e.stale_after_s:g}s)"
            out[name] = Component(reason is None, round(age, 3), reason)
        return out

    def healthy(self) -> bool:
        status = self.status()
        return bool(status) and all(c.ok for c in status.values())


__all__ = ["Component", "Liveness"]
