"""The SOAP family: envelope, WS-Security digest, escaping, safe parsing, faults."""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import chongqing, guangzhou
from connectors.families.common import iso_utc
from connectors.families.soap import (
    BASE64_BINARY,
    PASSWORD_DIGEST,
    SOAP_NS,
    WSSE_NS,
    WSU_NS,
    envelope,
    parse_xml,
    password_digest,
    xml_text,
)
from gateway.sdk import (
    Accepted,
    BureauResponse,
    Credentials,
    Irregular,
    Outcome,
    Rejected,
    RequestContext,
    RetryLater,
)
from tests.unit.connector_samples import BASE, NOW_MS, context, escalation

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


# --- the envelope is written as xml.etree writes the same tree ------------------------------


def _tree_envelope(ctx: RequestContext, namespace: str, operation: str, fields: Any) -> bytes:
    """The reference: the envelope built and serialised with xml.etree (the former code)."""
    created = iso_utc(ctx.now_ms)
    nonce = ctx.nonce.encode("utf-8")
    root = ET.Element(f"{{{SOAP_NS}}}Envelope")
    header = ET.SubElement(root, f"{{{SOAP_NS}}}Header")
    security = ET.SubElement(
        header, f"{{{WSSE_NS}}}Security", {f"{{{SOAP_NS}}}mustUnderstand": "1"}
    )
    token = ET.SubElement(security, f"{{{WSSE_NS}}}UsernameToken")
    ET.SubElement(token, f"{{{WSSE_NS}}}Username").text = xml_text(ctx.credentials.client_id)
    digest = password_digest(nonce, created, ctx.credentials.secret)
    ET.SubElement(token, f"{{{WSSE_NS}}}Password", {"Type": PASSWORD_DIGEST}).text = digest
    encoded = base64.b64encode(nonce).decode("ascii")
    ET.SubElement(token, f"{{{WSSE_NS}}}Nonce", {"EncodingType": BASE64_BINARY}).text = encoded
    ET.SubElement(token, f"{{{WSU_NS}}}Created").text = created
    body = ET.SubElement(root, f"{{{SOAP_NS}}}Body")
    op = ET.SubElement(body, f"{{{namespace}}}{operation}")
    for key, value in fields:
        ET.SubElement(op, f"{{{namespace}}}{key}").text = xml_text(value)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=150, deadline=None)
@given(description=_TEXT, name=_TEXT, client_id=_TEXT, nonce=_TEXT, cursor=_TEXT)
def test_envelope_is_byte_for_byte_what_elementtree_writes(
    description: str, name: str, client_id: str, nonce: str, cursor: str
) -> None:
    ctx = RequestContext(NOW_MS, nonce, Credentials(client_id, "s3cret"))
    esc = escalation(description=description, consumer=replace(BASE.consumer, name=name))
    for module in (guangzhou, chongqing):
        c = module.connector
        want = _tree_envelope(ctx, c.namespace, c.operation, c.fields(esc))
        assert c.translate(esc, ctx).body == want
        poll = [("cursor", cursor), ("limit", str(c.poll_limit))]
        want = _tree_envelope(ctx, c.namespace, "QueryCaseUpdates", poll)
        assert c.poll_request(cursor, ctx).body == want


@pytest.mark.parametrize("namespace", [GZ, SOAP_NS, 'urn:a&b<"c">'])
def test_envelope_numbers_namespaces_as_elementtree_does(namespace: str) -> None:
    fields = [("a", "1 & 2"), ("b", "<x>")]
    got = envelope(context(), namespace, "Op", fields)
    assert got == _tree_envelope(context(), namespace, "Op", fields)


def test_envelope_without_fields_is_an_empty_operation_element() -> None:
    assert envelope(context(), GZ, "Op", []) == _tree_envelope(context(), GZ, "Op", [])
