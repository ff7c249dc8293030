"""The form+SM3 family: parameter set, sign vectors, JSON and form answers."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl, urlencode

import pytest

from connectors import hefei, nanchang, wuhu
from connectors.families.common import sm3_hex
from connectors.families.form_sm3 import form_body, sign_base, sm3_signature
from gateway.sdk import Accepted, BureauResponse, Irregular, Outcome, Rejected, RetryLater
from tests.unit.connector_samples import NOW_MS, context, escalation


def test_sign_vector() -> None:
    assert sign_base({"b": "2", "a": "1"}) == "a=1&b=2"
    assert sm3_signature({"b": "2", "a": "1"}, "k") == sm3_hex(b"a=1&b=2&key=k")
    assert sm3_signature({"b": "2", "a": "1"}, "k") == (
        "99b20daef85d368db6e39d9abfb262f988a75ff8c334302028567bfb5ed7023c"
    )
    assert sm3_signature({"a": "1"}, "k", upper=True) == sm3_hex(b"a=1&key=k").upper()


def test_hefei_params_are_sorted_signed_and_without_empties() -> None:
    request = hefei.connector.translate(escalation(order_id=None, amount_fen=None), context())
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded; charset=utf-8"
    pairs = parse_qsl(request.body.decode())
    keys = [k for k, _ in pairs]
    assert keys[-1] == "sign" and keys[:-1] == sorted(keys[:-1])
    params = dict(pairs)
    assert "ddh" not in params and "je" not in params
    assert params["app_id"] == "greenchannel-test"
    assert params["timestamp"] == str(NOW_MS)
    assert params["nonce_str"] == "0123456789abcdef"
    assert params["sign_type"] == "SM3"
    unsigned = {k: v for k, v in params.items() if k != "sign"}
    base = "&".join(f"{k}={unsigned[k]}" for k in sorted(unsigned))
    assert params["sign"] == sm3_hex(f"{base}&key=s3cret".encode())


def test_wuhu_signs_upper_case_with_seconds() -> None:
    params = dict(parse_qsl(wuhu.connector.translate(escalation(), context()).body.decode()))
    assert params["ts"] == str(NOW_MS // 1000)
    assert params["appid"] == "greenchannel-test"
    assert params["sign"] == params["sign"].upper()


def test_nanchang_fixed_params_and_datetime_timestamp() -> None:
    params = dict(parse_qsl(nanchang.connector.translate(escalation(), context()).body.decode()))
    assert params["method"] == "12315.tousu.create"
    assert params["v"] == "1.0"
    assert params["timestamp"] == "2026-01-02 10:05:05"
    assert params["app_key"] == "greenchannel-test"


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, b'{"ret":"0","data":{"case_no":"HF1"}}', Accepted("HF1")),
        (200, b'{"ret":"2","data":{"case_no":"HF1"}}', Accepted("HF1")),
        (200, b'{"ret":"9"}', RetryLater("busy")),
        (200, b'{"ret":"40","msg":"sign"}', RetryLater("auth")),
        (200, b'{"ret":"1","msg":"missing lxdh"}', Rejected("business_rule", "1 missing lxdh")),
        (200, b"not json", RetryLater("unreadable_answer")),
        (
            200,
            b'{"ret":"0","data":{}}',
            Irregular("missing_case_number", "a success answer without a case number"),
        ),
        (
            200,
            b'{"ret":"0","data":' * 3000 + b"1" + b"}" * 3000,
            Irregular("answer_too_deep", "JSON nested deeper than the parser goes"),
        ),
        (401, b"", RetryLater("auth")),
        (429, b"", RetryLater("rate_limited")),
        (500, b"", RetryLater("server_error")),
        (404, b"", Rejected("http_404", "")),
    ],
)
def test_hefei_json_answers(status: int, body: bytes, outcome: Outcome) -> None:
    assert hefei.connector.interpret(BureauResponse(status, {}, body)) == outcome


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        (b"result_code=SUCCESS&err_msg=&case_id=WH1", Accepted("WH1")),
        (b"result_code=DUPLICATE&case_id=WH1", Accepted("WH1")),
        (b"result_code=BUSY", RetryLater("busy")),
        (b"result_code=SIGN_ERROR", RetryLater("auth")),
        (b"result_code=PARAM_ERROR&err_msg=missing+consumer_tel",
         Rejected("business_rule", "PARAM_ERROR missing consumer_tel")),
        (b"%%%", RetryLater("unreadable_answer")),
        (b"result_code=SUCCESS&err_msg=", Irregular("missing_case_number", "a success answer without a case number")),
    ],
)  # fmt: skip
def test_wuhu_form_answers(body: bytes, outcome: Outcome) -> None:
    assert wuhu.connector.interpret(BureauResponse(200, {}, body)) == outcome


def test_nanchang_integer_codes() -> None:
    ok = BureauResponse(200, {}, b'{"errcode":0,"errmsg":"ok","ajh":"NC1"}')
    assert nanchang.connector.interpret(ok) == Accepted("NC1")
    stale = BureauResponse(200, {}, b'{"errcode":40002,"errmsg":"timestamp"}')
    assert nanchang.connector.interpret(stale) == RetryLater("auth")


def test_form_body_is_byte_for_byte_what_urlencode_writes() -> None:
    rnd = random.Random(7)
    alphabet = [chr(c) for c in range(128)] + list("投诉消费者 €é\U0001f600\u00a0\u3000+&=%~")
    for _ in range(2000):
        params = {
            "".join(rnd.choices(alphabet, k=rnd.randrange(0, 8))): "".join(
                rnd.choices(alphabet, k=rnd.randrange(0, 60))
            )
            for _ in range(rnd.randrange(0, 6))
        }
        assert form_body(params) == urlencode(params).encode("ascii")
    for b in range(256):  # every byte of UTF-8 text once, alone
        text = bytes([b]).decode("latin-1")
        assert form_body({"k": text}) == urlencode({"k": text}).encode("ascii")
