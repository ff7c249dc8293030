"""Suzhou Administration for Market Regulation, 12315 case API (OAuth2 + JSON).

Token: ``POST /oauth/token`` (client credentials, HTTP Basic, no scope).
Request: ``POST /sz12315/v1/cases`` on the :mod:`connectors.families.oauth_json` family with
``Authorization: Bearer`` and ``Idempotency-Key: <escalation_id>``.

Body (snake_case)::

    out_case_no             escalation_id
    complainant_name        consumer.name
    complainant_mobile      consumer.phone
    enterprise_name         merchant.name
    enterprise_credit_code  merchant.credit_code, or ""
    order_no                order_id, or ""
    amount                  amount_fen as yuan, "128.50", or ""
    case_type               CATEGORIES[category] (unknown -> "T99")
    content                 description
    occur_at                received_at, epoch **seconds**
    expected_finish         handling_deadline, yyyy-MM-dd, Asia/Shanghai

Answer (always HTTP 200 except auth): ``{"code": "200", "message": "ok", "data": {"case_no":
"..."}}``. Codes: 200 accepted, 40901 duplicate (same case_no), 50301 busy, 40001 invalid
field, 40002 unknown type, 40301 refused. HTTP 401 means the token expired (re-authenticate).
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, JsonValue, local_time, yuan
from connectors.families.oauth_json import OAuthJsonConnector
from gateway.sdk import Escalation, TokenGrant, TransportPolicy

CATEGORIES = {
    "QUALITY": "T01",
    "SAFETY": "T02",
    "FRAUD": "T03",
    "FALSE_ADVERTISING": "T04",
    "REFUND": "T05",
    "DELIVERY": "T06",
    "SERVICE": "T07",
    "PRICE": "T08",
    "PRIVACY": "T09",
    "OTHER": "T99",
}


def body(e: Escalation) -> dict[str, JsonValue]:
    return {
        "out_case_no": e.escalation_id,
        "complainant_name": e.consumer.name,
        "complainant_mobile": e.consumer.phone,
        "enterprise_name": e.merchant.name,
        "enterprise_credit_code": e.merchant.credit_code or "",
        "order_no": e.order_id or "",
        "amount": yuan(e.amount_fen),
        "case_type": CATEGORIES.get(e.category, CATEGORIES["OTHER"]),
        "content": e.description,
        "occur_at": e.received_at_ms // 1000,
        "expected_finish": local_time(e.handling_deadline_ms, "%Y-%m-%d"),
    }


connector = OAuthJsonConnector(
    name="suzhou",
    transport=TransportPolicy(min_tls="TLSv1.2"),
    city_code="320500",
    path="/sz12315/v1/cases",
    body=body,
    token_grant=TokenGrant(path="/oauth/token"),
    codes=AnswerCodes(
        code_field="code",
        case_field="data.case_no",
        message_field="message",
        ok=frozenset({"200"}),
        duplicate=frozenset({"40901"}),
        busy=frozenset({"50301"}),
    ),
)
