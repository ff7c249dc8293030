"""Decoded Avro escalation (dict) -> the SDK's typed :class:`~gateway.sdk.Escalation`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidComplaint
from gateway.sdk import Consumer, Escalation, Merchant


def _ms(value: Any) -> int:
    # The codec reads timestamp-millis as plain int epoch milliseconds (logical types stripped).
    return int(value)


def to_escalation(record: Mapping[str, Any]) -> Escalation:
    try:
        consumer = record["consumer"]
        merchant = record["merchant"]
        return Escalation(
            escalation_id=record["escalation_id"],
            complaint_id=record["complaint_id"],
            city=record["city"],
            city_code=record["city_code"],
            created_at_ms=_ms(record["created_at"]),
            received_at_ms=_ms(record["received_at"]),
            handling_deadline_ms=_ms(record["handling_deadline"]),
            channel=record["channel"],
            rule_id=record["rule_id"],
            consumer=Consumer(
                consumer["name"],
                consumer["phone"],
                consumer.get("id_number"),
                consumer.get("address"),
                consumer.get("email"),
            ),
            merchant=Merchant(
                merchant["merchant_id"], merchant["name"], merchant.get("credit_code")
            ),
            order_id=record.get("order_id"),
            amount_fen=record.get("amount_fen"),
            product_category=record["product_category"],
            category=record["category"],
            description=record["description"],
            severity=tuple(record.get("severity") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidComplaint(f"escalation record is missing or has a bad field: {exc}") from exc
