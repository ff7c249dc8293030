"""Beijing Municipal Administration for Market Regulation, 12315 interface (JSON + HMAC).

``POST /api/12315/v1/complaints`` on the :mod:`connectors.families.json_hmac` family
(signed headers; ``X-Idempotency-Key`` and ``wbbh`` carry the escalation id).

Body (pinyin initials, all strings, empty string when unknown)::

    wbbh       外部编号      escalation_id
    tsrxm      投诉人姓名    consumer.name
    tsrdh      投诉人电话    consumer.phone
    tsrdz      投诉人地址    consumer.address
    bssmc      被诉商家名称  merchant.name
    bsstyxydm  统一信用代码  merchant.credit_code
    ddh        订单号        order_id
    je         金额(元)      amount_fen as yuan, "128.50"
    tslb       投诉类别      CATEGORIES[category] (unknown -> "9900")
    splb       商品类别      PRODUCTS[product_category] (unknown -> "Z99")
    tsnr       投诉内容      description
    tssj       投诉时间      received_at, yyyyMMddHHmmss, Asia/Shanghai
    clqx       处理期限      handling_deadline, yyyyMMdd, Asia/Shanghai

Answer: ``{"code": "0000", "msg": "...", "data": {"slbh": "<受理编号>"}}`` with HTTP 200.
Codes: 0000 accepted, 2001 duplicate (same slbh), 9001/9002 busy, 4010 signature refused,
1001 missing field, 1002 bad value, 1003 unknown category, 3001 outside jurisdiction.
"""

from __future__ import annotations

from connectors.families.common import AnswerCodes, JsonValue, local_time, yuan
from connectors.families.json_hmac import JsonHmacConnector
from gateway.sdk import Escalation, TransportPolicy

CATEGORIES = {
    "QUALITY": "0101",
    "SAFETY": "0102",
    "FRAUD": "0201",
    "FALSE_ADVERTISING": "0202",
    "REFUND": "0301",
    "DELIVERY": "0302",
    "SERVICE": "0401",
    "PRICE": "0501",
    "PRIVACY": "0601",
    "OTHER": "9900",
}
PRODUCTS = {
    "FOOD": "A01",
    "RESTAURANT": "A02",
    "COSMETICS": "B01",
    "ELECTRONICS": "C01",
    "APPAREL": "C02",
    "HOME": "C03",
    "HOTEL": "D01",
    "TRAVEL": "D02",
    "ENTERTAINMENT": "D03",
    "HEALTH": "E01",
    "EDUCATION": "E02",
    "OTHER": "Z99",
}


def body(e: Escalation) -> dict[str, JsonValue]:
    return {
        "wbbh": e.escalation_id,
        "tsrxm": e.consumer.name,
        "tsrdh": e.consumer.phone,
        "tsrdz": e.consumer.address or "",
        "bssmc": e.merchant.name,
        "bsstyxydm": e.merchant.credit_code or "",
        "ddh": e.order_id or "",
        "je": yuan(e.amount_fen),
        "tslb": CATEGORIES.get(e.category, CATEGORIES["OTHER"]),
        "splb": PRODUCTS.get(e.product_category, PRODUCTS["OTHER"]),
        "tsnr": e.description,
        "tssj": local_time(e.received_at_ms, "%Y%m%d%H%M%S"),
        "clqx": local_time(e.handling_deadline_ms, "%Y%m%d"),
    }


connector = JsonHmacConnector(
    name="beijing",
    transport=TransportPolicy(min_tls="TLSv1.2"),
    city_code="110000",
    path="/api/12315/v1/complaints",
    body=body,
    codes=AnswerCodes(
        code_field="code",
        case_field="data.slbh",
        message_field="msg",
        ok=frozenset({"0000"}),
        duplicate=frozenset({"2001"}),
        busy=frozenset({"9001", "9002"}),
        auth=frozenset({"4010"}),
    ),
    personal_data=frozenset({"name", "phone", "address"}),
)
