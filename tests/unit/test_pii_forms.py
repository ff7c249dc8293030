"""The one masker (gateway.pii) knows Chinese personal data in the forms people write it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pii import known_values, mask_name, mask_text, trim
from tests.security.canaries import WRITTEN_FIELDS, Canary, canaries, description, leaks, written

PATTERN_FIELDS = ("mobile", "landline", "id_number", "id15", "card", "email", "uscc")


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("电话 139-5700-1200", "57001200"),
        ("电话 139 5700 1200", "5700 1200"),
        ("+86 13957001200", "5700"),
        ("+86-139-5700-1200", "5700"),
        ("0086 139 5700 1200", "5700"),
        ("（+86）13957001200", "5700"),
        ("１３９５７００１２００", "５７００"),
        ("１３９－５７００－１２００", "５７００"),
        ("座机 0551-6233 4455", "6233"),
        ("座机 (0551)62334455", "6233"),
        ("+86 551 6233 4455", "6233"),
        ("010-62345678 转 123", "6234"),
        ("身份证 340202880501001", "880501"),  # 15-digit legacy ID
        ("身份证 34020219880501001x", "19880501"),
        ("身份证 340202 19880501 001X", "19880501"),
        ("卡号 6222 0212 3456 7890 128", "0212 3456"),
        ("卡号 4111111111111111", "11111111"),
        ("个体户 92340202MA2N1234X5", "MA2N1234X"),
        ("邮箱 zhang.san@example.cn", "hang.san"),
        ("邮箱 zhang.san＠example.cn", "hang.san"),
    ],
)
def test_each_written_form_is_masked(text: str, hidden: str) -> None:
    masked = mask_text(text)
    assert hidden not in masked, masked
    assert "*" in masked


@pytest.mark.parametrize(
    "text",
    [
        "金额 12345 分，2026-01-02 13:57:00",
        "企业统一社会信用代码 91340200MA2N1234X5",  # a company: not personal data
        "escalation e3b0c442-0551-6233-4455-1234567890ab",
        "epoch 1767312245000",
        "order 2026010212345678",  # not Luhn-valid, not a card
    ],
)
def test_what_is_not_personal_data_is_kept(text: str) -> None:
    assert mask_text(text) == text


def test_known_values_are_masked_whatever_their_form() -> None:
    known = ["张三丰", "13957001200", "芜湖市镜湖区灿星路1号", "zhang.san@example.cn"]
    text = (
        "张 三 丰 / 张三丰 / %E5%BC%A0%E4%B8%89%E4%B8%B0 / \\u5f20\\u4e09\\u4e30 / "
        "&#24352;&#19977;&#20016; / 139.5700.1200 / ZHANG.SAN@EXAMPLE.CN / "
        "芜湖市 镜湖区 灿星路 1 号"
    )
    masked = mask_text(text, known)
    for value in ("三丰", "三 丰", "%E4%B8%89", "\\u4e09", "&#19977;", "5700", "ZHANG", "灿星"):
        assert value not in masked, masked


def test_known_values_of_a_record_include_an_individual_business_credit_code() -> None:
    record = {
        "consumer": {"name": "张三", "phone": "13957001200", "email": None},
        "merchant": {"credit_code": "92340202MA2N1234X5"},
    }
    assert known_values(record) == ["张三", "13957001200", "92340202MA2N1234X5"]
    assert known_values({"merchant": {"credit_code": "91340200MA2N1234X5"}}) == []


def test_one_masker_one_trim() -> None:
    assert mask_name("王") == "*"
    assert trim("a\n b\r\n\tc") == "a b c"  # a header or log line cannot be split
    assert trim("x" * 600) == "x" * 511 + "…"


@settings(max_examples=300, deadline=None)
@given(canaries(), st.lists(st.integers(0, 20), min_size=9, max_size=9))
def test_no_canary_survives_masking_with_its_known_values(canary: Canary, forms: list[int]) -> None:
    text = description(canary, forms)
    known = [canary.name, canary.mobile, canary.id_number, canary.address, canary.email]
    assert not leaks("masked", mask_text(text, known), [canary])


@settings(max_examples=300, deadline=None)
@given(canaries(), st.sampled_from(PATTERN_FIELDS), st.integers(0, 20))
def test_patterns_alone_catch_every_written_form(canary: Canary, field: str, form: int) -> None:
    value = canary.values()[field]
    text = f"来电人称其{written(field, value, form)}有误"
    masked = mask_text(text)  # no known values: a third party's number in free text
    only = Canary(**{f: (v if f == field else "\x00") for f, v in canary.values().items()})
    assert not leaks("masked", masked, [only]), masked


def test_the_written_forms_cover_every_field() -> None:
    assert set(PATTERN_FIELDS) <= set(WRITTEN_FIELDS)
