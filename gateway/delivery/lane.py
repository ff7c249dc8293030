"""A city's lane: which of the city's records may be delivered now. Scheduling only.

The lane runs its records on a pool of worker threads (:class:`~gateway.delivery.workers.Workers`,
shared by every city's lane in the engine; a lane built without one has its own of
``concurrency`` threads) and keeps three rules:

* **per-key order**: one complaint's records (same key) are handled one at a time, in order;
* **at most** ``concurrency`` of the city's records in flight at once (each on a thread);
* **paced by the city's token bucket** (``pacer``): a record starts only once its first
  attempt's token is taken; short of tokens, the lane asks the pool's timer to look again when
  the next one is due, so a rate-limited city holds no thread while it waits. (Retries take
  their own tokens, waiting on their thread; so do a breaker's holds. The pool makes up for
  threads blocked that way, see there.)

A record is handed to ``handle`` (the city's
:class:`Outcomes.start <gateway.delivery.outcomes.Outcomes.start>`) with a ``done`` callback,
and its thread goes on with other work once ``handle`` returns; ``done(True)`` comes once the
outcome is final and written (acknowledged by Kafka, on whichever thread saw the
acknowledgement), and the lane then reports it on the engine's completion queue and the engine
commits. A record counts as queued (for the engine's pause and the oldest-record age) until
``done``. ``handle`` turns every exception into an outcome; should one still escape, the lane
logs it, leaves the record unfinished (its partition's commit point waits: the engine's
progress check sees it) and carries on. A worker thread that exits other than by a stop is
reported to the liveness registry at once (by the pool).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from gateway.delivery.liveness import Liveness
from gateway.delivery.workers import WORKERS, Workers
from gateway.kafka.clients import Record, TopicPartition

log = logging.getLogger(__name__)
WAKE_GRID_S = 0.005
"""A lane short of tokens is woken on this grid (its due time rounded up), so lanes short at
about the same time share one wake-up of the timer; one already on its way is kept unless the
new one is due over a grid step earlier. A paced record starts at most two grid steps after
its token is due; with a burst of 2 or more no token is lost meanwhile (the bucket fills on)."""
__all__ = ["WORKERS", "Completion", "Job", "Lane", "Pacer"]
Done = Callable[[bool], None]
Handle = Callable[[Record, Done], None]
"""Delivers one record, then calls ``done(final)`` exactly once (any thread, possibly later)."""


class Pacer(Protocol):
    """A city's token bucket as a lane sees it (:class:`~gateway.delivery.city.CityDelivery`)."""

    def reserve(self) -> float:
        """Take the token of a record's first attempt now: 0, else seconds until one is due."""
        ...

    def prepaid(self) -> AbstractContextManager[None]:
        """Around ``handle``: its first attempt uses the token :meth:`reserve` took (given
        back if unused)."""
        ...

    def waited(self, seconds: float) -> None:
        """A record waited this long for its token."""
        ...


@dataclass(frozen=True, slots=True)
class Job:
    record: Record
    generation: int


@dataclass(frozen=True, slots=True)
class Completion:
    tp: TopicPartition
    offset: int
    generation: int


