"""Wuhu Administration for Market Regulation, complaint gateway (form + SM3, form answers).

``POST /12315/complaint.do`` on the :mod:`connectors.families.form_sm3` family: **upper-case**
SM3 hex ``sign`` over the sorted parameters plus ``&key=<secret>``; ``appid`` = client id,
``ts`` = epoch **seconds**, ``nonce`` = ctx.nonce.

Business parameters (English; empty ones are not sent)::

    out_id          escalation_id (idempotency key)
    consumer_name   consumer.name
    consumer_tel    consumer.phone
    shop_name       merchant.name
    shop_code       merchant.credit_code
    order_no        order_id
    money           amount_fen as yuan, "128.50"
    type            CATEGORIES[category] (unknown -> "O")
    detail          description
    happen_date     received_at, yyyy-MM-dd, Asia/Shanghai

Answer (form-encoded, HTTP 200): ``result_code=SUCCESS&err_msg=&case_id=WH...``.
result_code: SUCCESS, DUPLICATE (same case_id), BUSY, SIGN_ERROR / TS_ERROR (our configuration),
PARAM_ERROR, TYPE_ERROR, REFUSED.
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, local_time, yuan
from connectors.families.form_sm3 import FormSm3Connector
from gateway.sdk import Escalation, TransportPolicy

CATEGORIES = {
    "QUALITY": "Q",
    "SAFETY": "S",
    "FRAUD": "F",
    "FALSE_ADVERTISING": "A",
    "REFUND": "R",
    "DELIVERY": "D",
    "SERVICE": "V",
    "PRICE": "P",
    "PRIVACY": "I",
    "OTHER": "O",
}


def params(e: Escalation) -> dict[str, str]:
    return {
        "out_id": e.escalation_id,
        "consumer_name": e.consumer.name,
        "consumer_tel": e.consumer.phone,
        "shop_name": e.merchant.name,
        "shop_code": e.merchant.credit_code or "",
        "order_no": e.order_id or "",
        "money": yuan(e.amount_fen),
        "type": CATEGORIES.get(e.category, CATEGORIES["OTHER"]),
        "detail": e.description,
        "happen_date": local_time(e.received_at_ms, "%Y-%m-%d"),
    }


def seconds(ms: int) -> str:
    return str(ms // 1000)


connector = FormSm3Connector(
    name="wuhu",
    transport=TransportPolicy(min_tls="TLSv1.2"),
    city_code="340200",
    path="/12315/complaint.do",
    params=params,
    app_id_field="appid",
    timestamp_field="ts",
    timestamp=seconds,
    nonce_field="nonce",
    upper=True,
    answer_format="form",
    codes=AnswerCodes(
        code_field="result_code",
        case_field="case_id",
        message_field="err_msg",
        ok=frozenset({"SUCCESS"}),
        duplicate=frozenset({"DUPLICATE"}),
        busy=frozenset({"BUSY"}),
        auth=frozenset({"SIGN_ERROR", "TS_ERROR"}),
    ),
)
