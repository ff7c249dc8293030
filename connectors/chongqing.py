"""Chongqing Administration for Market Regulation, 投诉 web service (SOAP 1.1).

``POST /services/TousuService``, ``SOAPAction: "http://12315.cq.gov.cn/tousu/Submit"``, on the
:mod:`connectors.families.soap` family (WS-Security UsernameToken with password digest).

``<TousuRequest xmlns="http://12315.cq.gov.cn/tousu">`` children (pinyin), in this order::

    lsh      流水号        escalation_id (idempotency key)
    tsrxm    投诉人姓名    consumer.name
    lxdh     联系电话      consumer.phone
    lxdz     联系地址      consumer.address, or empty (Chongqing mails its decisions)
    bssmc    被诉商家      merchant.name
    tsnr     投诉内容      description
    tslx     投诉类型      CATEGORIES[category] (unknown -> "QT99")
    je       金额(分)      amount_fen as an integer string, or empty
    fssj     发生时间      received_at, yyyy/MM/dd HH:mm, Asia/Shanghai

Answer: ``<TousuResponse>`` with ``fhm`` (返回码), ``fhxx`` (返回信息), ``slh`` (受理号).
Codes: 00 accepted, 01 duplicate (same slh), 98 busy, 20 refused. **Invalid data comes as a
``soap:Client`` fault** (HTTP 500), overload as ``soap:Server``, security as
``wsse:FailedAuthentication``. Its 429 carries an HTTP-date ``Retry-After``.
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, local_time
from connectors.families.soap import SoapConnector
from gateway.sdk import Escalation, TransportPolicy

NAMESPACE = "http://12315.cq.gov.cn/tousu"
CATEGORIES = {
    "QUALITY": "ZL01",
    "SAFETY": "AQ01",
    "FRAUD": "QZ01",
    "FALSE_ADVERTISING": "GG01",
    "REFUND": "TK01",
    "DELIVERY": "WL01",
    "SERVICE": "FW01",
    "PRICE": "JG01",
    "PRIVACY": "YS01",
    "OTHER": "QT99",
}


def fields(e: Escalation) -> list[tuple[str, str]]:
    return [
        ("lsh", e.escalation_id),
        ("tsrxm", e.consumer.name),
        ("lxdh", e.consumer.phone),
        ("lxdz", e.consumer.address or ""),
        ("bssmc", e.merchant.name),
        ("tsnr", e.description),
        ("tslx", CATEGORIES.get(e.category, CATEGORIES["OTHER"])),
        ("je", "" if e.amount_fen is None else str(e.amount_fen)),
        ("fssj", local_time(e.received_at_ms, "%Y/%m/%d %H:%M")),
    ]


connector = SoapConnector(
    name="chongqing",
    transport=TransportPolicy(min_tls="TLSv1.2"),
    city_code="500000",
    path="/services/TousuService",
    namespace=NAMESPACE,
    operation="TousuRequest",
    soap_action=f"{NAMESPACE}/Submit",
    response_element="TousuResponse",
    fields=fields,
    codes=AnswerCodes(
        code_field="fhm",
        case_field="slh",
        message_field="fhxx",
        ok=frozenset({"00"}),
        duplicate=frozenset({"01"}),
        busy=frozenset({"98"}),
    ),
    personal_data=frozenset({"name", "phone", "address"}),
)
