"""The JSON+HMAC family: signed headers, signature vectors, answer classification."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from connectors import beijing, hangzhou
from connectors.families.json_hmac import signature, string_to_sign
from gateway.sdk import Accepted, BureauResponse, Irregular, Outcome, Rejected, RetryLater
from tests.unit.connector_samples import NOW_MS, context, escalation


def test_signature_vector() -> None:
    message = string_to_sign("POST", "/api/12315/v1/complaints", "1767319445000",
                             "0123456789abcdef", b'{"a":1}')  # fmt: skip
    assert message == (
        "POST\n/api/12315/v1/complaints\n1767319445000\n0123456789abcdef\n"
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    )
    assert signature("dev-only-beijing-secret", message) == (
        "763f8b49ef4f3e1ce606640df0c178359d683109e02876c70c180e3ba6dcca02"
    )


def test_translate_signs_headers() -> None:
    request = beijing.connector.translate(escalation(), context())
    h = request.headers
    assert (request.method, request.path) == ("POST", "/api/12315/v1/complaints")
    assert h["Content-Type"] == "application/json; charset=utf-8"
    assert h["X-Client-Id"] == "greenchannel-test"
    assert h["X-Timestamp"] == str(NOW_MS)
    assert h["X-Nonce"] == "0123456789abcdef"
    assert h["X-Idempotency-Key"] == "esc-7f3a9c2e"
    canonical = (
        f"POST\n/api/12315/v1/complaints\n{NOW_MS}\n0123456789abcdef\n"
        f"{hashlib.sha256(request.body).hexdigest()}"
    )
    expected = hmac.new(b"s3cret", canonical.encode(), hashlib.sha256).hexdigest()
    assert h["X-Signature"] == expected


def test_translate_is_deterministic_and_compact_utf8() -> None:
    first = beijing.connector.translate(escalation(), context())
    assert first == beijing.connector.translate(escalation(), context())
    assert "王小明".encode() in first.body
    assert b": " not in first.body
    assert first != beijing.connector.translate(escalation(), context(secret="other"))


def _json(status: int, body: object, **headers: str) -> BureauResponse:
    return BureauResponse(status, headers, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        (_json(200, {"code": "0000", "data": {"slbh": "BJ1"}}), Accepted("BJ1")),
        (_json(200, {"code": "2001", "data": {"slbh": "BJ1"}}), Accepted("BJ1")),
        (_json(200, {"code": "9001", "msg": "busy"}), RetryLater("busy")),
        (_json(200, {"code": "1001", "msg": "缺少tsrdh"}),
         Rejected("business_rule", "1001 缺少tsrdh")),
        (_json(401, {"code": "4010"}), RetryLater("auth")),
        (_json(403, {}), RetryLater("auth")),
        (_json(409, {"data": {"slbh": "BJ1"}}), Accepted("BJ1")),
        (_json(429, {}, **{"retry-after": "2"}), RetryLater("rate_limited", retry_after=2.0)),
        (_json(503, {}), RetryLater("server_error")),
        (_json(400, {"code": "1002", "msg": "bad"}), Rejected("business_rule", "1002 bad")),
        (BureauResponse(404, {}, b"nope"), Rejected("http_404", "nope")),
        (BureauResponse(200, {}, b"<html>"), RetryLater("unreadable_answer")),
        (_json(200, {"code": "0000", "data": {}}), Irregular("missing_case_number", "a success answer without a case number")),
        (_json(200, {"code": "0000"}), Irregular("missing_case_number", "a success answer without a case number")),
        (_json(409, {"code": "2001"}), Irregular("missing_case_number", "a success answer without a case number")),
        (BureauResponse(302, {}, b""), RetryLater("unexpected_status")),
    ],
)  # fmt: skip
def test_interpret_beijing(response: BureauResponse, outcome: Outcome) -> None:
    assert beijing.connector.interpret(response) == outcome


def test_hangzhou_duplicate_is_a_409() -> None:
    answer = _json(409, {"resultCode": "DUPLICATE", "caseNo": "HZ9"})
    assert hangzhou.connector.interpret(answer) == Accepted("HZ9")
    assert hangzhou.connector.interpret(_json(201, {"resultCode": "SUCCESS", "caseNo": "HZ1"})) == (
        Accepted("HZ1")
    )


def test_no_token_hooks() -> None:
    assert beijing.connector.token_grant is None
    with pytest.raises(NotImplementedError):
        beijing.connector.token_request(context())
