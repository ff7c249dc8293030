"""CaseUpdate records (``schemas/case_update.avsc``) from escalations, receipts and bureaus.

Pure. Every update of one case entering one state has the same ``update_id`` (UUIDv5 of the
escalation id and the state), however often and by whichever way it arrives: a case enters each
state at most once (the graph in :mod:`gateway.cases.machine` has no cycles), so a repeated
callback or overlapping polls produce the same update, which the keeper applies once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from gateway.ids import uuid5_str
from gateway.pii import mask_text
from gateway.sdk import CaseEvent

_NAMESPACE = uuid.UUID("3c1f0a52-9d4e-5b7a-8e21-12315ca5e000")
NOTE_MAX = 500


def update_id(escalation_id: str, state: str) -> str:
    return uuid5_str(_NAMESPACE, f"{escalation_id}/{state}")


def bureau_update(
    *,
    escalation_id: str,
    city: str,
    state: str,
    occurred_at_ms: int,
    observed_at_ms: int,
    source: str,
    case_number: str | None = None,
    return_reason: str | None = None,
    closure: str | None = None,
    bureau_ref: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """A change a bureau reported (``source`` ``CALLBACK`` or ``POLL``); the note is masked."""
    return {
        "update_id": update_id(escalation_id, state),
        "escalation_id": escalation_id,
        "city": city,
        "source": source,
        "state": state,
        "occurred_at": occurred_at_ms,
        "observed_at": observed_at_ms,
        "case_number": case_number,
        "return_reason": return_reason,
        "closure": closure,
        "complaint_id": None,
        "received_at": None,
        "handling_deadline": None,
        "bureau_ref": bureau_ref,
        "note": mask_text(note)[:NOTE_MAX] if note else None,
    }


def from_event(event: CaseEvent, *, city: str, observed_at_ms: int, source: str) -> dict[str, Any]:
    """The update of a :class:`~gateway.sdk.CaseEvent` a bureau reported by ``source``
    (``CALLBACK`` or ``POLL``), observed at ``observed_at_ms``."""
    return bureau_update(
        escalation_id=event.escalation_id,
        city=city,
        state=event.state,
        occurred_at_ms=event.occurred_at_ms,
        observed_at_ms=observed_at_ms,
        source=source,
        case_number=event.case_number,
        return_reason=event.return_reason,
        closure=event.closure,
        bureau_ref=event.bureau_ref,
        note=event.note,
    )


def from_escalation(escalation: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """The ESCALATED fact of an Escalation record (no personal data is copied)."""
    update = bureau_update(
        escalation_id=escalation["escalation_id"],
        city=escalation["city"],
        state="ESCALATED",
        occurred_at_ms=int(escalation["created_at"]),
        observed_at_ms=now_ms,
        source="ESCALATION",
    )
    update["complaint_id"] = escalation["complaint_id"]
    update["received_at"] = int(escalation["received_at"])
    update["handling_deadline"] = int(escalation["handling_deadline"])
    return update


def from_receipt(receipt: Mapping[str, Any], now_ms: int) -> dict[str, Any] | None:
    """The RECEIVED fact of an ACCEPTED DeliveryReceipt (None for a rejected delivery)."""
    if receipt["outcome"] != "ACCEPTED" or not receipt.get("case_number"):
        return None
    update = bureau_update(
        escalation_id=receipt["escalation_id"],
        city=receipt["city"],
        state="RECEIVED",
        occurred_at_ms=int(receipt["completed_at"]),
        observed_at_ms=now_ms,
        source="RECEIPT",
        case_number=receipt["case_number"],
    )
    update["complaint_id"] = receipt["complaint_id"]
    return update
