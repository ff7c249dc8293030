"""The connectors' inbound side (pure): callbacks verified in each city's own scheme, polls.

The bureau's requests here are built by hand from the family specs (not with the connector's
own signing helpers), so a connector that verified the wrong string would fail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from gateway.connectors_registry import load_connectors
from gateway.errors import InboundRefused
from gateway.sdk import (
    BureauResponse,
    CallbackInbound,
    Credentials,
    InboundRequest,
    PollInbound,
    RequestContext,
    inbound_kind,
)

pytestmark = pytest.mark.unit

CITIES = ["beijing", "guangzhou", "shenzhen", "chongqing", "hangzhou", "hefei", "nanchang",
          "suzhou", "wuhu", "nanjing"]  # fmt: skip
CONNECTORS = load_connectors(set(CITIES))
CREDS = Credentials(client_id="greenchannel-x", secret="s3cret")
EID = "0b4e0c2a-1111-5222-8333-444455556666"
TS = 1_770_688_800_000  # 2026-02-10 10:00 CST


def _hmac_request(
    path: str, body: bytes, *, secret: str = "s3cret", nonce: str = "n-1"
) -> InboundRequest:
    stamp = str(TS)
    digest = hashlib.sha256(body).hexdigest()
    message = f"POST\n{path}\n{stamp}\n{nonce}\n{digest}".encode()
    sig = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    headers = {
        "x-client-id": "greenchannel-x",
        "x-timestamp": stamp,
        "x-nonce": nonce,
        "x-signature": sig,
        "content-type": "application/json",
    }
    return InboundRequest("POST", path, headers, body)


def _events_body(*events: dict[str, str]) -> bytes:
    return json.dumps({"events": list(events)}, ensure_ascii=False).encode()


def test_each_family_has_a_way_in_and_both_ways_are_used() -> None:
    kinds = {c: inbound_kind(CONNECTORS[c]) for c in CITIES}
    by_family: dict[str, set[str]] = {}
    for city, kind in kinds.items():
        by_family.setdefault(CONNECTORS[city].family, set()).add(kind)
    assert all(k != {"none"} for k in by_family.values()), by_family
    assert sum(k == "callback" for k in kinds.values()) >= 2
    assert sum(k == "poll" for k in kinds.values()) >= 2
    for city, kind in kinds.items():
        protocol = CallbackInbound if kind == "callback" else PollInbound
        assert isinstance(CONNECTORS[city], protocol), city


@pytest.mark.parametrize("city", ["beijing", "hangzhou", "nanjing"])
def test_json_hmac_callbacks_verify_and_read(city: str) -> None:
    c = CONNECTORS[city]
    assert isinstance(c, CallbackInbound)
    body = _events_body(
        {"idempotency_key": EID, "case_no": "BJ-1", "status": "accepted",
         "time": "2026-02-10T10:00:00+08:00", "event_id": "e1", "remark": "已受理"},
        {"idempotency_key": EID, "status": "returned", "reason": "not_jurisdiction",
         "time": "2026-02-10 11:00:00"},
        {"idempotency_key": EID, "status": "closed", "result": "settled", "time": str(TS)},
    )  # fmt: skip
    got = c.parse_callback(_hmac_request(c.callback_path, body), CREDS)
    assert got.timestamp_ms == TS and got.nonce == "n-1"
    a, r, closed = got.events
    assert (a.state, a.case_number, a.occurred_at_ms, a.bureau_ref) == (
        "ACCEPTED",
        "BJ-1",
        TS,
        "e1",
    )
    assert (r.state, r.return_reason, r.occurred_at_ms) == (
        "RETURNED",
        "NOT_JURISDICTION",
        TS + 3_600_000,
    )
    assert (closed.state, closed.closure) == ("CLOSED", "SETTLED")
    ok = c.callback_answer("ok")
    assert ok.status == 200 and json.loads(ok.body)["code"] == "0"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda r: InboundRequest(r.method, r.path, r.headers, r.body + b" "), "bad_signature"),
        (lambda r: InboundRequest(r.method, "/other", r.headers, r.body), "bad_signature"),
        (lambda r: InboundRequest(r.method, r.path, {**r.headers, "x-client-id": "x"}, r.body), "unknown_client"),
        (lambda r: InboundRequest(r.method, r.path, {**r.headers, "x-timestamp": "soon"}, r.body), "malformed"),
    ],
)  # fmt: skip
def test_json_hmac_refuses_what_does_not_verify(tamper: object, reason: str) -> None:
    c = CONNECTORS["beijing"]
    assert isinstance(c, CallbackInbound)
    req = _hmac_request(c.callback_path, _events_body())
    with pytest.raises(InboundRefused) as info:
        c.parse_callback(tamper(req), CREDS)  # type: ignore[operator]
    assert info.value.reason == reason


def test_json_hmac_unknown_status_passes_on_as_unknown_and_garbage_is_malformed() -> None:
    c = CONNECTORS["nanjing"]
    assert isinstance(c, CallbackInbound)
    body = _events_body({"idempotency_key": EID, "status": "teleported", "time": str(TS)})
    (event,) = c.parse_callback(_hmac_request(c.callback_path, body), CREDS).events
    assert event.state == "UNKNOWN"
    with pytest.raises(InboundRefused) as info:
        c.parse_callback(_hmac_request(c.callback_path, b'{"events": [{"status": 1}]}'), CREDS)
    assert info.value.reason == "malformed"
    answer = c.callback_answer("rate_limited")
    assert answer.status == 429 and answer.headers["retry-after"]


def _sm3_callback(city: str, params: dict[str, str], secret: str = "s3cret") -> InboundRequest:
    c = CONNECTORS[city]
    app, stamp, nonce = c.app_id_field, c.timestamp_field, c.nonce_field  # type: ignore[attr-defined]
    seconds = city == "wuhu"
    all_params = {
        **params,
        app: "greenchannel-x",
        stamp: str(TS // 1000 if seconds else TS),
        nonce: "n-2",
    }
    kept = {k: v for k, v in all_params.items() if v}
    base = "&".join(f"{k}={kept[k]}" for k in sorted(kept))
    sign = hashlib.new("sm3", f"{base}&key={secret}".encode()).hexdigest()
    if c.upper:  # type: ignore[attr-defined]
        sign = sign.upper()
    body = urlencode({**kept, c.sign_field: sign}).encode()  # type: ignore[attr-defined]
    return InboundRequest("POST", c.callback_path, {}, body)  # type: ignore[attr-defined]


@pytest.mark.parametrize("city", ["hefei", "wuhu", "nanchang"])
def test_form_sm3_callbacks_verify_and_answer_in_the_city_format(city: str) -> None:
    c = CONNECTORS[city]
    assert isinstance(c, CallbackInbound)
    req = _sm3_callback(
        city,
        {"out_id": EID, "case_id": "HF-9", "status": "negotiating",
         "event_time": "2026-02-10 10:00:00", "event_id": "7", "reason": "", "result": ""},
    )  # fmt: skip
    got = c.parse_callback(req, CREDS)
    assert got.timestamp_ms == TS and got.nonce == "n-2"
    (event,) = got.events
    assert (event.escalation_id, event.state, event.case_number) == (EID, "NEGOTIATION", "HF-9")
    assert event.occurred_at_ms == TS
    wrong = _sm3_callback(city, {"out_id": EID, "status": "closed"}, secret="other")
    with pytest.raises(InboundRefused) as info:
        c.parse_callback(wrong, CREDS)
    assert info.value.reason == "bad_signature"
    ok, bad = c.callback_answer("ok"), c.callback_answer("bad_signature")
    fmt = c.answer_format  # type: ignore[attr-defined]
    read = json.loads if fmt == "json" else (lambda b: dict(parse_qsl(b.decode())))
    assert read(ok.body)["result_code"] == "SUCCESS"
    assert read(bad.body)["result_code"] == "SIGN_ERROR"


SOAP_ANSWER = """<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
<q:QueryCaseUpdatesResponse xmlns:q="{ns}"><q:nextCursor>42</q:nextCursor>
<q:update><q:outId>{eid}</q:outId><q:caseNo>GZ-1</q:caseNo><q:status>mediating</q:status>
<q:time>2026-02-10T10:00:00+08:00</q:time><q:eventId>41</q:eventId></q:update>
<q:update><q:outId>{eid}</q:outId><q:status>closed</q:status><q:result>not_settled</q:result>
<q:time>2026-02-11T10:00:00+08:00</q:time><q:eventId>42</q:eventId></q:update>
</q:QueryCaseUpdatesResponse></soap:Body></soap:Envelope>"""


@pytest.mark.parametrize("city", ["guangzhou", "chongqing"])
def test_soap_polls_are_signed_and_answers_read(city: str) -> None:
    c = CONNECTORS[city]
    assert isinstance(c, PollInbound)
    ctx = RequestContext(TS, "n-3", CREDS)
    req = c.poll_request("41", ctx)
    text = req.body.decode()
    assert "QueryCaseUpdates" in text and ">41<" in text and "PasswordDigest" in text
    created = "2026-02-10T02:00:00Z"
    digest = base64.b64encode(hashlib.sha1(b"n-3" + created.encode() + b"s3cret").digest()).decode()
    assert digest in text
    assert req.headers["SOAPAction"].endswith('#QueryCaseUpdates"')
    ns = c.namespace  # type: ignore[attr-defined]
    page = c.parse_poll(BureauResponse(200, {}, SOAP_ANSWER.format(ns=ns, eid=EID).encode()))
    assert page.cursor == "42"
    assert [(e.state, e.closure) for e in page.events] == [
        ("MEDIATION", None),
        ("CLOSED", "NOT_SETTLED"),
    ]
    with pytest.raises(ValueError):
        c.parse_poll(BureauResponse(500, {}, b"oops"))
    with pytest.raises(ValueError):
        c.parse_poll(BureauResponse(200, {}, b"<!DOCTYPE x><x/>"))


@pytest.mark.parametrize("city", ["shenzhen", "suzhou"])
def test_oauth_json_polls_carry_the_token_and_read_pages(city: str) -> None:
    c = CONNECTORS[city]
    assert isinstance(c, PollInbound)
    req = c.poll_request("", RequestContext(TS, "n", CREDS, bearer_token="tok"))
    assert req.method == "GET" and req.headers["Authorization"] == "Bearer tok"
    parts = urlsplit(req.path)
    assert (
        parts.path.endswith("/case-updates")
        and dict(parse_qsl(parts.query, keep_blank_values=True))["cursor"] == ""
    )
    body = json.dumps({"next_cursor": "c2", "updates": [
        {"idempotency_key": EID, "status": "accepted", "time": str(TS), "case_no": "SZ-1"}]}).encode()  # fmt: skip
    page = c.parse_poll(BureauResponse(200, {}, body))
    assert page.cursor == "c2" and page.events[0].state == "ACCEPTED"
    with pytest.raises(ValueError):
        c.parse_poll(BureauResponse(401, {}, b"{}"))
    with pytest.raises(ValueError):
        c.poll_request("", RequestContext(TS, "n", CREDS))
