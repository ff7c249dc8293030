"""A city's lane: bounded worker threads that deliver that city's records. Scheduling only.

Records are spread over the city's workers by key, so one complaint's records are always
handled by the same worker, in order. A worker hands each record to ``handle`` (the city's
:class:`Outcomes.start <gateway.delivery.outcomes.Outcomes.start>`) with a ``done`` callback
and goes on with its next record; ``done(True)`` comes once the outcome is final and written
(acknowledged by Kafka, on whichever thread saw the acknowledgement), and the lane then reports
it on the engine's completion queue and the engine commits. A record counts as queued (for the
engine's pause and the oldest-record age) until ``done``. ``handle`` turns every exception
into an outcome; should one still escape, the lane logs it, leaves the record unfinished (its
partition's commit point waits: the engine's progress check sees it) and carries on. A worker that exits other than by ``request_stop`` is reported to
the liveness registry at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from gateway.delivery.liveness import Liveness, NoLiveness
from gateway.kafka.clients import Record, TopicPartition

log = logging.getLogger(__name__)
WORKERS = "deliver-workers"
Done = Callable[[bool], None]
Handle = Callable[[Record, Done], None]
"""Delivers one record, then calls ``done(final)`` exactly once (any thread, possibly later)."""


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
    ) -> None:
        self.city = city
        self.handle = handle
        self.completions = completions
        self.is_current = is_current
        self.stop = stop
        self.clock = clock
        self.liveness = liveness or NoLiveness()
        self.workers_name = workers_name
        self._queues: list[queue.SimpleQueue[Job | None]] = [
            queue.SimpleQueue() for _ in range(workers)
        ]
        self._threads = [
            threading.Thread(target=self._work, args=(q,), name=f"deliver-{city}-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        self._created_ms: dict[tuple[TopicPartition, int], int] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self.queued = 0

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, job: Job) -> None:
        key = job.record.key or str(job.record.offset).encode()
        with self._lock:
            self.queued += 1
            self._created_ms[(job.record.tp, job.record.offset)] = job.record.timestamp_ms
        self._queues[zlib.crc32(key) % len(self._queues)].put(job)

    def request_stop(self) -> None:
        """Workers exit once their current record is done (queued records are skipped)."""
        self._stopping = True
        for q in self._queues:
            q.put(None)

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` in total; True when every worker has exited."""
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def dead_workers(self) -> list[str]:
        """Names of started workers that are gone although nobody asked them to stop."""
        if self._stopping:
            return []
        return [t.name for t in self._threads if t.ident is not None and not t.is_alive()]

    def oldest_age_s(self) -> float:
        """Age of the oldest record queued or in flight (by its Kafka timestamp)."""
        with self._lock:
            if not self._created_ms:
                return 0.0
            return max(0.0, self.clock() - min(self._created_ms.values()) / 1000)

    # -- worker --------------------------------------------------------------------------------
    def _work(self, jobs: queue.SimpleQueue[Job | None]) -> None:
        try:
            while (job := jobs.get()) is not None:
                self._run(job)
        finally:
            if not self._stopping:
                name = threading.current_thread().name
                log.critical("%s: worker %s exited", self.city, name)
                self.liveness.fail(self.workers_name, f"{name} exited")

    def _run(self, job: Job) -> None:
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
