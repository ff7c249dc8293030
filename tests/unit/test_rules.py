"""Routing rules: defaults reflect the pyramid; invalid rule files are rejected clearly."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.routing.rules import (
    CATEGORIES,
    CHANNELS,
    PRODUCTS,
    SIGNALS,
    Classifier,
    load_rules,
    parse_rules,
)
from gateway.topics import Department, Desk

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = {
    "complaint_id": "c-1",
    "channel": "APP",
    "category": "QUALITY",
    "product_category": "FOOD",
    "description": "买到的商品有质量问题",
    "order": {"order_id": "o-1", "amount_fen": 9900, "currency": "CNY", "paid_at": None},
    "signals": {
        "safety_hazard": False,
        "injury": False,
        "media_attention": False,
        "asks_for_regulator": False,
        "repeat_count": 0,
        "group_incident": False,
    },
}


def complaint(**changes: Any) -> dict[str, Any]:
    c = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key in BASE["signals"]:
            c["signals"][key] = value
        else:
            c[key] = value
    return c


CASES = [
    (complaint(), Department.CUSTOMER_SERVICE, None, "general"),
    (
        complaint(channel="PLATFORM_12315"),
        Department.CONSUMER_PROTECTION,
        None,
        "from-12315-platform",
    ),
    (complaint(safety_hazard=True), Department.CONSUMER_PROTECTION, None, "safety-hazard"),
    (complaint(injury=True), Department.CONSUMER_PROTECTION, None, "safety-hazard"),
    (complaint(category="FRAUD"), Department.CONSUMER_PROTECTION, None, "fraud"),
    (complaint(media_attention=True), Department.CONSUMER_PROTECTION, None, "media-attention"),
    (
        complaint(asks_for_regulator=True),
        Department.CONSUMER_PROTECTION,
        None,
        "asks-for-regulator",
    ),
    (complaint(group_incident=True), Department.CONSUMER_PROTECTION, None, "group-incident"),
    (complaint(repeat_count=2), Department.CONSUMER_PROTECTION, None, "repeat-unresolved"),
    (complaint(repeat_count=1), Department.CUSTOMER_SERVICE, None, "general"),
    (
        complaint(
            order={"order_id": "o", "amount_fen": 500000, "currency": "CNY", "paid_at": None}
        ),
        Department.CONSUMER_PROTECTION,
        None,
        "high-amount",
    ),
    (complaint(order=None), Department.CUSTOMER_SERVICE, None, "general"),
    (complaint(category="REFUND"), Department.CUSTOMER_SERVICE, None, "general"),
    (complaint(category="COOPERATION"), Department.CALL_CENTER, Desk.COOPERATION, "cooperation"),
    (
        complaint(category="CONSULTATION", product_category="COSMETICS"),
        Department.CALL_CENTER,
        Desk.COSMETICS,
        "consult-cosmetics",
    ),
    (
        complaint(category="SUGGESTION", product_category="HOTEL"),
        Department.CALL_CENTER,
        Desk.HOTEL,
        "consult-hotel",
    ),
    (
        complaint(category="CONSULTATION", description="请问怎么申请退款"),
        Department.CALL_CENTER,
        Desk.REFUNDS,
        "consult-refund",
    ),
    (
        complaint(category="CONSULTATION", description="快递什么时候到"),
        Department.CALL_CENTER,
        Desk.LOGISTICS,
        "consult-logistics",
    ),
    (
        complaint(category="CONSULTATION", description="会员积分怎么用"),
        Department.CALL_CENTER,
        Desk.INTEGRATED,
        "consult-integrated",
    ),
    # a consultation that arrives through 12315 is still taken seriously
    (
        complaint(category="CONSULTATION", channel="PLATFORM_12315"),
        Department.CONSUMER_PROTECTION,
        None,
        "from-12315-platform",
    ),
]


@pytest.mark.parametrize(("record", "dept", "desk", "rule"), CASES)
def test_default_rules(
    record: dict[str, Any], dept: Department, desk: Desk | None, rule: str
) -> None:
    decision = load_rules().classify(record)
    assert (decision.department, decision.desk, decision.rule_id) == (dept, desk, rule)
    assert decision.major == (dept is Department.CONSUMER_PROTECTION)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": []}, "rules"),
        (
            {
                "rules": [
                    {"id": "a", "when": {"categories": ["FRAUD"]}, "route": "consumer-protection"}
                ]
            },
            "catch-all",
        ),
        ({"rules": [{"id": "a", "route": "nowhere"}]}, "unknown route"),
        ({"rules": [{"id": "a", "route": "call-center/spa"}]}, "unknown route"),
        (
            {
                "rules": [
                    {"id": "a", "when": {"categories": ["NOPE"]}, "route": "customer-service"},
                    {"id": "b", "route": "customer-service"},
                ]
            },
            "rules.0.when.categories.0",
        ),
        (
            {
                "rules": [
                    {"id": "a", "when": {"colour": "red"}, "route": "customer-service"},
                    {"id": "b", "route": "customer-service"},
                ]
            },
            "colour",
        ),
        (
            {
                "rules": [
                    {"id": "a", "route": "customer-service"},
                    {"id": "a", "route": "customer-service"},
                ]
            },
            "duplicate rule ids: a",
        ),
        (
            {
                "rules": [
                    {"id": "a", "route": "customer-service"},
                    {"id": "b", "route": "customer-service"},
                ]
            },
            "never match",
        ),
        ({"rules": [{"id": "Bad Id", "route": "customer-service"}]}, "rules.0.id"),
    ],
)
def test_invalid_rules_rejected_with_clear_message(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(data, "test.yaml")
    assert "test.yaml" in str(info.value)
    assert message in str(info.value)


def test_rule_file_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - {id: vip, when: {amount_fen_at_least: 100}, route: consumer-protection}\n"
        "  - {id: rest, route: call-center/integrated}\n",
        encoding="utf-8",
    )
    classifier = load_rules(path)
    assert classifier.classify(complaint()).rule_id == "vip"
    assert classifier.classify(complaint(order=None)).desk is Desk.INTEGRATED


def test_unreadable_or_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rules(bad)


def _reference_match(when: dict[str, Any], c: dict[str, Any]) -> bool:
    """The rule semantics as the module docstring states them, written out plainly."""
    s, order = c["signals"], c["order"]
    amount = order["amount_fen"] if order is not None else -1
    return (
        (not when.get("categories") or c["category"] in when["categories"])
        and (not when.get("products") or c["product_category"] in when["products"])
        and (not when.get("channels") or c["channel"] in when["channels"])
        and (not when.get("signals") or any(s[n] for n in when["signals"]))
        and s["repeat_count"] >= when.get("repeat_count_at_least", -(2**63))
        and amount >= when.get("amount_fen_at_least", -(2**63))
        and (not when.get("text_any") or any(w in c["description"] for w in when["text_any"]))
    )


def test_compiled_rules_decide_as_a_plain_first_match_reading_of_them() -> None:
    """Random rule sets (the per-category dispatch: rules naming categories, rules naming
    none, categories no rule names) against random complaints."""
    rnd = random.Random(23)
    routes = ["consumer-protection", "customer-service", "call-center/refunds"]
    words = ["退款", "物流", "质量", "x"]
    for _ in range(150):
        rules = []
        for i in range(rnd.randrange(1, 9)):
            when: dict[str, Any] = {}
            for key, pool in (
                ("categories", CATEGORIES[:5]),  # some categories named by no rule
                ("products", PRODUCTS),
                ("channels", CHANNELS),
                ("signals", SIGNALS),
                ("text_any", words),
            ):
                if rnd.random() < 0.35:
                    when[key] = rnd.sample(list(pool), rnd.randrange(1, 3))
            if rnd.random() < 0.2:
                when["repeat_count_at_least"] = rnd.randrange(1, 4)
            if rnd.random() < 0.2:
                when["amount_fen_at_least"] = rnd.randrange(1, 20_000)
            if not when:
                when = {"channels": [rnd.choice(CHANNELS)]}
            rules.append({"id": f"r{i}", "when": when, "route": rnd.choice(routes)})
        rules.append({"id": "last", "route": "customer-service"})
        classifier = load_rules_from(rules)
        for _ in range(60):
            c = complaint(
                category=rnd.choice(CATEGORIES),
                product_category=rnd.choice(PRODUCTS),
                channel=rnd.choice(CHANNELS),
                description=rnd.choice(["", "要退款", "物流太慢", "质量问题 x"]),
                repeat_count=rnd.randrange(0, 5),
                **{n: rnd.random() < 0.2 for n in SIGNALS},
            )
            if rnd.random() < 0.2:
                c["order"] = None
            else:
                c["order"]["amount_fen"] = rnd.randrange(0, 30_000)
            expected = next(r["id"] for r in rules if _reference_match(r.get("when", {}), c))
            assert classifier.classify(c).rule_id == expected, (rules, c)


def load_rules_from(rules: list[dict[str, Any]]) -> Classifier:
    return Classifier(parse_rules({"version": 1, "rules": rules}))
