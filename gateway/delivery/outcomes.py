"""One record's way through delivery, and the one place its outcome is written.

:class:`Outcomes` takes a record from a lane worker and calls ``done(True)`` once its outcome
is final and acknowledged by Kafka (the engine may then commit past it). The worker does not
wait for the acknowledgement: the writes go through :class:`~gateway.delivery.writes.Writes`
(sent asynchronously, batched by the producer, retried on failure; see there for transient and
fatal write failures). What the record is (an escalation, a handling result) and where its
outcomes go are the engine's :class:`~gateway.delivery.flow.Flow`:

* undecodable / invalid record -> dead letter with the codec's bounded reason;
* accepted -> receipt (``ACCEPTED``, the case number; for a handling result the bureau's
  receipt number);
* rejected, or an irregular answer -> dead letter + receipt (``REJECTED``, the reason);
* **any other exception** (a connector bug, a timestamp no calendar can format, a receipt that
  cannot be encoded...) -> dead letter with reason ``internal_error``, the exception's class
  and its masked message, ``greenchannel_delivery_internal_errors_total``; the worker goes on.

Nothing is sent that the broker would refuse for its size (kafka-python's idempotent producer
treats such a refusal as fatal and fails every later send): a record is checked against
``max_record_bytes(topic)`` (``delivery.max_record_bytes``, lowered at start to the topic's own
``max.message.bytes``). A dead letter over it is *bounded* the way the router bounds its own
(:func:`gateway.deadletters.headers.bounded_dead_letter`, one header contract): the original
headers are dropped, the value is cut to at most its first ``KEPT_PREFIX_BYTES`` and
``gc-dlq-truncated: true``, ``gc-dlq-value-bytes``, ``gc-dlq-value-sha256``,
``gc-dlq-headers-dropped`` (and ``gc-dlq-key-sha256`` for a key over 1 KiB, dropped) say so
(``greenchannel dlq replay`` skips such a dead letter: ``truncated``) (source coordinates and
reason stay).
A receipt over it is an internal error (dead-lettered instead).

A record is final only once every write it made is acknowledged; a write that cannot be made
(the engine stops while it waits for a retry, a fatal failure) leaves it unfinished, so it is
handed back uncommitted and redelivered (the bureau deduplicates by idempotency key).
"""

from __future__ import annotations

import logging
import queue
import threading
import traceback
from collections.abc import Callable
from typing import Any

from gateway.avro.codec import Codec
from gateway.deadletters.headers import bounded_dead_letter, dead_letter_headers, iso
from gateway.delivery.city import Attempts, Result, response_excerpt
from gateway.delivery.flow import Flow
from gateway.delivery.writes import WRITE_BACKOFF_S, AsyncProducer, WriteGroup, Writes
from gateway.errors import FatalError, OversizedRecord, RecordError, RejectedByBureau
from gateway.kafka.clients import Headers, Record
from gateway.ops.observer import Observer
from gateway.pii import mask_text, trim

log = logging.getLogger(__name__)
INTERNAL = "internal_error"
RECORD_OVERHEAD_BYTES = 256
"""Per-record framing a broker counts besides key, value and headers (batch header included)."""
KEPT_PREFIX_BYTES = 1024
Deliver = Callable[[Any, Attempts], Result]
"""Delivers one item (an escalation, a handling result): ``CityDelivery.deliver``."""


