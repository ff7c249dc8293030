"""Nanjing Administration for Market Regulation, 12315 interface (JSON + HMAC).

``POST /12315/api/tousu`` on the :mod:`connectors.families.json_hmac` family
(``X-Idempotency-Key`` and ``ywlsh`` carry the escalation id). Transport: HTTPS with TLS 1.3
only (``transport``).

Body (pinyin initials)::

    ywlsh     业务流水号    escalation_id
    xm        姓名          consumer.name
    sjhm      手机号码      consumer.phone
    sfzh      身份证号      consumer.id_number ("" when not given; Nanjing registers the
                            complainant's identity, so this bureau receives it)
    qymc      企业名称      merchant.name
    tyshxydm  统一信用代码  merchant.credit_code
    ddbh      订单编号      order_id
    je        金额(元)      amount_fen as yuan, "128.50"
    lbdm      类别代码      CATEGORIES[category] (unknown -> "99")
    nr        内容          description
    sj        时间          received_at, yyyy-MM-dd HH:mm:ss, Asia/Shanghai
    jzrq      截止日期      handling_deadline, yyyyMMdd, Asia/Shanghai

Answer: ``{"status": 0, "message": "ok", "result": {"ajbh": "<案件编号>"}}`` with HTTP 200.
Status codes (integers): 0 accepted, 40900 duplicate (same ajbh), 50300 busy, 40100 signature
refused, 40001 invalid field, 40002 unknown category, 40300 refused.
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, JsonValue, local_time, yuan
from connectors.families.json_hmac import JsonHmacConnector
from gateway.sdk import Escalation, TransportPolicy

CATEGORIES = {
    "QUALITY": "1",
    "SAFETY": "2",
    "FRAUD": "3",
    "FALSE_ADVERTISING": "4",
    "REFUND": "5",
    "DELIVERY": "6",
    "SERVICE": "7",
    "PRICE": "8",
    "PRIVACY": "9",
    "OTHER": "99",
}


def body(e: Escalation) -> dict[str, JsonValue]:
    return {
        "ywlsh": e.escalation_id,
        "xm": e.consumer.name,
        "sjhm": e.consumer.phone,
        "sfzh": e.consumer.id_number or "",
        "qymc": e.merchant.name,
        "tyshxydm": e.merchant.credit_code or "",
        "ddbh": e.order_id or "",
        "je": yuan(e.amount_fen),
        "lbdm": CATEGORIES.get(e.category, CATEGORIES["OTHER"]),
        "nr": e.description,
        "sj": local_time(e.received_at_ms, "%Y-%m-%d %H:%M:%S"),
        "jzrq": local_time(e.handling_deadline_ms, "%Y%m%d"),
    }


connector = JsonHmacConnector(
    name="nanjing",
    transport=TransportPolicy(min_tls="TLSv1.3"),
    city_code="320100",
    path="/12315/api/tousu",
    body=body,
    codes=AnswerCodes(
        code_field="status",
        case_field="result.ajbh",
        message_field="message",
        ok=frozenset({"0"}),
        duplicate=frozenset({"40900"}),
        busy=frozenset({"50300"}),
        auth=frozenset({"40100"}),
    ),
    personal_data=frozenset({"name", "phone", "id_number"}),
)
