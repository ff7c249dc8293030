"""Helpers shared by the protocol families: time and money formats, Retry-After, answer codes.

Personal data is masked by :mod:`gateway.pii`, the gateway's one masker (:func:`detail` uses it).

Everything here is pure (no clock, no IO). Bureau local time is China Standard Time, a fixed
UTC+8 offset (no daylight saving since 1991), so no tz database is needed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import NoReturn
from urllib.parse import parse_qsl

from gateway.pii import mask_text, trim
from gateway.sdk import (
    Accepted,
    BureauRequest,
    BureauResponse,
    Irregular,
    Outcome,
    Rejected,
    RetryLater,
)

CST = timezone(timedelta(hours=8), "Asia/Shanghai")
DETAIL_LIMIT = 200
"""Longest bureau detail text kept in a Rejected outcome."""
JsonValue = str | int | float | bool | None | Mapping[str, "JsonValue"] | list["JsonValue"]


# --- formats ---------------------------------------------------------------------------------


def local_time(ms: int, fmt: str) -> str:
    """Epoch milliseconds as bureau local time (UTC+8) in a ``strftime`` format."""
    return datetime.fromtimestamp(ms / 1000, CST).strftime(fmt)


def iso_local(ms: int) -> str:
    """ISO 8601 with the +08:00 offset, second precision: ``2026-01-02T10:04:05+08:00``."""
    return datetime.fromtimestamp(ms // 1000, CST).isoformat()


def iso_utc(ms: int) -> str:
    """ISO 8601 UTC with a ``Z``: ``2026-01-02T02:04:05Z`` (WS-Security ``Created``)."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def yuan(amount_fen: int | None) -> str:
    """Fen as a yuan string with two decimals (``12345 -> "123.45"``); ``""`` when unknown."""
    if amount_fen is None:
        return ""
    sign = "-" if amount_fen < 0 else ""
    whole, cents = divmod(abs(amount_fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sm3_hex(data: bytes) -> str:
    """SM3 (GB/T 32905-2016) digest in lower-case hex, through OpenSSL 3."""
    return hashlib.new("sm3", data).hexdigest()


def dump_json(body: Mapping[str, JsonValue]) -> bytes:
    """Compact UTF-8 JSON in insertion order: the same mapping always gives the same bytes."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- personal data and trimming --------------------------------------------------------------
# One masker for the whole gateway: gateway.pii (trim, mask_name, mask_text). Bureau details
# are masked for patterns here already; the engine masks the record's known values on top.


def detail(text: str) -> str:
    """A bureau's own message as a Rejected detail: masked, one line, ``DETAIL_LIMIT`` long."""
    return trim(mask_text(text), DETAIL_LIMIT)


# --- Retry-After -----------------------------------------------------------------------------


def parse_retry_after(value: str | None, date: str | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110: delay-seconds or HTTP-date).

    An HTTP-date is measured against the response's own ``Date`` header (so this stays pure and
    immune to clock skew); without a usable ``Date`` it gives ``None``, as does anything
    unparseable. Negative or past values give ``0.0``. The engine caps the result.
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _retry_after_date(text, date)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _retry_after_date(text: str, date: str | None) -> float | None:
    try:
        target = parsedate_to_datetime(text)
        now = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None
    if now is None or target.tzinfo is None or now.tzinfo is None:
        return None
    return max((target - now).total_seconds(), 0.0)


def retry_after(response: BureauResponse) -> float | None:
    return parse_retry_after(response.headers.get("retry-after"), response.headers.get("date"))


def http_outcome(response: BureauResponse) -> Outcome | None:
    """The outcome every family gives 408, 429 and 5xx; ``None`` for anything else."""
    if response.status == 429:
        return RetryLater("rate_limited", retry_after=retry_after(response))
    if response.status == 408:
        return RetryLater("timeout")
    if response.status >= 500:
        return RetryLater("server_error", retry_after=retry_after(response))
    return None


def http_rejected(response: BureauResponse) -> Rejected:
    """A 4xx no family has a better reading for: permanent."""
    body = response.body[:DETAIL_LIMIT].decode("utf-8", "replace")
    return Rejected(f"http_{response.status}", detail(body))


# --- answer codes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnswerCodes:
    """Where a bureau answer keeps its result code, message and case number, and what codes mean.

    Field names are dotted paths into nested JSON (``"data.slbh"``) or plain names for flat
    answers (form, SOAP). Codes are compared as strings. A code in none of the sets is a
    permanent business rejection.
    """

    code_field: str
    case_field: str
    message_field: str
    ok: frozenset[str]
    duplicate: frozenset[str] = frozenset()
    busy: frozenset[str] = frozenset()
    auth: frozenset[str] = frozenset()

    def outcome(self, answer: Mapping[str, object]) -> Outcome:
        code = _text(lookup(answer, self.code_field))
        if code in self.ok or code in self.duplicate:
            return accepted(lookup(answer, self.case_field))
        if code in self.busy:
            return RetryLater("busy")
        if code in self.auth:
            return RetryLater("auth")
        message = _text(lookup(answer, self.message_field))
        return Rejected("business_rule", detail(f"{code} {message}".strip()))


MISSING_CASE_NUMBER = Irregular("missing_case_number", "a success answer without a case number")
TOO_DEEP = Irregular("answer_too_deep", "JSON nested deeper than the parser goes")


def accepted(case_number: object) -> Outcome:
    """Accepted with the case number; an irregular answer when a success answer lacks it (or
    holds an object or a list there): the bureau would answer a retry the same way."""
    text = _text(case_number)
    return Accepted(text) if text else MISSING_CASE_NUMBER


def lookup(answer: Mapping[str, object], path: str) -> object:
    """Follow a dotted path through nested mappings; ``None`` when any step is missing."""
    node: object = answer
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _text(value: object) -> str:
    if value is None or isinstance(value, Mapping | list):
        return ""
    return str(value).strip()


def json_document(body: bytes) -> Mapping[str, object] | Irregular | None:
    """A JSON object body; :data:`TOO_DEEP` for JSON nested beyond the parser's recursion
    limit (well-formed, but nothing a bureau sends by mistake); ``None`` for anything else
    that is not a JSON object (HTML, truncated, not UTF-8, an array)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except RecursionError:
        return TOO_DEEP
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def json_answer(body: bytes) -> Mapping[str, object] | None:
    """A JSON object body, or ``None`` when the body is not one (too deep included)."""
    data = json_document(body)
    return None if isinstance(data, Irregular) else data


def form_answer(body: bytes) -> Mapping[str, object] | None:
    """An ``application/x-www-form-urlencoded`` body as a flat mapping."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


class NoToken:
    """Mixin for families without OAuth2: the token hooks are never called."""

    __slots__ = ()

    def token_request(self, ctx: object) -> BureauRequest:
        _no_token()

    def interpret_token(self, response: BureauResponse) -> tuple[str, float]:
        _no_token()


def _no_token() -> NoReturn:
    raise NotImplementedError("this connector has no token_grant; the engine must not ask")


def interpret_json(response: BureauResponse, codes: AnswerCodes, auth: Outcome) -> Outcome:
    """The reading shared by the JSON families.

    401/403 -> ``auth`` (the family decides); 409 -> Accepted with the case number in the body;
    408/429/5xx -> RetryLater; 2xx -> the body's result code; 400/422 with a readable body ->
    its result code (a business rejection unless the code says otherwise); other 4xx -> Rejected.
    A 2xx whose body cannot be read is retried: the idempotency key makes that safe. A success
    (or 409) without a case number, and a 2xx/409 nested too deep to parse, are irregular.
    """
    if response.status in (401, 403):
        return auth
    document = json_document(response.body)
    if isinstance(document, Irregular):
        if 200 <= response.status < 300 or response.status == 409:
            return document
        document = None
    answer = document
    if response.status == 409:
        return accepted(lookup(answer, codes.case_field)) if answer else RetryLater("conflict")
    transient = http_outcome(response)
    if transient is not None:
        return transient
    if 200 <= response.status < 300:
        return codes.outcome(answer) if answer is not None else RetryLater("unreadable_answer")
    return _json_client_error(response, codes, answer)


def _json_client_error(
    response: BureauResponse, codes: AnswerCodes, answer: Mapping[str, object] | None
) -> Outcome:
    if response.status in (400, 422) and answer is not None:
        outcome = codes.outcome(answer)
        return http_rejected(response) if isinstance(outcome, Accepted) else outcome
    if 400 <= response.status < 500:
        return http_rejected(response)
    return RetryLater("unexpected_status")
