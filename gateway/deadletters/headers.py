"""Dead-letter record headers (the same contract for the router and the deliverer).

A dead-letter record keeps the original value and key bytes untouched and the original headers,
and adds ``gc-dlq-*`` headers (all UTF-8 text; personal data masked)::

    gc-dlq-stage            router | delivery
    gc-dlq-source-topic     topic / partition / offset of the original record
    gc-dlq-source-partition
    gc-dlq-source-offset
    gc-dlq-error-class      e.g. UnknownSchema, RejectedByBureau
    gc-dlq-reason           bounded machine reason (also the metric label)
    gc-dlq-message          human message, masked and trimmed
    gc-dlq-time             when it was dead-lettered (ISO 8601 UTC)
    gc-dlq-city             delivery only: city key
    gc-dlq-http-status      delivery only: last HTTP status (0 = no response)
    gc-dlq-response         delivery only: bureau response body, masked and trimmed
    gc-dlq-attempts         delivery only: attempts made
    gc-dlq-first-attempt    delivery only: ISO 8601 UTC
    gc-dlq-last-attempt     delivery only: ISO 8601 UTC
    gc-replay-count         how many times this record was replayed (loop guard)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal

from gateway.kafka.clients import Headers, Record
from gateway.pii import mask_text, trim

PREFIX = "gc-dlq-"
REPLAY_COUNT = "gc-replay-count"


def iso(ms: int | None, *, precision: Literal["ms", "s"] = "ms") -> str:
    """UTC ISO 8601 of epoch milliseconds ("" for None): the gateway's one time formatter.

    ``precision="ms"``: ``2026-01-02T03:04:05.678+00:00``, the format of the dead-letter time
    headers (``gc-dlq-time``, ``gc-dlq-first-attempt``, ``gc-dlq-last-attempt``: a wire
    contract, read back with :meth:`datetime.fromisoformat`). ``precision="s"``:
    ``2026-01-02T03:04:05Z``, what the operator's dlq tool shows (``list``, ``show``).
    """
    if ms is None:
        return ""
    when = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if precision == "s":
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return when.isoformat(timespec="milliseconds")


def dead_letter_headers(
    record: Record,
    *,
    stage: str,
    error: BaseException,
    reason: str,
    now_ms: int,
    extra: Mapping[str, str] | None = None,
    known_pii: Iterable[str | None] = (),
) -> list[tuple[str, bytes]]:
    """Original headers (minus earlier gc-dlq-*) followed by fresh gc-dlq-* headers."""
    kept = [(k, v) for k, v in record.headers if not k.startswith(PREFIX)]
    fields = {
        "stage": stage,
        "source-topic": record.topic,
        "source-partition": str(record.partition),
        "source-offset": str(record.offset),
        "error-class": type(error).__name__,
        "reason": reason,
        "message": trim(mask_text(str(error), known_pii), 512),
        "time": iso(now_ms),
    }
    for key, value in (extra or {}).items():
        fields[key] = trim(mask_text(value, known_pii), 1024)
    return kept + [(PREFIX + k, v.encode("utf-8")) for k, v in fields.items()]


def headers_dict(headers: Headers) -> dict[str, str]:
    """Last value of each header, decoded as UTF-8 (replacement on bad bytes)."""
    return {k: v.decode("utf-8", "replace") for k, v in headers}


def replay_count(headers: Headers) -> int:
    value = headers_dict(headers).get(REPLAY_COUNT, "0")
    return int(value) if value.isdigit() else 0
