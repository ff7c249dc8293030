"""Guangzhou Administration for Market Regulation, complaint web service (SOAP 1.1).

``POST /ws/ComplaintService``, ``SOAPAction: "urn:gz12315:complaint:v1#SubmitComplaint"``, on the
:mod:`connectors.families.soap` family (WS-Security UsernameToken with password digest).

``<SubmitComplaint xmlns="urn:gz12315:complaint:v1">`` children, in this order::

    externalId         escalation_id (idempotency key)
    complainantName    consumer.name
    complainantPhone   consumer.phone
    merchantName       merchant.name
    creditCode         merchant.credit_code, or empty
    orderNo            order_id, or empty
    amount             amount_fen as yuan, "128.50", or empty
    categoryCode       CATEGORIES[category] (unknown -> "999")
    content            description
    occurredAt         received_at, ISO 8601 with +08:00
    deadline           handling_deadline, yyyy-MM-dd, Asia/Shanghai

Answer: ``<SubmitComplaintResponse>`` with ``resultCode``, ``resultMessage``, ``caseNumber``.
Codes: 0000 accepted, 0001 duplicate (same caseNumber), 9999 busy, 1001 invalid field,
1002 unknown category, 2001 refused. Security failures come as ``wsse:FailedAuthentication``
faults, overload as ``soap:Server`` faults (HTTP 500).
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, iso_local, local_time, yuan
from connectors.families.soap import SoapConnector
from gateway.sdk import Escalation, TransportPolicy

NAMESPACE = "urn:gz12315:complaint:v1"
CATEGORIES = {
    "QUALITY": "101",
    "SAFETY": "102",
    "FRAUD": "201",
    "FALSE_ADVERTISING": "202",
    "REFUND": "301",
    "DELIVERY": "302",
    "SERVICE": "401",
    "PRICE": "501",
    "PRIVACY": "601",
    "OTHER": "999",
}


def fields(e: Escalation) -> list[tuple[str, str]]:
    return [
        ("externalId", e.escalation_id),
        ("complainantName", e.consumer.name),
        ("complainantPhone", e.consumer.phone),
        ("merchantName", e.merchant.name),
        ("creditCode", e.merchant.credit_code or ""),
        ("orderNo", e.order_id or ""),
        ("amount", yuan(e.amount_fen)),
        ("categoryCode", CATEGORIES.get(e.category, CATEGORIES["OTHER"])),
        ("content", e.description),
        ("occurredAt", iso_local(e.received_at_ms)),
        ("deadline", local_time(e.handling_deadline_ms, "%Y-%m-%d")),
    ]


connector = SoapConnector(
    name="guangzhou",
    transport=TransportPolicy(min_tls="TLSv1.2"),
    city_code="440100",
    path="/ws/ComplaintService",
    namespace=NAMESPACE,
    operation="SubmitComplaint",
    soap_action=f"{NAMESPACE}#SubmitComplaint",
    response_element="SubmitComplaintResponse",
    fields=fields,
    codes=AnswerCodes(
        code_field="resultCode",
        case_field="caseNumber",
        message_field="resultMessage",
        ok=frozenset({"0000"}),
        duplicate=frozenset({"0001"}),
        busy=frozenset({"9999"}),
    ),
)
