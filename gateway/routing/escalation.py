"""Building an Escalation from a major complaint (pure functions)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from gateway.cases.calendar import WorkingCalendar
from gateway.cases.calendar import current as current_calendar
from gateway.ids import uuid5_str
from gateway.routing.rules import SIGNALS

_NAMESPACE = uuid.UUID("8a6f3f0e-2c1b-5d8e-9a47-12315c0ffee0")


def escalation_id(complaint_id: str, city: str) -> str:
    """Stable id per (complaint, city): the bureau's idempotency key, the same on every retry,
    redelivery and replay, so a bureau never opens a second case for one complaint."""
    return uuid5_str(_NAMESPACE, f"{complaint_id}/{city}")


def handling_deadline_ms(
    received_ms: int, working_days: int, calendar: WorkingCalendar | None = None
) -> int:
    """``working_days`` working days after receipt (12315 ODR) on the official calendar
    (statutory holidays off, make-up working days on; ``gateway.cases.calendar``), at the same
    time of day (China Standard Time). Two table reads: this is on the router's hot path."""
    return (calendar or current_calendar()).deadline_ms(received_ms, working_days)


def build_escalation(
    complaint: Mapping[str, Any],
    *,
    city: str,
    rule_id: str,
    now_ms: int,
    working_days: int,
) -> dict[str, Any]:
    """The Avro record (``schemas/escalation.avsc``) for a major complaint of a green city."""
    order = complaint["order"]
    signals = complaint["signals"]
    severity = [name for name in SIGNALS if signals[name]]
    if signals["repeat_count"]:
        severity.append(f"repeat_count={signals['repeat_count']}")
    received = _millis(complaint["received_at"])
    return {
        "escalation_id": escalation_id(complaint["complaint_id"], city),
        "complaint_id": complaint["complaint_id"],
        "city": city,
        "city_code": complaint["city_code"],
        "created_at": now_ms,
        "received_at": received,
        "handling_deadline": handling_deadline_ms(received, working_days),
        "channel": complaint["channel"],
        "rule_id": rule_id,
        "consumer": complaint["consumer"],
        "merchant": complaint["merchant"],
        "order_id": order["order_id"] if order else None,
        "amount_fen": order["amount_fen"] if order else None,
        "product_category": complaint["product_category"],
        "category": complaint["category"],
        "description": complaint["description"],
        "severity": severity,
    }


def _millis(value: Any) -> int:
    """Epoch milliseconds: the codec decodes ``timestamp-millis`` as int (logical types
    stripped), never as datetime."""
    return int(value)
