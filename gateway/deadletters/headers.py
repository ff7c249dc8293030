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

A dead letter that would itself be larger than the dead-letter topic takes (a ~1 MB value plus
these headers, a record with a 1 MB header) is *bounded* instead (:func:`bounded_dead_letter`):
it keeps the ``gc-dlq-*`` headers above (source coordinates, reason...) and ``gc-replay-count``,
drops the original headers, keeps only a prefix of the value, and says so::

    gc-dlq-truncated        "true": the value is only a prefix; the record cannot be replayed
    gc-dlq-value-bytes      the original value's length
    gc-dlq-value-sha256     hex SHA-256 of the original value (to match it upstream)
    gc-dlq-headers-dropped  how many original headers were dropped
    gc-dlq-key-sha256       only when the key was dropped too (longer than 1 KiB)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal

from gateway.kafka.clients import Headers, Record
from gateway.pii import mask_text, trim

PREFIX = "gc-dlq-"
REPLAY_COUNT = "gc-replay-count"
TRUNCATED = PREFIX + "truncated"
VALUE_BYTES = PREFIX + "value-bytes"
VALUE_SHA256 = PREFIX + "value-sha256"
HEADERS_DROPPED = PREFIX + "headers-dropped"
KEY_SHA256 = PREFIX + "key-sha256"
MAX_KEPT_KEY = 1024
"""A bounded dead letter keeps a key up to this long (and its hash otherwise)."""


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


def bounded_dead_letter(
    key: bytes | None,
    value: bytes,
    headers: Headers,
    *,
    max_value_bytes: int,
) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    """A dead letter that cannot be too large: ``headers`` reduced to the ``gc-dlq-*`` ones (and
    ``gc-replay-count``), the value cut to ``max_value_bytes``, the truncation headers added
    (see the module docstring). ``headers`` are a dead letter's, from :func:`dead_letter_headers`.
    """
    kept = [
        (k, v) for k, v in headers if k.startswith(PREFIX) or (k == REPLAY_COUNT and len(v) <= 20)
    ]
    dropped = len(headers) - len(kept)
    kept += [
        (TRUNCATED, b"true"),
        (VALUE_BYTES, str(len(value)).encode()),
        (VALUE_SHA256, hashlib.sha256(value).hexdigest().encode()),
        (HEADERS_DROPPED, str(dropped).encode()),
    ]
    if key is not None and len(key) > MAX_KEPT_KEY:
        kept.append((KEY_SHA256, hashlib.sha256(key).hexdigest().encode()))
        key = None
    return key, value[: max(0, max_value_bytes)], kept


def is_truncated(headers: Headers) -> bool:
    """Whether a dead letter is bounded (:func:`bounded_dead_letter`): not replayable."""
    return any(k == TRUNCATED for k, _ in headers)


def headers_dict(headers: Headers) -> dict[str, str]:
    """Last value of each header, decoded as UTF-8 (replacement on bad bytes)."""
    return {k: v.decode("utf-8", "replace") for k, v in headers}


def replay_count(headers: Headers) -> int:
    value = headers_dict(headers).get(REPLAY_COUNT, "0")
    return int(value) if value.isdigit() else 0
