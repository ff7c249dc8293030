"""SOAP 1.1 with a WS-Security UsernameToken (Guangzhou, Chongqing).

Request: ``POST <path>``, ``Content-Type: text/xml; charset=utf-8``, ``SOAPAction: "<action>"``,
an envelope built with ``xml.etree`` (all text escaped, characters XML 1.0 forbids removed)::

    Envelope
      Header / wsse:Security / wsse:UsernameToken
        Username  credentials.client_id
        Password  Type=#PasswordDigest: base64(sha1(nonce + created + secret))
        Nonce     base64(ctx.nonce as UTF-8)        (the bureau refuses a replayed nonce)
        Created   ctx.now_ms as ISO 8601 UTC "...Z"  (the bureau refuses a stale one)
      Body / <operation xmlns=city namespace> / one child per field (idempotency key included)

We chose the OASIS digest over a bespoke HMAC header: both bureaus' SOAP stacks (CXF, .NET)
check it out of the box, and the secret never travels.

**Case updates (inbound: poll).** We ask ``POST <poll_path or path>`` with SOAPAction
``"<namespace>#QueryCaseUpdates"`` and the same WS-Security header; body
``<QueryCaseUpdates><cursor>…</cursor><limit>100</limit></QueryCaseUpdates>`` (cursor ``""`` at
the start). The bureau answers ``<QueryCaseUpdatesResponse><nextCursor>…</nextCursor>`` with one
``<update>`` per change (children ``outId``, ``caseNo``, ``status``, ``time``, ``reason``,
``result``, ``eventId``, ``remark``; words as in the JSON+HMAC family).

Answers are parsed with ``xml.etree`` after refusing any DOCTYPE or ENTITY declaration (no
entity expansion, no external fetches). SOAP faults: ``Client*`` -> Rejected;
``Server*`` -> RetryLater; WS-Security faults (FailedAuthentication, InvalidSecurity...) and
``MustUnderstand``/``VersionMismatch`` -> RetryLater (our configuration, never a dead letter).
Otherwise the response element's children are read as a flat answer with the city's codes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from connectors.families.common import (
    AnswerCodes,
    NoToken,
    detail,
    http_outcome,
    http_rejected,
    iso_utc,
)
from connectors.families.inbound import StatusCodes, event_time_ms, result_fields
from gateway.sdk import (
    BureauRequest,
    BureauResponse,
    CaseEvent,
    Escalation,
    HandlingResult,
    Outcome,
    PollPage,
    Rejected,
    RequestContext,
    RetryLater,
    TokenGrant,
    TransportPolicy,
)

FAMILY = "soap"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
TOKEN_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"  # noqa: S105
PASSWORD_DIGEST = TOKEN_PROFILE + "#PasswordDigest"
BASE64_BINARY = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
SECURITY_FAULTS = frozenset(
    {
        "FailedAuthentication",
        "InvalidSecurity",
        "InvalidSecurityToken",
        "FailedCheck",
        "MessageExpired",
        "MustUnderstand",
        "VersionMismatch",
    }
)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def password_digest(nonce: bytes, created: str, secret: str) -> str:
    raw = nonce + created.encode("utf-8") + secret.encode("utf-8")
    return base64.b64encode(hashlib.sha1(raw).digest()).decode("ascii")  # noqa: S324 - WSS spec


def xml_text(value: str) -> str:
    """Drop characters XML 1.0 cannot carry at all (ElementTree escapes the rest)."""
    return _NOT_XML.sub("", value)


def parse_xml(body: bytes) -> ET.Element | None:
    """Parse an answer safely: UTF-8 only, no DOCTYPE/ENTITY; ``None`` when refused or broken."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        return None
    try:
        # No DTD can be present (checked above), so nothing can be expanded or fetched.
        return ET.fromstring(text)  # noqa: S314
    except ET.ParseError:
        return None


def local(tag: str) -> str:
    return tag.rpartition("}")[2]