class Lane:
    def __init__(
        self,
        city: str,
        workers: int,
        handle: Handle,
        completions: queue.SimpleQueue[Completion],
        *,
        is_current: Callable[[TopicPartition, int], bool],
        stop: threading.Event,
        clock: Callable[[], float],
        liveness: Liveness | None = None,
        workers_name: str = WORKERS,
        pool: Workers | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.city = city
        self.concurrency = workers
        self.handle = handle
        self.completions = completions
        self.is_current = is_current
        self.stop = stop
        self.clock = clock
        self.pacer = pacer
        self._own_pool = pool is None
        self.pool = pool or Workers(
            workers, name=f"deliver-{city}", liveness=liveness, workers_name=workers_name
        )
        self._keys: dict[bytes, deque[Job]] = {}
        """Every key with a record queued or in flight: its queued records, in order."""
        self._ready: deque[bytes] = deque()
        """Keys whose next record may start (none of theirs in flight), first come first."""
        self._created_ms: dict[tuple[TopicPartition, int], int] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = False
        self._timer_due: float | None = None
        self._timer_seq = 0
        """The lane's current wake-up; a superseded one that still fires does nothing."""
        self._short_since: float | None = None
        self.queued = 0
        self.in_flight = 0

    def start(self) -> None:
        self.pool.start()  # a shared pool starts once, with its first lane

    def submit(self, job: Job) -> None:
        key = job.record.key or str(job.record.offset).encode()
        with self._lock:
            self.queued += 1
            self._created_ms[(job.record.tp, job.record.offset)] = job.record.timestamp_ms
            waiting = self._keys.get(key)
            if waiting is None:
                self._keys[key] = deque((job,))
                self._ready.append(key)
            else:  # its key has a record queued or in flight: after that one
                waiting.append(job)
        self._pump()

    def request_stop(self) -> None:
        """Records in flight finish their current attempt; queued records are not started."""
        with self._lock:
            self._stopping = True
            for key in self._ready:
                for job in self._keys.pop(key):
                    self._forget(job.record)
            self._ready.clear()
            for waiting in self._keys.values():  # keys in flight: what waits behind them
                for job in waiting:
                    self._forget(job.record)
                waiting.clear()
            self._idle.notify_all()
        if self._own_pool:
            self.pool.request_stop()

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` in total; True when no record of the lane is in flight
        (and its own threads, if it has them, have exited)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self.in_flight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            idle = not self.in_flight
        if self._own_pool:
            return self.pool.join(max(0.0, deadline - time.monotonic())) and idle
        return idle

    def dead_workers(self) -> list[str]:
        """Names of the lane's own worker threads that are gone although nobody asked them to
        stop (a shared pool's are the engine's to report)."""
        return self.pool.dead_workers() if self._own_pool else []

    def oldest_age_s(self) -> float:
        """Age of the oldest record queued or in flight (by its Kafka timestamp)."""
        with self._lock:
            if not self._created_ms:
                return 0.0
            return max(0.0, self.clock() - min(self._created_ms.values()) / 1000)

    # -- scheduling ----------------------------------------------------------------------------
    def _pump(self) -> None:
        """Start what may start: a ready key, a free slot and (paced) a token for each."""
        starts: list[tuple[bytes, Job]] = []
        waited = 0.0
        with self._lock:
            while self._ready and self.in_flight < self.concurrency and not self._stopping:
                if self.pacer is not None:
                    wait = self.pacer.reserve()
                    if wait > 0:
                        self._wake_in(wait)
                        break
                    if self._short_since is not None:
                        waited += time.monotonic() - self._short_since
                        self._short_since = None
                key = self._ready.popleft()
                starts.append((key, self._keys[key].popleft()))
                self.in_flight += 1
        if waited and self.pacer is not None:
            self.pacer.waited(waited)
        for key, job in starts:
            self.pool.run(functools.partial(self._run, key, job))

    def _wake_in(self, wait: float) -> None:  # with self._lock held
        now = time.monotonic()
        if self._short_since is None:
            self._short_since = now
        due = math.ceil((now + wait) / WAKE_GRID_S) * WAKE_GRID_S  # the token is due by then
        if self._timer_due is not None and self._timer_due <= due + WAKE_GRID_S:
            return  # a wake-up at most a grid step later than this one is on its way
        self._timer_due = due
        self._timer_seq += 1
        self.pool.at(due, functools.partial(self._on_timer, self._timer_seq))

    def _on_timer(self, seq: int) -> None:
        with self._lock:
            if seq != self._timer_seq:
                return  # superseded by an earlier wake-up, which has pumped or will
            self._timer_due = None
        self._pump()

    def _forget(self, record: Record) -> None:  # with self._lock held: a queued record dropped
        self.queued -= 1
        self._created_ms.pop((record.tp, record.offset), None)

    # -- on a worker thread ----------------------------------------------------------------------
    def _run(self, key: bytes, job: Job) -> None:
        try:
            with self.pacer.prepaid() if self.pacer is not None else contextlib.nullcontext():
                self._deliver(job)
        finally:
            with self._lock:
                self.in_flight -= 1
                waiting = self._keys.get(key)
                if waiting:
                    self._ready.append(key)
                elif waiting is not None:
                    del self._keys[key]
                if not self.in_flight:
                    self._idle.notify_all()
            self._pump()

    def _deliver(self, job: Job) -> None:
        record = job.record
        pending = [True]  # done() counts once, whoever calls it first

        def done(final: bool) -> None:
            with self._lock:
                if not pending:
                    return
                pending.clear()
                self.queued -= 1
                self._created_ms.pop((record.tp, record.offset), None)
            if final:
                self.completions.put(Completion(record.tp, record.offset, job.generation))

        try:
            if not self.is_current(record.tp, job.generation):
                log.info(
                    "%s: dropping %s:%d:%d, partition was revoked (the new owner redelivers)",
                    self.city,
                    record.topic,
                    record.partition,
                    record.offset,
                )
                done(False)
            elif self.stop.is_set():
                done(False)
            else:
                self.handle(record, done)
        except Exception as exc:  # handle() never raises; the worker must outlive a bug in it
            log.error(
                "%s: %s:%d:%d left unfinished: %s",
                self.city,
                record.topic,
                record.partition,
                record.offset,
                type(exc).__name__,
            )
            done(False)
        except BaseException:
            done(False)
            raise
