"""One error taxonomy for the whole gateway.

Every failure the gateway can meet is one of three kinds, and the kind decides what happens::

    GreenChannelError
    ├── RecordError            per-record: this record can never succeed -> dead-letter it, go on
    │   ├── DecodeError        bytes are not a valid message in any known wire format
    │   │   ├── OversizedRecord        larger than the configured cap (checked before decoding)
    │   │   ├── UnknownSchema          unknown fingerprint / registry schema id
    │   │   └── TrailingBytes          the body did not consume the whole buffer
    │   ├── InvalidComplaint   decoded, but required business data is missing or wrong
    │   │   └── UnknownCity            city code is not a GB/T 2260 division we know
    │   ├── RejectedByBureau   the bureau refused the escalation permanently
    │   └── InboundRefused     a bureau's callback fails verification or cannot be read
    ├── TransientError         may succeed later -> retry, then pause the source (never dead-letter)
    │   ├── BureauUnavailable  transport error, timeout, 5xx, breaker open
    │   ├── RateLimited        429 / local token bucket empty (carries retry_after)
    │   └── KafkaUnavailable   broker unreachable, request timed out
    └── FatalError             the process cannot continue -> shut down non-zero, let the supervisor restart
        ├── ConfigError        invalid configuration (names the bad key)
        ├── ConnectorError     a connector plug-in is broken or registered twice
        └── StuckError         a blocking client call outlived its watchdog deadline

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


class InboundRefused(RecordError):
    """A bureau's callback is not taken: bad signature, stale or replayed, unreadable.

    ``reason`` is one of ``bad_signature``, ``unknown_client``, ``stale``, ``replayed``,
    ``malformed``; the receiver answers in the city's format and nothing reaches Kafka."""

    reason = "malformed"


class RejectedByBureau(RecordError):
    reason = "rejected"


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
