"""Shenzhen Administration for Market Regulation, open platform (OAuth2 + JSON over mTLS).

Transport: HTTPS, TLS 1.2 or later, with a **client certificate** (``transport``): the engine builds its
TLS context from ``cities.shenzhen.tls`` (``ca_file``, ``cert_file``, ``key_file``).
Token: ``POST /oauth2/token`` (client credentials, HTTP Basic, ``scope=complaint.write``).
Request: ``POST /api/v2/complaints`` on the :mod:`connectors.families.oauth_json` family with
``Authorization: Bearer`` and ``Idempotency-Key: <escalation_id>``.

Body (camelCase)::

    requestId          escalation_id
    consumer.name      consumer.name
    consumer.phone     consumer.phone
    merchant.name      merchant.name
    merchant.uscc      merchant.credit_code, or null
    orderId            order_id, or null
    amountFen          amount_fen (integer fen), or null
    category           CATEGORIES[category] (unknown -> "OTHER")
    productCategory    product_category, as is (FOOD, COSMETICS...)
    description        description
    receivedAt         received_at, epoch milliseconds
    deadline           handling_deadline, ISO 8601 with +08:00
    severity           list of severity signals

Answer: HTTP 201 ``{"status": "ACCEPTED", "caseId": "..."}``; a repeated ``Idempotency-Key``
answers HTTP 200 ``{"status": "DUPLICATE", "caseId": <same>}``; ``BUSY`` in a 200 is retried;
invalid data is HTTP 422 ``{"status": "INVALID_FIELD" | "UNKNOWN_CATEGORY", "message": ...}``;
an expired or unknown token is HTTP 401 (re-authenticate).
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, JsonValue, iso_local
from connectors.families.oauth_json import OAuthJsonConnector
from gateway.sdk import Escalation, TokenGrant, TransportPolicy

CATEGORIES = {
    "QUALITY": "PRODUCT_QUALITY",
    "SAFETY": "PRODUCT_SAFETY",
    "FRAUD": "FRAUD",
    "FALSE_ADVERTISING": "FALSE_ADVERTISING",
    "REFUND": "REFUND",
    "DELIVERY": "LOGISTICS",
    "SERVICE": "SERVICE",
    "PRICE": "PRICING",
    "PRIVACY": "PERSONAL_INFORMATION",
    "OTHER": "OTHER",
}


def body(e: Escalation) -> dict[str, JsonValue]:
    return {
        "requestId": e.escalation_id,
        "consumer": {"name": e.consumer.name, "phone": e.consumer.phone},
        "merchant": {"name": e.merchant.name, "uscc": e.merchant.credit_code},
        "orderId": e.order_id,
        "amountFen": e.amount_fen,
        "category": CATEGORIES.get(e.category, CATEGORIES["OTHER"]),
        "productCategory": e.product_category,
        "description": e.description,
        "receivedAt": e.received_at_ms,
        "deadline": iso_local(e.handling_deadline_ms),
        "severity": list(e.severity),
    }


connector = OAuthJsonConnector(
    name="shenzhen",
    city_code="440300",
    path="/api/v2/complaints",
    body=body,
    token_grant=TokenGrant(path="/oauth2/token", scope="complaint.write"),
    transport=TransportPolicy(client_cert=True, min_tls="TLSv1.2"),
    codes=AnswerCodes(
        code_field="status",
        case_field="caseId",
        message_field="message",
        ok=frozenset({"ACCEPTED"}),
        duplicate=frozenset({"DUPLICATE"}),
        busy=frozenset({"BUSY"}),
    ),
)
