"""The delivery worker threads: one small pool shared by every city's lane, and its timer.

Lanes (:mod:`gateway.delivery.lane`) decide *what* may run (per-key order, a city's
``concurrency``, its token bucket); :class:`Workers` only runs it. ``run(task)`` queues a task
for the next free thread; ``at(due, task)`` runs a short task (a lane's pump) on the timer
thread at ``due`` (``time.monotonic``), which is how a lane short of tokens waits without
holding a thread.

A task may still block (a slow bureau, a retry's backoff or token wait, a held escalation
waiting for the breaker): it must never hold back another city. Where a task may wait it says
so (:func:`blocking` around a bureau call, :func:`blocked` once a delivery starts retrying or
holding: the rest of it waits). Only while tasks wait in the queue and no thread is idle, the
timer looks every ``tick_s`` for threads that have been in such a wait for over
``blocked_after_s`` (a backoff, a hold: known to be long) or ``call_blocked_after_s`` (a bureau
call: most answers take a few milliseconds, so only a slow one counts) and starts one thread
for each, so ``size`` threads stay free for work. (Counting every call over 5 ms as blocked
grew the pool to 60-120 threads at 1,000 deliveries/s where 8 kept up, for ~10 % more CPU per
delivery.)
(Threads that are only slow, short of CPU on a busy machine, are not counted: more threads
would not help them.) The lanes bound how many tasks can block (a city never has more than its
``concurrency`` in flight), so the pool never grows past ``size`` plus the cities'
concurrency; threads over ``size`` exit after ``keep_s`` without work.

A thread that exits other than by :meth:`request_stop` (a ``BaseException`` escaping a task) is
logged, reported to the liveness registry at once and listed by :meth:`dead_workers`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable

from gateway.delivery.liveness import Liveness, NoLiveness

log = logging.getLogger(__name__)
WORKERS = "deliver-workers"
Task = Callable[[], None]
BLOCKED_AFTER_S = 0.005
"""A thread in a backoff or a hold this long is made up for by another."""
CALL_BLOCKED_AFTER_S = 0.05
"""A thread waiting this long for a bureau's answer is made up for by another."""
TICK_S = 0.005
KEEP_S = 10.0


class _Slot:
    """A worker thread's state: since when its task runs, since when it waits (or None), and
    whether that wait is a backoff or hold (``held``) rather than a call."""

    __slots__ = ("busy_since", "held", "waits_since")

    def __init__(self) -> None:
        self.busy_since: float | None = None
        self.waits_since: float | None = None
        self.held = False


_local = threading.local()


class blocking:  # used as a context manager (lower case, like contextlib's)
    """Around a call that may wait (a bureau's answer) on a pool thread: the pool makes up for
    the thread if the wait lasts. Does nothing elsewhere, or inside a wait already marked."""

    __slots__ = ("_slot",)

    def __enter__(self) -> None:
        slot: _Slot | None = getattr(_local, "slot", None)
        if slot is not None and slot.waits_since is None:
            slot.held = False
            slot.waits_since = time.monotonic()
            self._slot: _Slot | None = slot
        else:
            self._slot = None

    def __exit__(self, *exc: object) -> None:
        if self._slot is not None:
            self._slot.waits_since = None


def blocked() -> None:
    """The rest of this pool thread's task may wait (a retry's backoff, a hold): marked so
    until the task ends."""
    slot: _Slot | None = getattr(_local, "slot", None)
    if slot is not None and slot.waits_since is None:
        slot.held = True
        slot.waits_since = time.monotonic()