@dataclass(frozen=True, slots=True)
class SoapConnector(NoToken):
    """One city on the SOAP family: operation, namespace, field list, answer codes."""

    name: str
    city_code: str
    path: str
    namespace: str
    operation: str
    soap_action: str
    response_element: str
    fields: Callable[[Escalation], Sequence[tuple[str, str]]]
    codes: AnswerCodes
    personal_data: frozenset[str] = frozenset({"name", "phone"})
    family: str = FAMILY
    auth: str = "wsse-password-digest"
    token_grant: TokenGrant | None = None
    transport: TransportPolicy = field(default_factory=TransportPolicy)

    @property
    def requires_client_cert(self) -> bool:
        return self.transport.client_cert

    inbound: str = "poll"
    poll_path: str = ""
    """Where updates are queried; empty: the complaint path."""
    poll_limit: int = 100
    status_codes: StatusCodes = field(default_factory=StatusCodes)

    def translate(self, escalation: Escalation, ctx: RequestContext) -> BureauRequest:
        envelope = ET.Element(f"{{{SOAP_NS}}}Envelope")
        header = ET.SubElement(envelope, f"{{{SOAP_NS}}}Header")
        header.append(_security(ctx))
        body = ET.SubElement(envelope, f"{{{SOAP_NS}}}Body")
        operation = ET.SubElement(body, f"{{{self.namespace}}}{self.operation}")
        for key, value in self.fields(escalation):
            ET.SubElement(operation, f"{{{self.namespace}}}{key}").text = xml_text(value)
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{self.soap_action}"',
        }
        payload = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
        return BureauRequest("POST", self.path, headers, payload)

    def interpret(self, response: BureauResponse) -> Outcome:
        root = parse_xml(response.body) if response.body else None
        content = _body_child(root)
        if content is None:
            return _without_xml(response)
        if local(content.tag) == "Fault":
            return fault_outcome(content)
        transient = http_outcome(response)
        if transient is not None:
            return transient
        if local(content.tag) != self.response_element:
            return RetryLater("unreadable_answer")
        answer = {local(child.tag): (child.text or "") for child in content}
        return self.codes.outcome(answer)

    # --- outbound: handling results ----------------------------------------------------------

    def translate_result(self, result: HandlingResult, ctx: RequestContext) -> BureauRequest:
        envelope = ET.Element(f"{{{SOAP_NS}}}Envelope")
        ET.SubElement(envelope, f"{{{SOAP_NS}}}Header").append(_security(ctx))
        body = ET.SubElement(envelope, f"{{{SOAP_NS}}}Body")
        operation = ET.SubElement(body, f"{{{self.namespace}}}SubmitHandlingResult")
        for key, value in result_fields(result).items():
            ET.SubElement(operation, f"{{{self.namespace}}}{_camel(key)}").text = xml_text(value)
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{self.namespace}#SubmitHandlingResult"',
        }
        payload = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
        return BureauRequest("POST", self.path, headers, payload)

    def interpret_result(self, response: BureauResponse) -> Outcome:
        return self.interpret(response)

    # --- inbound: polling the bureau for case updates ----------------------------------------

    def poll_request(self, cursor: str, ctx: RequestContext) -> BureauRequest:
        envelope = ET.Element(f"{{{SOAP_NS}}}Envelope")
        ET.SubElement(envelope, f"{{{SOAP_NS}}}Header").append(_security(ctx))
        body = ET.SubElement(envelope, f"{{{SOAP_NS}}}Body")
        query = ET.SubElement(body, f"{{{self.namespace}}}QueryCaseUpdates")
        ET.SubElement(query, f"{{{self.namespace}}}cursor").text = xml_text(cursor)
        ET.SubElement(query, f"{{{self.namespace}}}limit").text = str(self.poll_limit)
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{self.namespace}#QueryCaseUpdates"',
        }
        payload = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
        return BureauRequest("POST", self.poll_path or self.path, headers, payload)

    def parse_poll(self, response: BureauResponse) -> PollPage:
        content = _body_child(parse_xml(response.body) if response.body else None)
        if content is None or response.status != 200:
            raise ValueError(f"poll answered {response.status} without a SOAP body")
        if local(content.tag) == "Fault":
            raise ValueError(f"poll fault: {detail(' '.join(c.text or '' for c in content))}")
        if local(content.tag) != "QueryCaseUpdatesResponse":
            raise ValueError(f"unexpected poll answer element {local(content.tag)}")
        cursor = ""
        events: list[CaseEvent] = []
        for child in content:
            if local(child.tag) == "nextCursor":
                cursor = child.text or ""
            elif local(child.tag) == "update":
                fields = {local(c.tag): (c.text or "") for c in child}
                events.append(
                    self.status_codes.event(
                        escalation_id=fields.get("outId", ""),
                        status=fields.get("status", ""),
                        occurred_at_ms=event_time_ms(fields.get("time", "")),
                        case_number=fields.get("caseNo", ""),
                        reason=fields.get("reason", ""),
                        result=fields.get("result", ""),
                        ref=fields.get("eventId", ""),
                        note=fields.get("remark", ""),
                    )
                )
        if not cursor:
            raise ValueError("poll answer without nextCursor")
        return PollPage(tuple(events), cursor)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _security(ctx: RequestContext) -> ET.Element:
    created = iso_utc(ctx.now_ms)
    nonce = ctx.nonce.encode("utf-8")
    security = ET.Element(f"{{{WSSE_NS}}}Security", {f"{{{SOAP_NS}}}mustUnderstand": "1"})
    token = ET.SubElement(security, f"{{{WSSE_NS}}}UsernameToken")
    ET.SubElement(token, f"{{{WSSE_NS}}}Username").text = xml_text(ctx.credentials.client_id)
    digest = password_digest(nonce, created, ctx.credentials.secret)
    ET.SubElement(token, f"{{{WSSE_NS}}}Password", {"Type": PASSWORD_DIGEST}).text = digest
    encoded = base64.b64encode(nonce).decode("ascii")
    ET.SubElement(token, f"{{{WSSE_NS}}}Nonce", {"EncodingType": BASE64_BINARY}).text = encoded
    ET.SubElement(token, f"{{{WSU_NS}}}Created").text = created
    return security


def _body_child(root: ET.Element | None) -> ET.Element | None:
    if root is None or root.tag != f"{{{SOAP_NS}}}Envelope":
        return None
    body = root.find(f"{{{SOAP_NS}}}Body")
    return None if body is None or len(body) == 0 else body[0]


def _without_xml(response: BureauResponse) -> Outcome:
    transient = http_outcome(response)
    if transient is not None:
        return transient
    if response.status in (401, 403):
        return RetryLater("auth")
    if 400 <= response.status < 500:
        return http_rejected(response)
    return RetryLater("unreadable_answer")


def fault_outcome(fault: ET.Element) -> Outcome:
    """Classify a SOAP 1.1 Fault element by its faultcode."""
    fields: Mapping[str, str] = {local(child.tag): (child.text or "") for child in fault}
    code = local(fields.get("faultcode", "").strip().rpartition(":")[2] or "Server")
    reason = fields.get("faultstring", "")
    if code.split(".")[0] in SECURITY_FAULTS:
        return RetryLater("auth")
    if code.startswith("Client"):
        return Rejected("soap_client_fault", detail(f"{code} {reason}"))
    return RetryLater("soap_server_fault")