class Outcomes:
    """Decode -> deliver -> receipt or dead letter, for one city's records."""

    def __init__(
        self,
        city: str,
        deliver: Deliver,
        codec: Codec,
        producer: AsyncProducer,
        flow: Flow,
        observer: Observer,
        *,
        clock: Callable[[], float],
        stop: threading.Event,
        write_backoff_s: tuple[float, float] = WRITE_BACKOFF_S,
        max_record_bytes: Callable[[str], int] = lambda topic: 1_000_000,
        on_fatal: Callable[[FatalError], None] = lambda exc: None,
        writes: Writes | None = None,
    ) -> None:
        self.city = city
        self.deliver = deliver
        self.codec = codec
        self.flow = flow
        self.kind = flow.kind
        self.observer = observer
        self.clock = clock
        self.stop = stop
        self.max_record_bytes = max_record_bytes
        self.writes = writes or Writes(
            producer, observer, stop=stop, backoff_s=write_backoff_s, on_fatal=on_fatal
        )

    def start(self, record: Record, done: Callable[[bool], None]) -> None:
        """Deliver one record and send its outcome; ``done(True)`` once that is final and
        acknowledged, ``done(False)`` when it is not final (stop, a write that cannot be made);
        exactly once, on any thread. Never raises (but for BaseExceptions such as
        KeyboardInterrupt)."""
        group = WriteGroup(done)
        final = False
        try:
            final = self._handle(record, group)
        finally:
            group.settle(final)

    def handle(self, record: Record) -> bool:
        """:meth:`start`, waiting for the outcome: True when final and written (tools, tests)."""
        box: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self.start(record, box.put)
        return box.get()

    def _handle(self, record: Record, group: WriteGroup) -> bool:
        item: Any = None
        attempts = Attempts()
        try:
            try:
                item = self.kind.item(self.codec.decode_as(self.kind.schema, record.value or b""))
            except RecordError as exc:
                self._dead_letter(group, record, exc, exc.reason, None, attempts)
                return True
            result = self.deliver(item, attempts)
            if not result.final:
                return False
            self._final(group, record, item, result)
            return True
        except Exception as exc:
            return self._internal_error(group, record, exc, item, attempts)

    def _internal_error(
        self, group: WriteGroup, record: Record, exc: Exception, esc: Any, attempts: Attempts
    ) -> bool:
        """Dead-letter a record whose handling raised something unexpected."""
        self.observer.on_delivery_internal_error(self.city)
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        log.error(
            "%s: internal error delivering %s:%d:%d: %s: %s (at %s); dead-lettering it",
            self.city,
            record.topic,
            record.partition,
            record.offset,
            type(exc).__name__,
            trim(mask_text(str(exc), self._known_pii(esc)), 200),
            ", ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in where) or "?",
        )
        try:
            self._dead_letter(group, record, exc, INTERNAL, esc, attempts)
            return True
        except Exception as again:  # the dead letter itself cannot be built: not final
            log.error(
                "%s: cannot dead-letter %s:%d:%d: %s",
                self.city,
                record.topic,
                record.partition,
                record.offset,
                type(again).__name__,
            )
            return False

    # -- outcomes -----------------------------------------------------------------------------
    def _final(self, group: WriteGroup, record: Record, item: Any, result: Result) -> None:
        latency = self.clock() - self.kind.since_ms(item) / 1000
        if not result.accepted:
            error = RejectedByBureau(
                f"{self.city} rejected the {self.kind.schema}: {result.detail}",
                reason=result.reason or "rejected",
            )
            self._dead_letter(group, record, error, error.reason, item, result.attempts)
        self._receipt(group, item, result, latency)
        accepted = result.accepted
        group.on_written.append(
            lambda: self.kind.on_final(self.observer, self.city, accepted, latency)
        )

    def _receipt(self, group: WriteGroup, item: Any, result: Result, latency_s: float) -> None:
        now_ms = int(self.clock() * 1000)
        escalation_id, complaint_id = self.kind.receipt_ids(item)
        receipt = {
            "escalation_id": escalation_id,
            "complaint_id": complaint_id,
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
        key, headers = self.kind.receipt_key(item)
        topic = self.flow.receipts
        size, limit = record_size(key, value, headers), self.max_record_bytes(topic)
        if size > limit:
            raise OversizedRecord(f"receipt is {size} bytes, over {topic}'s limit of {limit}")
        self.writes.send(group, self.city, "receipt", topic, value, key, headers)

    def _dead_letter(
        self,
        group: WriteGroup,
        record: Record,
        error: BaseException,
        reason: str,
        item: Any,
        attempts: Attempts,
    ) -> None:
        known = self._known_pii(item)
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
            stage=self.flow.dead_letter_stage,
            error=error,
            reason=reason,
            now_ms=int(self.clock() * 1000),
            extra=extra,
            known_pii=known,
        )
        topic = self.flow.dead_letters
        out: Headers = headers
        key, value = record.key, record.value or b""
        limit = self.max_record_bytes(topic)
        if record_size(key, value, headers) > limit:
            key, value, out = bounded(key, value, headers, limit)
        count = attempts.count

        def written() -> None:
            self.observer.on_delivery_dead_lettered(self.city, reason)
            log.warning(
                "%s: dead-lettered a record (%s)",
                self.city,
                self.kind.schema,
                extra={
                    "city": self.city,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": reason,
                    "attempts": count,
                },
            )

        self.writes.send(group, self.city, "dead_letter", topic, value, key, out, written)

    def _known_pii(self, item: Any) -> list[str | None]:
        return [] if item is None else self.kind.known_pii(item)


def record_size(key: bytes | None, value: bytes, headers: Headers) -> int:
    """What the broker counts against ``max.message.bytes`` (an upper estimate)."""
    framing = RECORD_OVERHEAD_BYTES + 8 * len(headers)
    return framing + len(key or b"") + len(value) + sum(len(k) + len(v) for k, v in headers)


def bounded(
    key: bytes | None, value: bytes, headers: Headers, limit: int
) -> tuple[bytes | None, bytes, Headers]:
    """A dead letter under ``limit``: bounded as the router bounds its own
    (:func:`~gateway.deadletters.headers.bounded_dead_letter`: gc-dlq-* headers and
    ``gc-replay-count`` only, the value's size and SHA-256, a long key replaced by its SHA-256
    header), keeping the longest prefix of the value that fits, at most ``KEPT_PREFIX_BYTES``."""
    key, _, own = bounded_dead_letter(key, value, headers, max_value_bytes=0)
    keep = max(0, min(KEPT_PREFIX_BYTES, limit - record_size(key, b"", own) - 512))
    return key, value[:keep], own
