"""One error taxonomy for the whole gateway.

Every failure the gateway can meet is one of three kinds, and the kind decides what happens
(the per-stage table, with exit codes, is ``docs/errors.md``)::

    GreenChannelError
    ├── RecordError            per-record: this record can never succeed -> dead-letter it, go on
    │   ├── DecodeError        bytes are not a valid message in any known wire format
    │   │   ├── OversizedRecord        larger than the configured cap (checked before decoding)
    │   │   ├── UnknownSchema          unknown fingerprint / registry schema id
    │   │   └── TrailingBytes          the body did not consume the whole buffer
    │   ├── InvalidComplaint   decoded, but required business data is missing or wrong
    │   │   ├── UnknownCity            city code is not a GB/T 2260 division we know
    │   │   └── ImplausibleTimestamp   a timestamp outside the configured plausible bounds
    │   ├── RecordTooLarge     an output (or its dead letter) exceeds the topic's max.message.bytes
    │   ├── BrokerRejected     the broker refused a record of a transaction (too large, invalid):
    │   │                      record-attributable, the router bisects the batch to find it
    │   ├── InternalError      an unexpected exception while handling one record (a bug or an
    │   │                      input nobody foresaw): that record is dead-lettered, reason
    │   │                      ``internal_error``, the loop goes on
    │   ├── RejectedByBureau   the bureau refused the escalation permanently
    │   ├── InboundRefused     a bureau's callback fails verification or cannot be read
    │   └── IrregularAnswer    the bureau answered, but not within bounds (answer over the size
    │                          cap, a case number missing/too long): dead-letter, never a receipt
    ├── TransientError         may succeed later -> wait with capped backoff, /readyz false, a
    │   │                      metric; resume by itself (never dead-letter)
    │   ├── BureauUnavailable  transport error, timeout, 5xx, breaker open
    │   ├── RateLimited        429 / local token bucket empty (carries retry_after)
    │   ├── KafkaUnavailable   broker unreachable, request timed out
    │   └── RegistryUnavailable  the schema registry did not answer (decoding waits)
    └── FatalError             the process cannot continue -> exit non-zero (exit code 1, 3 for
        │                      StuckError), let the supervisor restart or an operator look
        ├── ConfigError        invalid configuration, authentication or authorisation (names the key)
        ├── ConnectorError     a connector plug-in is broken or registered twice
        └── StuckError         a blocking client call outlived its watchdog deadline

Rules every loop follows: a ``RecordError`` costs one record (a dead letter with its bounded
``reason``); a ``TransientError`` is never retried in a tight loop nor counted against a record,
and never escapes a loop; a ``FatalError`` is never caught to be retried: it ends the loop and the
process exits with the code documented in ``docs/errors.md``.

Library exceptions (fastavro, kafka-python, httpx) are wrapped at the boundary with
``raise ... from exc`` so callers only ever catch these classes.
Every error carries a short machine ``reason`` (a bounded label for metrics and dead-letter
headers); the message is for humans and may be longer.
"""

from __future__ import annotations


class GreenChannelError(Exception):
    """Base of every error the gateway raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


# --- per-record ------------------------------------------------------------------------------


class RecordError(GreenChannelError):
    """This record can never be processed as it is: dead-letter it and continue."""

    reason = "invalid_record"


class DecodeError(RecordError):
    reason = "undecodable"


class OversizedRecord(DecodeError):
    reason = "oversized"


class UnknownSchema(DecodeError):
    reason = "unknown_schema"


class TrailingBytes(DecodeError):
    reason = "trailing_bytes"


class InvalidComplaint(RecordError):
    reason = "invalid_complaint"


class UnknownCity(InvalidComplaint):
    reason = "unknown_city"


class ImplausibleTimestamp(InvalidComplaint):
    reason = "implausible_timestamp"


class RecordTooLarge(RecordError):
    reason = "too_large"


class BrokerRejected(RecordError):
    """The broker refused a record of a transaction (which one is found by bisecting)."""

    reason = "broker_rejected"


class InternalError(RecordError):
    """An unexpected exception while handling one record: dead-letter that record, go on."""

    reason = "internal_error"


class InboundRefused(RecordError):
    """A bureau's callback is not taken: bad signature, stale or replayed, unreadable.

    ``reason`` is one of ``bad_signature``, ``unknown_client``, ``stale``, ``replayed``,
    ``malformed``; the receiver answers in the city's format and nothing reaches Kafka."""

    reason = "malformed"


class RejectedByBureau(RecordError):
    reason = "rejected"


class IrregularAnswer(RecordError):
    """The bureau answered, but the answer is outside what the gateway keeps (size, fields)."""

    reason = "irregular_answer"


# --- transient -------------------------------------------------------------------------------


class TransientError(GreenChannelError):
    """Might work later: retry within budget, then pause the source. Never dead-letter."""

    reason = "transient"


class BureauUnavailable(TransientError):
    reason = "unavailable"


class RateLimited(TransientError):
    reason = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KafkaUnavailable(TransientError):
    reason = "kafka_unavailable"


class RegistryUnavailable(TransientError):
    reason = "registry_unavailable"


# --- fatal -----------------------------------------------------------------------------------


class FatalError(GreenChannelError):
    """The process cannot continue safely: exit non-zero and let the supervisor restart it."""

    reason = "fatal"


class ConfigError(FatalError):
    reason = "config"


class ConnectorError(FatalError):
    reason = "connector"


class StuckError(FatalError):
    reason = "stuck"
