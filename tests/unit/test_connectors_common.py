"""Shared family helpers: formats, masking, Retry-After, answer codes."""

from __future__ import annotations

import pytest

from connectors.families.common import (
    AnswerCodes,
    detail,
    http_outcome,
    interpret_json,
    iso_local,
    iso_utc,
    json_answer,
    json_document,
    local_time,
    lookup,
    parse_retry_after,
    sm3_hex,
    yuan,
)
from gateway.pii import mask_name, trim
from gateway.sdk import Accepted, BureauResponse, Irregular, Rejected, RetryLater
from tests.unit.connector_samples import RECEIVED_MS


def test_local_time_is_china_standard_time() -> None:
    assert local_time(RECEIVED_MS, "%Y%m%d%H%M%S") == "20260102100405"
    assert iso_local(RECEIVED_MS) == "2026-01-02T10:04:05+08:00"
    assert iso_utc(RECEIVED_MS) == "2026-01-02T02:04:05Z"


@pytest.mark.parametrize(
    ("fen", "text"),
    [(12850, "128.50"), (5, "0.05"), (100, "1.00"), (0, "0.00"), (-250, "-2.50"), (None, "")],
)
def test_yuan(fen: int | None, text: str) -> None:
    assert yuan(fen) == text


def test_masking_is_the_one_masker_of_gateway_pii() -> None:
    assert mask_name("王小明") == "王**"
    assert mask_name("王") == "*"  # the family's own copy showed a one-character name in clear
    assert detail("INVALID 手机 139-5700-1200 身份证 11010119900307663X") == (
        "INVALID 手机 139****1200 身份证 110101********663X"
    )
    assert len(detail("x" * 300)) == 200


def test_trim_flattens_and_cuts() -> None:
    assert trim("a\n  b\tc") == "a b c"
    assert trim("x" * 300, 10) == "x" * 9 + "…"


def test_sm3_standard_vectors() -> None:
    # GB/T 32905-2016 appendix A, examples 1 and 2.
    assert sm3_hex(b"abc") == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert sm3_hex(b"abcd" * 16) == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


@pytest.mark.parametrize(
    ("value", "date", "expected"),
    [
        ("120", None, 120.0),
        (" 3 ", None, 3.0),
        ("1.5", None, 1.5),
        ("-4", None, 0.0),
        ("Wed, 21 Oct 2026 07:28:30 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2026 07:27:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2026 07:28:30 GMT", None, None),
        ("Wed, 21 Oct 2026 07:28:30 GMT", "garbage", None),
        ("soon", None, None),
        ("nan", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_parse_retry_after(value: str | None, date: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, date) == expected


def test_http_outcome_reads_429_and_5xx() -> None:
    limited = BureauResponse(429, {"retry-after": "7"}, b"")
    assert http_outcome(limited) == RetryLater("rate_limited", retry_after=7.0)
    assert http_outcome(BureauResponse(502, {}, b"")) == RetryLater("server_error")
    assert http_outcome(BureauResponse(408, {}, b"")) == RetryLater("timeout")
    assert http_outcome(BureauResponse(200, {}, b"")) is None
    assert http_outcome(BureauResponse(404, {}, b"")) is None


CODES = AnswerCodes(
    code_field="code",
    case_field="data.no",
    message_field="msg",
    ok=frozenset({"0"}),
    duplicate=frozenset({"2"}),
    busy=frozenset({"9"}),
    auth=frozenset({"4"}),
)


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        ({"code": 0, "data": {"no": "C1"}}, Accepted("C1")),
        ({"code": "2", "data": {"no": "C1"}}, Accepted("C1")),
        (
            {"code": "0", "data": {}},
            Irregular("missing_case_number", "a success answer without a case number"),
        ),
        (
            {"code": "2", "data": {"no": " "}},
            Irregular("missing_case_number", "a success answer without a case number"),
        ),
        (
            {"code": "0", "data": {"no": {"x": "C1"}}},
            Irregular("missing_case_number", "a success answer without a case number"),
        ),
        ({"code": "9"}, RetryLater("busy")),
        ({"code": "4"}, RetryLater("auth")),
        ({"code": "1", "msg": "缺少电话"}, Rejected("business_rule", "1 缺少电话")),
        ({}, Rejected("business_rule", "")),
    ],
)
def test_answer_codes(answer: dict[str, object], outcome: object) -> None:
    assert CODES.outcome(answer) == outcome


def test_lookup_follows_dotted_paths() -> None:
    assert lookup({"a": {"b": {"c": 1}}}, "a.b.c") == 1
    assert lookup({"a": 1}, "a.b") is None


DEEP_JSON = b"[" * 30_000 + b"]" * 30_000
TOO_DEEP = Irregular("answer_too_deep", "JSON nested deeper than the parser goes")


def test_json_too_deep_for_the_parser_is_irregular_not_a_recursion_error() -> None:
    assert json_document(DEEP_JSON) == TOO_DEEP
    assert json_document(b'{"a":' * 5_000 + b"1" + b"}" * 5_000) == TOO_DEEP
    assert json_answer(DEEP_JSON) is None
    assert json_document(b'{"a": [[[1]]]}') == {"a": [[[1]]]}
    assert json_document(b"<html>") is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, TOO_DEEP),
        (409, TOO_DEEP),
        (503, RetryLater("server_error")),
        (400, Rejected("http_400", "[" * 200)),
    ],
)
def test_interpret_json_on_deep_json(status: int, outcome: object) -> None:
    response = BureauResponse(status, {}, DEEP_JSON)
    assert interpret_json(response, CODES, RetryLater("auth")) == outcome


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (
            200,
            b'{"code":"0"}',
            Irregular("missing_case_number", "a success answer without a case number"),
        ),
        (
            200,
            b'{"code":"0","data":{"no":null}}',
            Irregular("missing_case_number", "a success answer without a case number"),
        ),
        (
            409,
            b'{"data":{}}',
            Irregular("missing_case_number", "a success answer without a case number"),
        ),
        (409, b"", RetryLater("conflict")),
        (200, b"<html><h1>502 Bad Gateway</h1></html>", RetryLater("unreadable_answer")),
        (200, b'{"code":"0","data":{"no":"C', RetryLater("unreadable_answer")),
        (200, b"[1, 2]", RetryLater("unreadable_answer")),
    ],
)
def test_a_success_without_a_case_number_is_irregular_an_unreadable_body_is_retried(
    status: int, body: bytes, outcome: object
) -> None:
    response = BureauResponse(status, {}, body)
    assert interpret_json(response, CODES, RetryLater("auth")) == outcome
