"""Hangzhou Administration for Market Regulation, open API (JSON + HMAC).

``POST /openapi/v2/complaint/submit`` on the :mod:`connectors.families.json_hmac` family
(``X-Idempotency-Key`` and ``externalNo`` carry the escalation id).

Body (nested camelCase; ``order`` only when there is an order)::

    externalNo           escalation_id
    complainant.name     consumer.name
    complainant.mobile   consumer.phone
    merchant.name        merchant.name
    merchant.creditCode  merchant.credit_code, or null
    order.orderNo        order_id
    order.amountFen      amount_fen as an integer (fen), or null
    typeCode             CATEGORIES[category] (unknown -> "QT")
    content              description
    occurTime            received_at, ISO 8601 with +08:00
    deadline             handling_deadline, yyyy-MM-dd, Asia/Shanghai
    urgent               true when any severity signal is present

Answer: ``{"resultCode": "SUCCESS", "resultMsg": "", "caseNo": "..."}``, HTTP 201 when a case
is opened. A repeated ``externalNo`` answers **HTTP 409** with ``resultCode: DUPLICATE`` and the
existing ``caseNo``. Other codes: SYSTEM_BUSY (retry), SIGN_INVALID (HTTP 401), PARAM_ERROR,
TYPE_UNKNOWN, REFUSED (permanent).
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, JsonValue, iso_local, local_time
from connectors.families.json_hmac import JsonHmacConnector
from gateway.sdk import Escalation, TransportPolicy

CATEGORIES = {
    "QUALITY": "ZL",
    "SAFETY": "AQ",
    "FRAUD": "QZ",
    "FALSE_ADVERTISING": "XJ",
    "REFUND": "TK",
    "DELIVERY": "WL",
    "SERVICE": "FW",
    "PRICE": "JG",
    "PRIVACY": "YS",
    "OTHER": "QT",
}


def body(e: Escalation) -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {
        "externalNo": e.escalation_id,
        "complainant": {"name": e.consumer.name, "mobile": e.consumer.phone},
        "merchant": {"name": e.merchant.name, "creditCode": e.merchant.credit_code},
    }
    if e.order_id:
        out["order"] = {"orderNo": e.order_id, "amountFen": e.amount_fen}
    out |= {
        "typeCode": CATEGORIES.get(e.category, CATEGORIES["OTHER"]),
        "content": e.description,
        "occurTime": iso_local(e.received_at_ms),
        "deadline": local_time(e.handling_deadline_ms, "%Y-%m-%d"),
        "urgent": bool(e.severity),
    }
    return out


connector = JsonHmacConnector(
    name="hangzhou",
    transport=TransportPolicy(min_tls="TLSv1.2"),
    city_code="330100",
    path="/openapi/v2/complaint/submit",
    body=body,
    codes=AnswerCodes(
        code_field="resultCode",
        case_field="caseNo",
        message_field="resultMsg",
        ok=frozenset({"SUCCESS"}),
        duplicate=frozenset({"DUPLICATE"}),
        busy=frozenset({"SYSTEM_BUSY"}),
        auth=frozenset({"SIGN_INVALID"}),
    ),
)
