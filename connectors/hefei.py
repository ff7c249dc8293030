"""Hefei Administration for Market Regulation, 12315 interface (form + SM3).

``POST /api/ts/add`` on the :mod:`connectors.families.form_sm3` family: lower-case SM3 hex
``sign`` over the sorted parameters plus ``&key=<secret>``; ``app_id`` = client id,
``timestamp`` = epoch milliseconds, ``nonce_str`` = ctx.nonce, ``sign_type=SM3``.

Business parameters (pinyin initials; empty ones are not sent)::

    wbbh   外部编号    escalation_id (idempotency key)
    tsr    投诉人      consumer.name
    lxdh   联系电话    consumer.phone
    bts    被投诉方    merchant.name
    xydm   信用代码    merchant.credit_code
    ddh    订单号      order_id
    je     金额(分)    amount_fen as an integer string
    tslb   投诉类别    CATEGORIES[category] (unknown -> "99")
    tsnr   投诉内容    description
    fssj   发生时间    received_at, yyyyMMddHHmmss, Asia/Shanghai

Answer (JSON, HTTP 200): ``{"ret": "0", "msg": "", "data": {"case_no": "..."}}``.
ret: 0 accepted, 2 duplicate (same case_no), 9 busy, 40 bad signature, 41 unknown app_id,
42 stale timestamp or reused nonce, 1 invalid field, 3 refused.
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, local_time
from connectors.families.form_sm3 import FormSm3Connector
from gateway.sdk import Escalation, TransportPolicy

CATEGORIES = {
    "QUALITY": "11",
    "SAFETY": "12",
    "FRAUD": "21",
    "FALSE_ADVERTISING": "22",
    "REFUND": "31",
    "DELIVERY": "32",
    "SERVICE": "41",
    "PRICE": "51",
    "PRIVACY": "61",
    "OTHER": "99",
}


def params(e: Escalation) -> dict[str, str]:
    return {
        "wbbh": e.escalation_id,
        "tsr": e.consumer.name,
        "lxdh": e.consumer.phone,
        "bts": e.merchant.name,
        "xydm": e.merchant.credit_code or "",
        "ddh": e.order_id or "",
        "je": "" if e.amount_fen is None else str(e.amount_fen),
        "tslb": CATEGORIES.get(e.category, CATEGORIES["OTHER"]),
        "tsnr": e.description,
        "fssj": local_time(e.received_at_ms, "%Y%m%d%H%M%S"),
    }


connector = FormSm3Connector(
    name="hefei",
    transport=TransportPolicy(min_tls="TLSv1.2"),
    city_code="340100",
    path="/api/ts/add",
    params=params,
    fixed={"sign_type": "SM3"},
    codes=AnswerCodes(
        code_field="ret",
        case_field="data.case_no",
        message_field="msg",
        ok=frozenset({"0"}),
        duplicate=frozenset({"2"}),
        busy=frozenset({"9"}),
        auth=frozenset({"40", "41", "42"}),
    ),
)
