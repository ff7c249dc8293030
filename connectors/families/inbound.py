"""Shared pieces of the connectors' inbound side: status codes and event times. Pure.

A bureau reports a case's progress in its own words; :class:`StatusCodes` maps them to the
gateway's ``CaseStatus`` / ``ReturnReason`` / ``Closure`` symbols (``gateway/sdk.py``). The
family defaults below are the codes of the bureaus' case-update interfaces (``docs/cases.md``);
a city with other codes passes its own mapping. An unknown status is passed on as ``UNKNOWN``
(the case keeper refuses and dead-letters it: a bureau speaking a new word is visible, never
guessed); an unknown reason or closure becomes ``OTHER``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from connectors.families.common import CST, JsonValue, iso_local, yuan
from gateway.sdk import CaseEvent, HandlingResult

DEFAULT_STATES = {
    "accepted": "ACCEPTED",
    "returned": "RETURNED",
    "negotiating": "NEGOTIATION",
    "mediating": "MEDIATION",
    "closed": "CLOSED",
}
DEFAULT_REASONS = {
    "missing_elements": "MISSING_ELEMENTS",
    "unclear": "UNCLEAR",
    "wrong_type": "WRONG_TYPE",
    "duplicate": "DUPLICATE",
    "withdrawn": "WITHDRAWN",
    "not_jurisdiction": "NOT_JURISDICTION",
}
DEFAULT_CLOSURES = {
    "settled": "SETTLED",
    "not_settled": "NOT_SETTLED",
    "withdrawn": "WITHDRAWN",
    "terminated": "TERMINATED",
}
SKEW_S = 300.0
"""How far a callback's signed timestamp may be from the receiver's clock."""


@dataclass(frozen=True, slots=True)
class StatusCodes:
    states: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STATES))
    reasons: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_REASONS))
    closures: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CLOSURES))

    def event(
        self,
        *,
        escalation_id: str,
        status: str,
        occurred_at_ms: int,
        case_number: str = "",
        reason: str = "",
        result: str = "",
        ref: str = "",
        note: str = "",
    ) -> CaseEvent:
        if not escalation_id:
            raise ValueError("event without an escalation id")
        state = self.states.get(status, "UNKNOWN")
        return CaseEvent(
            escalation_id=escalation_id,
            state=state,
            occurred_at_ms=occurred_at_ms,
            case_number=case_number or None,
            return_reason=self.reasons.get(reason, "OTHER") if reason else None,
            closure=self.closures.get(result, "OTHER") if result else None,
            bureau_ref=ref or None,
            note=note or None,
        )


def event_time_ms(text: str) -> int:
    """An event time as bureaus send it: epoch milliseconds, ISO 8601 (offset or CST), or
    ``yyyy-MM-dd HH:mm:ss`` CST."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"unreadable event time {value[:40]!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=CST)
    return int(parsed.timestamp() * 1000)


def signed_time_ms(text: str) -> int:
    """A signed timestamp in epoch seconds or milliseconds (by magnitude)."""
    if not text.isdigit():
        raise ValueError("timestamp is not a number")
    value = int(text)
    return value * 1000 if value < 100_000_000_000 else value


def same(expected: str, given: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(expected.encode(), given.encode())


def json_event(codes: StatusCodes, event: object) -> CaseEvent:
    """One JSON case-update event (shared with the OAuth2+JSON family's poll answers)."""
    if not isinstance(event, Mapping):
        raise ValueError("event is not an object")

    def text(key: str) -> str:
        value = event.get(key)
        return "" if value is None else str(value)

    return codes.event(
        escalation_id=text("idempotency_key"),
        status=text("status"),
        occurred_at_ms=event_time_ms(text("time")),
        case_number=text("case_no"),
        reason=text("reason"),
        result=text("result"),
        ref=text("event_id"),
        note=text("remark"),
    )


def result_fields(result: HandlingResult) -> dict[str, str]:
    """A handling result as flat text fields (forms, SOAP), empty values included."""
    return {
        "result_id": result.result_id,
        "out_id": result.escalation_id,
        "case_no": result.case_number or "",
        "contacted_at": iso_local(result.contacted_at_ms),
        "method": result.method.lower(),
        "settled": "1" if result.settled else "0",
        "refund": yuan(result.refund_fen),
        "compensation": yuan(result.compensation_fen),
        "satisfaction": result.satisfaction.lower(),
        "note": result.note or "",
    }


def result_body(result: HandlingResult) -> dict[str, JsonValue]:
    """A handling result as a JSON object (JSON+HMAC and OAuth2+JSON families)."""
    return {
        "idempotency_key": result.result_id,
        "complaint_ref": result.escalation_id,
        "case_no": result.case_number or "",
        "contacted_at": iso_local(result.contacted_at_ms),
        "method": result.method.lower(),
        "settled": result.settled,
        "refund": yuan(result.refund_fen),
        "compensation": yuan(result.compensation_fen),
        "satisfaction": result.satisfaction.lower(),
        "note": result.note or "",
    }