class Workers:
    def __init__(
        self,
        size: int,
        *,
        name: str = "deliver",
        liveness: Liveness | None = None,
        workers_name: str = WORKERS,
        blocked_after_s: float = BLOCKED_AFTER_S,
        call_blocked_after_s: float = CALL_BLOCKED_AFTER_S,
        tick_s: float = TICK_S,
        keep_s: float = KEEP_S,
    ) -> None:
        self.size = size
        self.name = name
        self.liveness = liveness or NoLiveness()
        self.workers_name = workers_name
        self.blocked_after_s = blocked_after_s
        self.call_blocked_after_s = call_blocked_after_s
        self.tick_s = tick_s
        self.keep_s = keep_s
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._timers: list[tuple[float, int, Task]] = []
        self._wakes_at = -math.inf
        """When the waiting timer thread wakes by itself (-inf while it is awake)."""
        self._seq = itertools.count()
        self._names = itertools.count()
        self._slots: dict[threading.Thread, _Slot] = {}
        self._slot_list: tuple[_Slot, ...] = ()
        """The slots again, replaced whole under the lock: read without it."""
        self._dead: list[threading.Thread] = []
        self._stopping = False
        self._ticking = False
        self._timer = threading.Thread(target=self._time, name=f"{name}-timer", daemon=True)

    # -- public -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the threads (once; later calls do nothing)."""
        with self._cond:
            if self._timer.ident is not None:
                return
            for _ in range(self.size):
                self._spawn()
            self._timer.start()

    def run(self, task: Task) -> None:
        """Run ``task`` on the next free worker thread (it should not raise)."""
        self._tasks.put(task)
        self._watch()

    def _idle(self) -> bool:
        """A thread is free (read without the lock: ``_slot_list`` is replaced whole)."""
        return any(s.busy_since is None for s in self._slot_list)

    def _watch(self) -> None:
        """Tasks may be queued behind busy threads: the timer ticks until that ends."""
        if self._ticking or self._idle():
            return
        with self._cond:
            self._ticking = True
            self._cond.notify()

    def at(self, due: float, task: Task) -> None:
        """Run the short ``task`` on the timer thread once ``time.monotonic()`` reaches ``due``."""
        with self._cond:
            heapq.heappush(self._timers, (due, next(self._seq), task))
            if due < self._wakes_at:  # else the timer looks anyway by then
                self._cond.notify()

    def threads(self) -> int:
        with self._cond:
            return len(self._slots)

    def request_stop(self) -> None:
        """Threads exit once their current task is done (queued tasks are not run)."""
        with self._cond:
            self._stopping = True
            count = len(self._slots)
            self._cond.notify()
        for _ in range(count):
            self._tasks.put(None)

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` in total; True when every thread has exited."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            threads = [*self._slots, self._timer]
        for t in threads:
            if t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads)

    def dead_workers(self) -> list[str]:
        """Names of threads that are gone although nobody asked them to stop."""
        with self._cond:
            return [] if self._stopping else [t.name for t in self._dead if not t.is_alive()]

    # -- threads ------------------------------------------------------------------------------
    def _spawn(self) -> None:  # with self._cond held
        thread = threading.Thread(
            target=self._work, name=f"{self.name}-{next(self._names)}", daemon=True
        )
        self._slots[thread] = _Slot()
        self._slot_list = tuple(self._slots.values())
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        with self._cond:
            slot = _local.slot = self._slots[me]
        ended = False  # by request_stop or for want of work: not a death
        try:
            while True:
                try:
                    task = self._tasks.get(timeout=self.keep_s)
                except queue.Empty:
                    with self._cond:
                        if len(self._slots) > self.size or self._stopping:
                            del self._slots[me]  # decided under the lock: never below size
                            self._slot_list = tuple(self._slots.values())
                            ended = True
                            return
                    continue
                if task is None:
                    ended = True
                    return
                # written by this thread only, read by the timer (no lock: a tick late at worst)
                slot.busy_since = time.monotonic()
                if not self._tasks.empty():  # more behind this one: are they covered?
                    self._watch()
                task()
                slot.busy_since = slot.waits_since = None
        finally:
            with self._cond:
                self._slots.pop(me, None)
                self._slot_list = tuple(self._slots.values())
                if not ended and not self._stopping:
                    self._dead.append(me)
            if not ended and not self._stopping:
                log.critical("delivery worker %s exited", me.name)
                self.liveness.fail(self.workers_name, f"{me.name} exited")

    def _time(self) -> None:
        while True:
            due: list[Task] = []
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    due.append(heapq.heappop(self._timers)[2])
                if not due:
                    self._compensate(now)
                    wait = self._next_wait(now)
                    self._wakes_at = math.inf if wait is None else now + wait
                    self._cond.wait(wait)
                    self._wakes_at = -math.inf  # awake: it looks at the heap before waiting
                    continue
            for task in due:
                try:
                    task()
                except Exception as exc:  # a lane's pump never raises; the timer must outlive it
                    log.error("delivery timer task failed: %s", type(exc).__name__)

    def _next_wait(self, now: float) -> float | None:  # with self._cond held
        wait = self._timers[0][0] - now if self._timers else None
        if self._idle() or self._tasks.empty():  # nothing waits behind busy threads
            self._ticking = False
            return wait
        return self.tick_s if wait is None else min(wait, self.tick_s)

    def _compensate(self, now: float) -> None:  # with self._cond held
        """Queued tasks and no idle thread: one more thread for each waiting one."""
        if self._tasks.empty() or self._idle():
            return
        held_since, call_since = now - self.blocked_after_s, now - self.call_blocked_after_s
        waiting = sum(
            1
            for s in self._slots.values()
            if (s.waits_since or now) <= (held_since if s.held else call_since)
        )
        for _ in range(min(self.size + waiting - len(self._slots), self._tasks.qsize())):
            self._spawn()
