"""Every city's field mapping, spelled out: one fixed escalation, every expected value."""

from __future__ import annotations

import json

import pytest

from connectors import (
    beijing,
    chongqing,
    guangzhou,
    hangzhou,
    hefei,
    nanchang,
    nanjing,
    shenzhen,
    suzhou,
    wuhu,
)
from tests.unit.connector_samples import context, escalation

E = escalation()


def test_beijing() -> None:
    assert beijing.body(E) == {
        "wbbh": "esc-7f3a9c2e",
        "tsrxm": "王小明",
        "tsrdh": "13812345678",
        "tsrdz": "北京市朝阳区建国路88号",
        "bssmc": "某某电器专营店",
        "bsstyxydm": "91110105MA01ABCD2X",
        "ddh": "o-20260102-77",
        "je": "128.50",
        "tslb": "0102",
        "splb": "C01",
        "tsnr": "充电宝使用中起火，烧伤手部。",
        "tssj": "20260102100405",
        "clqx": "20260116",
    }


def test_hangzhou() -> None:
    assert hangzhou.body(E) == {
        "externalNo": "esc-7f3a9c2e",
        "complainant": {"name": "王小明", "mobile": "13812345678"},
        "merchant": {"name": "某某电器专营店", "creditCode": "91110105MA01ABCD2X"},
        "order": {"orderNo": "o-20260102-77", "amountFen": 12850},
        "typeCode": "AQ",
        "content": "充电宝使用中起火，烧伤手部。",
        "occurTime": "2026-01-02T10:04:05+08:00",
        "deadline": "2026-01-16",
        "urgent": True,
    }
    bare = hangzhou.body(escalation(order_id=None, severity=(), category="CONSULTATION"))
    assert "order" not in bare and bare["urgent"] is False and bare["typeCode"] == "QT"


def test_nanjing() -> None:
    assert nanjing.body(E) == {
        "ywlsh": "esc-7f3a9c2e",
        "xm": "王小明",
        "sjhm": "13812345678",
        "sfzh": "11010119900307663X",
        "qymc": "某某电器专营店",
        "tyshxydm": "91110105MA01ABCD2X",
        "ddbh": "o-20260102-77",
        "je": "128.50",
        "lbdm": "2",
        "nr": "充电宝使用中起火，烧伤手部。",
        "sj": "2026-01-02 10:04:05",
        "jzrq": "20260116",
    }


def test_guangzhou() -> None:
    assert guangzhou.fields(E) == [
        ("externalId", "esc-7f3a9c2e"),
        ("complainantName", "王小明"),
        ("complainantPhone", "13812345678"),
        ("merchantName", "某某电器专营店"),
        ("creditCode", "91110105MA01ABCD2X"),
        ("orderNo", "o-20260102-77"),
        ("amount", "128.50"),
        ("categoryCode", "102"),
        ("content", "充电宝使用中起火，烧伤手部。"),
        ("occurredAt", "2026-01-02T10:04:05+08:00"),
        ("deadline", "2026-01-16"),
    ]


def test_chongqing() -> None:
    assert chongqing.fields(E) == [
        ("lsh", "esc-7f3a9c2e"),
        ("tsrxm", "王小明"),
        ("lxdh", "13812345678"),
        ("lxdz", "北京市朝阳区建国路88号"),
        ("bssmc", "某某电器专营店"),
        ("tsnr", "充电宝使用中起火，烧伤手部。"),
        ("tslx", "AQ01"),
        ("je", "12850"),
        ("fssj", "2026/01/02 10:04"),
    ]


def test_hefei() -> None:
    assert hefei.params(E) == {
        "wbbh": "esc-7f3a9c2e",
        "tsr": "王小明",
        "lxdh": "13812345678",
        "bts": "某某电器专营店",
        "xydm": "91110105MA01ABCD2X",
        "ddh": "o-20260102-77",
        "je": "12850",
        "tslb": "12",
        "tsnr": "充电宝使用中起火，烧伤手部。",
        "fssj": "20260102100405",
    }


def test_wuhu() -> None:
    assert wuhu.params(E) == {
        "out_id": "esc-7f3a9c2e",
        "consumer_name": "王小明",
        "consumer_tel": "13812345678",
        "shop_name": "某某电器专营店",
        "shop_code": "91110105MA01ABCD2X",
        "order_no": "o-20260102-77",
        "money": "128.50",
        "type": "S",
        "detail": "充电宝使用中起火，烧伤手部。",
        "happen_date": "2026-01-02",
    }


def test_nanchang() -> None:
    assert nanchang.params(E) == {
        "biz_no": "esc-7f3a9c2e",
        "xm": "王小明",
        "dh": "13812345678",
        "dz": "北京市朝阳区建国路88号",
        "qy": "某某电器专营店",
        "qydm": "91110105MA01ABCD2X",
        "ddbh": "o-20260102-77",
        "jine": "128.50",
        "lb": "NC02",
        "nr": "充电宝使用中起火，烧伤手部。",
    }


def test_shenzhen() -> None:
    assert shenzhen.body(E) == {
        "requestId": "esc-7f3a9c2e",
        "consumer": {"name": "王小明", "phone": "13812345678"},
        "merchant": {"name": "某某电器专营店", "uscc": "91110105MA01ABCD2X"},
        "orderId": "o-20260102-77",
        "amountFen": 12850,
        "category": "PRODUCT_SAFETY",
        "productCategory": "ELECTRONICS",
        "description": "充电宝使用中起火，烧伤手部。",
        "receivedAt": 1_767_319_445_000,
        "deadline": "2026-01-16T18:00:00+08:00",
        "severity": ["safety_hazard", "injury"],
    }


def test_suzhou() -> None:
    assert suzhou.body(E) == {
        "out_case_no": "esc-7f3a9c2e",
        "complainant_name": "王小明",
        "complainant_mobile": "13812345678",
        "enterprise_name": "某某电器专营店",
        "enterprise_credit_code": "91110105MA01ABCD2X",
        "order_no": "o-20260102-77",
        "amount": "128.50",
        "case_type": "T02",
        "content": "充电宝使用中起火，烧伤手部。",
        "occur_at": 1_767_319_445,
        "expected_finish": "2026-01-16",
    }


TABLES = {
    "beijing": beijing.CATEGORIES,
    "hangzhou": hangzhou.CATEGORIES,
    "nanjing": nanjing.CATEGORIES,
    "guangzhou": guangzhou.CATEGORIES,
    "chongqing": chongqing.CATEGORIES,
    "hefei": hefei.CATEGORIES,
    "wuhu": wuhu.CATEGORIES,
    "nanchang": nanchang.CATEGORIES,
    "shenzhen": shenzhen.CATEGORIES,
    "suzhou": suzhou.CATEGORIES,
}
COMPLAINT_CATEGORIES = ("QUALITY", "SAFETY", "FRAUD", "FALSE_ADVERTISING", "REFUND", "DELIVERY",
                        "SERVICE", "PRICE", "PRIVACY", "OTHER")  # fmt: skip


@pytest.mark.parametrize("city", sorted(TABLES))
def test_category_tables_are_complete_and_one_to_one(city: str) -> None:
    table = TABLES[city]
    assert set(table) == set(COMPLAINT_CATEGORIES)
    assert len(set(table.values())) == len(table)


def test_json_bodies_are_compact_utf8_in_mapping_order() -> None:
    body = beijing.connector.translate(E, context()).body
    assert body == json.dumps(beijing.body(E), ensure_ascii=False, separators=(",", ":")).encode()
