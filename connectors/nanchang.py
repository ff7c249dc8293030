"""Nanchang Administration for Market Regulation, open gateway (form + SM3, method-style).

``POST /gateway/tousu/create`` on the :mod:`connectors.families.form_sm3` family: **upper-case**
SM3 hex ``sign`` over the sorted parameters plus ``&key=<secret>``; ``app_key`` = client id,
``timestamp`` = ``yyyy-MM-dd HH:mm:ss`` (Asia/Shanghai), ``nonce`` = ctx.nonce, and the fixed
``method=12315.tousu.create``, ``v=1.0``, ``format=json``.

Business parameters (pinyin; empty ones are not sent)::

    biz_no   业务编号    escalation_id (idempotency key)
    xm       姓名        consumer.name
    dh       电话        consumer.phone
    dz       地址        consumer.address (Nanchang mails its decisions)
    qy       企业        merchant.name
    qydm     企业代码    merchant.credit_code
    ddbh     订单编号    order_id
    jine     金额(元)    amount_fen as yuan, "128.50"
    lb       类别        CATEGORIES[category] (unknown -> "NC99")
    nr       内容        description

Answer (JSON, HTTP 200): ``{"errcode": 0, "errmsg": "ok", "ajh": "<案件号>"}``.
errcode: 0 accepted, 10 duplicate (same ajh), 99 busy, 40001 bad signature, 40002 stale
timestamp or reused nonce, 20001 invalid field, 20002 unknown category, 30001 refused.
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, local_time, yuan
from connectors.families.form_sm3 import FormSm3Connector
from gateway.sdk import Escalation, TransportPolicy

CATEGORIES = {
    "QUALITY": "NC01",
    "SAFETY": "NC02",
    "FRAUD": "NC03",
    "FALSE_ADVERTISING": "NC04",
    "REFUND": "NC05",
    "DELIVERY": "NC06",
    "SERVICE": "NC07",
    "PRICE": "NC08",
    "PRIVACY": "NC09",
    "OTHER": "NC99",
}


def params(e: Escalation) -> dict[str, str]:
    return {
        "biz_no": e.escalation_id,
        "xm": e.consumer.name,
        "dh": e.consumer.phone,
        "dz": e.consumer.address or "",
        "qy": e.merchant.name,
        "qydm": e.merchant.credit_code or "",
        "ddbh": e.order_id or "",
        "jine": yuan(e.amount_fen),
        "lb": CATEGORIES.get(e.category, CATEGORIES["OTHER"]),
        "nr": e.description,
    }


def timestamp(ms: int) -> str:
    return local_time(ms, "%Y-%m-%d %H:%M:%S")


connector = FormSm3Connector(
    name="nanchang",
    transport=TransportPolicy(min_tls="TLSv1.2"),
    city_code="360100",
    path="/gateway/tousu/create",
    params=params,
    app_id_field="app_key",
    timestamp=timestamp,
    nonce_field="nonce",
    fixed={"method": "12315.tousu.create", "v": "1.0", "format": "json"},
    upper=True,
    codes=AnswerCodes(
        code_field="errcode",
        case_field="ajh",
        message_field="errmsg",
        ok=frozenset({"0"}),
        duplicate=frozenset({"10"}),
        busy=frozenset({"99"}),
        auth=frozenset({"40001", "40002"}),
    ),
    personal_data=frozenset({"name", "phone", "address"}),
)
