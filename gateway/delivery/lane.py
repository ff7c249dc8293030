"""A city's lane: bounded worker threads that deliver that city's escalations.

Records are spread over the city's workers by key, so one complaint's records are always
handled by the same worker, in order. Each finished record (accepted, rejected and
dead-lettered, or undecodable and dead-lettered) is reported on the engine's completion queue
only after its receipt / dead-letter record is acknowledged by Kafka; the engine then commits.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from gateway.avro.codec import Codec
from gateway.deadletters.headers import dead_letter_headers, iso
from gateway.delivery.city import Attempts, CityDelivery, Result, response_excerpt
from gateway.delivery.convert import to_escalation
from gateway.errors import GreenChannelError, RecordError, RejectedByBureau
from gateway.kafka.clients import Producer, Record, TopicPartition
from gateway.ops.observer import Observer
from gateway.sdk import Escalation
from gateway.topics import Topics

log = logging.getLogger(__name__)
ACK_TIMEOUT_S = 60.0


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
        delivery: CityDelivery,
        codec: Codec,
        producer: Producer,
        topics: Topics,
        observer: Observer,
        completions: queue.SimpleQueue[Completion],
        *,
        is_current: Callable[[TopicPartition, int], bool],
        on_fatal: Callable[[GreenChannelError], None],
        clock: Callable[[], float],
    ) -> None:
        self.city = delivery.city
        self.delivery = delivery
        self.codec = codec
        self.producer = producer
        self.topics = topics
        self.observer = observer
        self.completions = completions
        self.is_current = is_current
        self.on_fatal = on_fatal
        self.clock = clock
        n = delivery.settings.concurrency
        self._queues: list[queue.SimpleQueue[Job | None]] = [queue.SimpleQueue() for _ in range(n)]
        self._threads = [
            threading.Thread(
                target=self._work, args=(q,), name=f"deliver-{self.city}-{i}", daemon=True
            )
            for i, q in enumerate(self._queues)
        ]
        self._created_ms: dict[tuple[TopicPartition, int], int] = {}
        self._lock = threading.Lock()
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
        for q in self._queues:
            q.put(None)

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` in total; True when every worker has exited."""
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def close(self, timeout_s: float) -> bool:
        self.request_stop()
        return self.join(timeout_s)

    def oldest_age_s(self) -> float:
        with self._lock:
            if not self._created_ms:
                return 0.0
            return max(0.0, self.clock() - min(self._created_ms.values()) / 1000)

    # -- worker --------------------------------------------------------------------------------
    def _work(self, jobs: queue.SimpleQueue[Job | None]) -> None:
        while (job := jobs.get()) is not None:
            try:
                current = self.is_current(job.record.tp, job.generation)
                if not current:
                    log.info(
                        "%s: dropping %s:%d:%d, partition was revoked (the new owner redelivers)",
                        self.city,
                        job.record.topic,
                        job.record.partition,
                        job.record.offset,
                    )
                if current and not self.delivery.stop.is_set() and self._handle(job.record):
                    self.completions.put(
                        Completion(job.record.tp, job.record.offset, job.generation)
                    )
            except GreenChannelError as exc:
                log.error(
                    "%s: cannot record the outcome of %s:%s: %s",
                    self.city,
                    job.record.topic,
                    job.record.offset,
                    exc,
                )
                self.on_fatal(exc)
            finally:
                with self._lock:
                    self.queued -= 1
                    self._created_ms.pop((job.record.tp, job.record.offset), None)

    def _handle(self, record: Record) -> bool:
        """Deliver one record; True when its outcome is final and recorded."""
        try:
            escalation = to_escalation(self.codec.decode_as("escalation", record.value or b""))
        except RecordError as exc:
            self._dead_letter(record, exc, exc.reason, None, Attempts())
            return True
        with self._lock:
            self._created_ms[(record.tp, record.offset)] = escalation.created_at_ms
        result = self.delivery.deliver(escalation)
        if not result.final:
            return False
        if result.accepted:
            latency = self.clock() - escalation.created_at_ms / 1000
            self._receipt(escalation, result, latency)
            self.observer.on_delivered(self.city, latency)
        else:
            error = RejectedByBureau(
                f"{self.city} rejected the escalation: {result.detail}",
                reason=result.reason or "rejected",
            )
            self._dead_letter(record, error, error.reason, escalation, result.attempts)
            self._receipt(escalation, result, self.clock() - escalation.created_at_ms / 1000)
        return True

    def _receipt(self, esc: Escalation, result: Result, latency_s: float) -> None:
        now_ms = int(self.clock() * 1000)
        receipt = {
            "escalation_id": esc.escalation_id,
            "complaint_id": esc.complaint_id,
            "city": self.city,
            "outcome": "ACCEPTED" if result.accepted else "REJECTED",
            "case_number": result.case_number,
            "reason": None if result.accepted else result.reason,
            "attempts": result.attempts.count,
            "first_attempt_at": result.attempts.first_ms or now_ms,
            "completed_at": now_ms,
            "latency_ms": int(latency_s * 1000),
        }
        value = self.codec.encode("receipt", receipt)
        headers = [
            ("gc-city", self.city.encode()),
            ("gc-escalation-id", esc.escalation_id.encode()),
        ]
        self.producer.send_and_wait(
            self.topics.receipts,
            value,
            key=esc.complaint_id.encode(),
            headers=headers,
            timeout_s=ACK_TIMEOUT_S,
        )

    def _dead_letter(
        self,
        record: Record,
        error: GreenChannelError,
        reason: str,
        esc: Escalation | None,
        attempts: Attempts,
    ) -> None:
        known = (
            [
                esc.consumer.name,
                esc.consumer.phone,
                esc.consumer.id_number,
                esc.consumer.address,
                esc.consumer.email,
            ]
            if esc
            else []
        )
        extra = {
            "city": self.city,
            "attempts": str(attempts.count),
            "http-status": str(attempts.last_status),
        }
        if attempts.count:
            extra |= {
                "first-attempt": iso(attempts.first_ms),
                "last-attempt": iso(attempts.last_ms),
                "response": response_excerpt(attempts, known),
            }
        headers = dead_letter_headers(
            record,
            stage="delivery",
            error=error,
            reason=reason,
            now_ms=int(self.clock() * 1000),
            extra=extra,
            known_pii=known,
        )
        self.producer.send_and_wait(
            self.topics.dlq_escalations,
            record.value or b"",
            key=record.key,
            headers=headers,
            timeout_s=ACK_TIMEOUT_S,
        )
        self.observer.on_delivery_dead_lettered(self.city, reason)
        log.warning(
            "%s: dead-lettered an escalation",
            self.city,
            extra={
                "city": self.city,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": reason,
                "attempts": attempts.count,
            },
        )
