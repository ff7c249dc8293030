"""A fixed escalation and request context for connector unit tests (explicit expected values)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.sdk import Consumer, Credentials, Escalation, Merchant, RequestContext

RECEIVED_MS = 1_767_319_445_000
"""2026-01-02 10:04:05 in Asia/Shanghai (02:04:05 UTC)."""
DEADLINE_MS = 1_768_557_600_000
"""2026-01-16 18:00:00 in Asia/Shanghai."""
NOW_MS = RECEIVED_MS + 60_000

BASE = Escalation(
    escalation_id="esc-7f3a9c2e",
    complaint_id="cmp-1001",
    city="beijing",
    city_code="110000",
    created_at_ms=RECEIVED_MS + 30_000,
    received_at_ms=RECEIVED_MS,
    handling_deadline_ms=DEADLINE_MS,
    channel="APP",
    rule_id="R-SAFETY-01",
    consumer=Consumer(
        name="王小明",
        phone="13812345678",
        id_number="11010119900307663X",
        address="北京市朝阳区建国路88号",
        email="xm.wang@example.org",
    ),
    merchant=Merchant("m-1001", "某某电器专营店", "91110105MA01ABCD2X"),
    order_id="o-20260102-77",
    amount_fen=12850,
    product_category="ELECTRONICS",
    category="SAFETY",
    description="充电宝使用中起火，烧伤手部。",
    severity=("safety_hazard", "injury"),
)


def escalation(**changes: Any) -> Escalation:
    return replace(BASE, **changes)


def context(bearer: str | None = None, secret: str = "s3cret") -> RequestContext:
    return RequestContext(
        now_ms=NOW_MS,
        nonce="0123456789abcdef",
        credentials=Credentials("greenchannel-test", secret),
        bearer_token=bearer,
    )
