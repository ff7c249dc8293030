"""One record's way through delivery, and the one place its outcome is written.

:class:`Outcomes` takes a record from a lane worker and returns True once its outcome is final
and acknowledged by Kafka (the engine may then commit past it). What the record is (an
escalation, a handling result) and where its outcomes go are the engine's
:class:`~gateway.delivery.flow.Flow`:

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

A receipt or dead-letter *write* that fails for a transient or record-level reason (broker
away, a timeout, a record the broker refuses) is retried with capped exponential backoff
(``WRITE_BACKOFF_S``) until it succeeds or the engine stops: it holds only the worker that
carries that record (the commit point of its partition waits; the engine's progress check
turns ``/healthz`` unhealthy if it never succeeds), never another city, never the process. On
stop the record is not final: it is handed back uncommitted and redelivered (the bureau
deduplicates by idempotency key).

A write that fails *fatally* is never retried: a :class:`~gateway.errors.FatalError` from the
producer (authorisation, fencing, an unexpected non-retriable error), or a producer left in a
fatal state (kafka-python's idempotent producer after a broker refusal such as
``MessageSizeTooLarge``: every later send would fail the same way, forever). ``on_fatal`` is
called (the engine stops and the process exits 1, ``docs/errors.md``); the record stays
unfinished, so nothing is committed past it and it is delivered again after the restart.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import Any

from gateway.avro.codec import Codec
from gateway.deadletters.headers import bounded_dead_letter, dead_letter_headers, iso
from gateway.delivery.city import Attempts, Result, response_excerpt
from gateway.delivery.flow import Flow
from gateway.errors import (
    BrokerRejected,
    FatalError,
    OversizedRecord,
    RecordError,
    RejectedByBureau,
)
from gateway.kafka.clients import Headers, Producer, Record
from gateway.ops.observer import Observer
from gateway.pii import mask_text, trim

log = logging.getLogger(__name__)
ACK_TIMEOUT_S = 60.0
WRITE_BACKOFF_S = (0.2, 30.0)
"""First and longest wait between two tries of a failed receipt / dead-letter write."""
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
        producer: Producer,
        flow: Flow,
        observer: Observer,
        *,
        clock: Callable[[], float],
        stop: threading.Event,
        write_backoff_s: tuple[float, float] = WRITE_BACKOFF_S,
        max_record_bytes: Callable[[str], int] = lambda topic: 1_000_000,
        on_fatal: Callable[[FatalError], None] = lambda exc: None,
    ) -> None:
        self.city = city
        self.deliver = deliver
        self.codec = codec
        self.producer = producer
        self.flow = flow
        self.kind = flow.kind
        self.observer = observer
        self.clock = clock
        self.stop = stop
        self.write_backoff_s = write_backoff_s
        self.max_record_bytes = max_record_bytes
        self.on_fatal = on_fatal

    def handle(self, record: Record) -> bool:
        """Deliver one record; True when its outcome is final and written. Never raises
        (but for BaseExceptions such as KeyboardInterrupt)."""
        item: Any = None
        attempts = Attempts()
        try:
            try:
                item = self.kind.item(self.codec.decode_as(self.kind.schema, record.value or b""))
            except RecordError as exc:
                return self._dead_letter(record, exc, exc.reason, None, attempts)
            result = self.deliver(item, attempts)
            if not result.final:
                return False
            return self._final(record, item, result)
        except Exception as exc:
            return self.internal_error(record, exc, item, attempts)

    def internal_error(self, record: Record, exc: Exception, esc: Any, attempts: Attempts) -> bool:
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
            return self._dead_letter(record, exc, INTERNAL, esc, attempts)
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
    def _final(self, record: Record, item: Any, result: Result) -> bool:
        latency = self.clock() - self.kind.since_ms(item) / 1000
        if not result.accepted:
            error = RejectedByBureau(
                f"{self.city} rejected the {self.kind.schema}: {result.detail}",
                reason=result.reason or "rejected",
            )
            if not self._dead_letter(record, error, error.reason, item, result.attempts):
                return False
        if not self._receipt(item, result, latency):
            return False
        self.kind.on_final(self.observer, self.city, result.accepted, latency)
        return True

    def _receipt(self, item: Any, result: Result, latency_s: float) -> bool:
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
        return self._write("receipt", topic, value, key, headers)

    def _dead_letter(
        self,
        record: Record,
        error: BaseException,
        reason: str,
        item: Any,
        attempts: Attempts,
    ) -> bool:
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
        if not self._write("dead_letter", topic, value, key, out):
            return False
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
                "attempts": attempts.count,
            },
        )
        return True

    def _write(
        self, kind: str, topic: str, value: bytes, key: bytes | None, headers: Headers
    ) -> bool:
        """Send and wait for the ack, retrying transient and record-level failures with capped
        backoff; False on stop, or (after ``on_fatal``) on a fatal failure."""
        wait, longest = self.write_backoff_s
        while True:
            try:
                self.producer.send_and_wait(
                    topic, value, key=key, headers=headers, timeout_s=ACK_TIMEOUT_S
                )
                return True
            except Exception as exc:  # broker errors are wrapped; anything else is retried too
                self.observer.on_outcome_write_failed(self.city, kind)
                fatal = self._fatal(exc)
                if fatal is not None:
                    log.critical(
                        "%s: %s write to %s failed fatally (%s); stopping delivery (exit 1): "
                        "the record stays uncommitted and is delivered again after the restart",
                        self.city,
                        kind.replace("_", " "),
                        topic,
                        trim(str(fatal), 300),
                    )
                    self.on_fatal(fatal)
                    return False
                log.warning(
                    "%s: %s write to %s failed (%s: %s); retrying in %.1fs",
                    self.city,
                    kind.replace("_", " "),
                    topic,
                    type(exc).__name__,
                    trim(str(exc), 200),
                    wait,
                )
            if self.stop.wait(wait):
                return False
            wait = min(wait * 2, longest)

    def _known_pii(self, item: Any) -> list[str | None]:
        return [] if item is None else self.kind.known_pii(item)

    def _fatal(self, exc: Exception) -> FatalError | None:
        """The failure as a FatalError when retrying cannot help, else ``None``."""
        state = self.producer.fatal_state()
        if state is not None:
            return FatalError(
                f"the producer is in a fatal state after {state} (last: {type(exc).__name__})"
            )
        if isinstance(exc, BrokerRejected):
            # Delivery never sends past the limits it read at start: a refusal means they
            # changed under it (or the record is malformed), and kafka-python's idempotent
            # producer is unusable after one anyway. Exit; the restart re-reads the limits.
            return FatalError(f"the broker refused the write: {exc}")
        return exc if isinstance(exc, FatalError) else None


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
