"""The SOAP family: envelope, WS-Security digest, escaping, safe parsing, faults."""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET

import pytest

from connectors import chongqing, guangzhou
from connectors.families.soap import (
    PASSWORD_DIGEST,
    SOAP_NS,
    WSSE_NS,
    WSU_NS,
    parse_xml,
    password_digest,
)
from gateway.sdk import Accepted, BureauResponse, Irregular, Outcome, Rejected, RetryLater
from tests.unit.connector_samples import context, escalation

GZ = "urn:gz12315:complaint:v1"


def test_password_digest_vector() -> None:
    nonce = b"0123456789abcdef"
    raw = nonce + b"2026-01-02T02:05:05Z" + b"s3cret"
    assert password_digest(nonce, "2026-01-02T02:05:05Z", "s3cret") == (
        base64.b64encode(hashlib.sha1(raw).digest()).decode()
    )
    assert password_digest(nonce, "2026-01-02T02:05:05Z", "s3cret") == (
        "yPLf005xVTxZzIppGCFOlICh/5M="
    )


def test_envelope_carries_username_token_and_fields() -> None:
    request = guangzhou.connector.translate(escalation(), context())
    assert request.headers["SOAPAction"] == f'"{GZ}#SubmitComplaint"'
    assert request.headers["Content-Type"] == "text/xml; charset=utf-8"
    root = ET.fromstring(request.body)
    token = root.find(f"{{{SOAP_NS}}}Header/{{{WSSE_NS}}}Security/{{{WSSE_NS}}}UsernameToken")
    assert token is not None
    assert token.findtext(f"{{{WSSE_NS}}}Username") == "greenchannel-test"
    password = token.find(f"{{{WSSE_NS}}}Password")
    assert password is not None and password.get("Type") == PASSWORD_DIGEST
    assert token.findtext(f"{{{WSU_NS}}}Created") == "2026-01-02T02:05:05Z"
    assert base64.b64decode(token.findtext(f"{{{WSSE_NS}}}Nonce") or "") == b"0123456789abcdef"
    assert password.text == password_digest(b"0123456789abcdef", "2026-01-02T02:05:05Z", "s3cret")
    op = root.find(f"{{{SOAP_NS}}}Body/{{{GZ}}}SubmitComplaint")
    assert op is not None and op.findtext(f"{{{GZ}}}externalId") == "esc-7f3a9c2e"


def test_everything_is_escaped_and_illegal_characters_dropped() -> None:
    nasty = "</content><x>&amp;]]>\x00\x1b 完"
    request = guangzhou.connector.translate(escalation(description=nasty), context())
    root = ET.fromstring(request.body)
    assert root.findtext(f".//{{{GZ}}}content") == "</content><x>&amp;]]> 完"


def test_parse_xml_refuses_doctype_and_entities() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><a>&x;</a>'
    assert parse_xml(bomb) is None
    assert parse_xml(b"<a/>\xff") is None
    assert parse_xml(b"<a>ok</a>") is not None


def _envelope(inner: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP_NS}"><s:Body>'
        f"{inner}</s:Body></s:Envelope>"
    ).encode()


def _answer(code: str, case: str = "") -> bytes:
    return _envelope(
        f'<r:SubmitComplaintResponse xmlns:r="{GZ}"><r:resultCode>{code}</r:resultCode>'
        f"<r:resultMessage>m</r:resultMessage><r:caseNumber>{case}</r:caseNumber>"
        "</r:SubmitComplaintResponse>"
    )


def _fault(code: str) -> bytes:
    return _envelope(
        f"<s:Fault><faultcode>{code}</faultcode><faultstring>why</faultstring></s:Fault>"
    )


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, _answer("0000", "GZ1"), Accepted("GZ1")),
        (200, _answer("0001", "GZ1"), Accepted("GZ1")),
        (200, _answer("9999"), RetryLater("busy")),
        (200, _answer("1001"), Rejected("business_rule", "1001 m")),
        (500, _fault("s:Client"), Rejected("soap_client_fault", "Client why")),
        (
            500,
            _fault("s:Client.Validation"),
            Rejected("soap_client_fault", "Client.Validation why"),
        ),
        (500, _fault("s:Server"), RetryLater("soap_server_fault")),
        (500, _fault("wsse:FailedAuthentication"), RetryLater("auth")),
        (500, _fault("s:MustUnderstand"), RetryLater("auth")),
        (503, b"", RetryLater("server_error")),
        (429, b"busy", RetryLater("rate_limited")),
        (200, b"<html/>", RetryLater("unreadable_answer")),
        (200, _envelope("<other/>"), RetryLater("unreadable_answer")),
        (
            200,
            _answer("0000"),
            Irregular("missing_case_number", "a success answer without a case number"),
        ),
        (404, b"no", Rejected("http_404", "no")),
    ],
)
def test_interpret(status: int, body: bytes, outcome: Outcome) -> None:
    assert guangzhou.connector.interpret(BureauResponse(status, {}, body)) == outcome


def test_chongqing_http_date_retry_after() -> None:
    headers = {
        "retry-after": "Fri, 02 Jan 2026 02:05:09 GMT",
        "date": "Fri, 02 Jan 2026 02:05:05 GMT",
    }
    outcome = chongqing.connector.interpret(BureauResponse(429, headers, b""))
    assert outcome == RetryLater("rate_limited", retry_after=4.0)
