"""What each simulated bureau speaks: its profile, how it checks auth, reads bodies and answers.

This is the bureaus' side of the interface specs, written independently of ``connectors/`` so
that certifying a connector against the simulator really checks its mapping and signing.
Profiles of the ten built-in cities are in :mod:`gateway.dev.bureau_profiles`; a new bureau
adds a :class:`BureauProfile` there (or registers one in the ``greenchannel.bureau_profiles``
entry-point group).

Auth checks per family (all constant-time comparisons, timestamp skew ±300 s, nonces refused
when seen within the skew window):

* ``json_hmac``  X-Client-Id, X-Timestamp (ms), X-Nonce, X-Signature = HMAC-SHA256 hex over
  ``method\\npath\\ntimestamp\\nnonce\\nsha256(body)``
* ``soap``       SOAPAction, wsse UsernameToken PasswordDigest = b64(sha1(nonce+created+secret))
* ``form_sm3``   app id, timestamp, nonce, ``sign`` = SM3 hex over sorted ``k=v&...&key=secret``
* ``oauth_json`` ``Authorization: Bearer`` issued by the token endpoint and not expired
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import formatdate
from enum import StrEnum
from urllib.parse import parse_qsl, unquote, urlencode

SKEW_S = 300.0
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
CST = timezone(timedelta(hours=8))
PHONE = re.compile(r"^\+?[0-9][0-9\- ]{4,19}$")


class Verdict(StrEnum):
    OK = "ok"
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    UNKNOWN_CATEGORY = "unknown_category"
    REFUSED = "refused"
    BUSY = "busy"
    AUTH = "auth"


@dataclass(frozen=True, slots=True)
class Incoming:
    method: str
    path: str
    headers: Mapping[str, str]
    """Lower-case names."""
    body: bytes
    peer_cn: str | None = None
    """Common name of the verified TLS client certificate, if any."""
    query: str = ""
    """The request's query string (case-update polls carry their cursor there)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class BureauProfile:
    """One bureau's interface, as its own documentation would describe it."""

    city: str
    family: str
    path: str
    key: str
    """Where the idempotency key is: ``header:<name>`` or a field name."""
    required: tuple[str, ...]
    phone: str
    text: str
    text_max: int
    category: str
    categories: frozenset[str]
    code_field: str
    case_field: str
    message_field: str
    codes: Mapping[Verdict, str | int]
    statuses: Mapping[Verdict, int] = field(default_factory=dict)
    case_prefix: str
    mtls: bool = False
    retry_after_date: bool = False
    soap: tuple[str, str, str, str] = ("", "", "", "")
    """(namespace, request element, SOAPAction, response element)."""
    client_fault_for_invalid: bool = False
    form: tuple[str, str, str, str] = ("app_id", "timestamp", "nonce_str", "ms")
    """(app id field, timestamp field, nonce field, timestamp kind: ms | s | datetime)."""
    form_upper: bool = False
    form_answer: str = "json"
    grant_path: str = ""
    grant_scope: str = ""


# --- nonce replay ----------------------------------------------------------------------------


class NonceCache:
    """Nonces seen within the skew window (not thread-safe: the caller holds the city lock)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def fresh(self, nonce: str, now: float) -> bool:
        if len(self._seen) > 10_000:
            self._seen = {n: t for n, t in self._seen.items() if t > now}
        if not nonce or self._seen.get(nonce, 0.0) > now:
            return False
        self._seen[nonce] = now + 2 * SKEW_S
        return True


def _within_skew(when: float | None, now: float) -> bool:
    return when is not None and abs(now - when) <= SKEW_S


# --- auth ------------------------------------------------------------------------------------


def check_auth(
    p: BureauProfile, req: Incoming, creds: tuple[str, str], nonces: NonceCache, now: float
) -> str | None:
    """``None`` when the request is properly signed, else a short reason."""
    if p.family == "json_hmac":
        return _check_hmac(req, creds, nonces, now)
    if p.family == "soap":
        return _check_soap(p, req, creds, nonces, now)
    if p.family == "form_sm3":
        return _check_sm3(p, req, creds, nonces, now)
    return None  # oauth_json: bearer checked by the caller, which owns the token store


def _check_hmac(
    req: Incoming, creds: tuple[str, str], nonces: NonceCache, now: float
) -> str | None:
    h = req.headers
    if h.get("x-client-id") != creds[0]:
        return "unknown client"
    stamp, nonce = h.get("x-timestamp", ""), h.get("x-nonce", "")
    when = int(stamp) / 1000 if stamp.isdigit() else None
    if not _within_skew(when, now):
        return "timestamp skew"
    digest = hashlib.sha256(req.body).hexdigest()
    message = f"{req.method}\n{req.path}\n{stamp}\n{nonce}\n{digest}".encode()
    expected = hmac.new(creds[1].encode(), message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, h.get("x-signature", "")):
        return "bad signature"
    return None if nonces.fresh(nonce, now) else "nonce replayed"


def _check_soap(
    p: BureauProfile, req: Incoming, creds: tuple[str, str], nonces: NonceCache, now: float
) -> str | None:
    if req.headers.get("soapaction", "").strip('"') != p.soap[2]:
        return "wrong SOAPAction"
    root = parse_xml(req.body)
    token = None if root is None else root.find(f".//{{{WSSE_NS}}}UsernameToken")
    if token is None:
        return "no UsernameToken"
    user = token.findtext(f"{{{WSSE_NS}}}Username", "")
    digest = token.findtext(f"{{{WSSE_NS}}}Password", "")
    created = token.findtext(f"{{{WSU_NS}}}Created", "")
    try:
        nonce = base64.b64decode(token.findtext(f"{{{WSSE_NS}}}Nonce", ""), validate=True)
        when = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return "malformed UsernameToken"
    raw = nonce + created.encode() + creds[1].encode()
    expected = base64.b64encode(hashlib.sha1(raw).digest()).decode()  # noqa: S324 - WSS spec
    if user != creds[0] or not hmac.compare_digest(expected, digest):
        return "bad password digest"
    if not _within_skew(when, now):
        return "stale Created"
    return None if nonces.fresh(nonce.hex(), now) else "nonce replayed"


def _check_sm3(
    p: BureauProfile, req: Incoming, creds: tuple[str, str], nonces: NonceCache, now: float
) -> str | None:
    params = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
    app, stamp_field, nonce_field, kind = p.form
    if params.get(app) != creds[0]:
        return "unknown app id"
    if not _within_skew(_form_time(params.get(stamp_field, ""), kind), now):
        return "timestamp skew"
    sign = params.pop("sign", "")
    base = "&".join(f"{k}={params[k]}" for k in sorted(params) if params[k] != "")
    expected = hashlib.new("sm3", f"{base}&key={creds[1]}".encode()).hexdigest()
    expected = expected.upper() if p.form_upper else expected
    if not hmac.compare_digest(expected, sign):
        return "bad sign"
    return None if nonces.fresh(params.get(nonce_field, ""), now) else "nonce replayed"


def _form_time(value: str, kind: str) -> float | None:
    try:
        if kind == "ms":
            return int(value) / 1000
        if kind == "s":
            return float(int(value))
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST).timestamp()
    except ValueError:
        return None


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(client_id, secret) from an RFC 6749 HTTP Basic header, or ``None``."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        pair = base64.b64decode(value, validate=True).decode("utf-8")
    except ValueError:
        return None
    user, sep, secret = pair.partition(":")
    return (unquote(user), unquote(secret)) if sep else None


# --- reading bodies --------------------------------------------------------------------------


def parse_xml(body: bytes) -> ET.Element | None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        return None
    try:
        return ET.fromstring(text)  # noqa: S314 - no DTD possible, see above
    except ET.ParseError:
        return None


def decode(p: BureauProfile, body: bytes) -> dict[str, str] | None:
    """The request's business fields, flattened to ``{"a.b": "text"}``; ``None`` if unreadable."""
    if p.family == "form_sm3":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if p.family == "soap":
        root = parse_xml(body)
        op = None if root is None else root.find(f"{{{SOAP_NS}}}Body/{{{p.soap[0]}}}{p.soap[1]}")
        if op is None:
            return None
        return {child.tag.rpartition("}")[2]: child.text or "" for child in op}
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return _flatten(data, "") if isinstance(data, dict) else None


def _flatten(node: Mapping[str, object], prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        elif value is None:
            out[prefix + key] = ""
        elif isinstance(value, bool):
            out[prefix + key] = "true" if value else "false"
        else:
            out[prefix + key] = value if isinstance(value, str) else json.dumps(value)
    return out


def idempotency_key(p: BureauProfile, req: Incoming, fields: Mapping[str, str]) -> str:
    kind, _, name = p.key.partition(":")
    return req.headers.get(name, "") if kind == "header" else fields.get(p.key, "")


def validate(p: BureauProfile, fields: Mapping[str, str]) -> tuple[Verdict, str] | None:
    """A business error for invalid data, or ``None`` when the case can be opened."""
    for name in p.required:
        if not fields.get(name, "").strip():
            return Verdict.INVALID, f"missing {name}"
    if not PHONE.match(fields.get(p.phone, "")):
        return Verdict.INVALID, f"invalid {p.phone}"
    if len(fields.get(p.text, "")) > p.text_max:
        return Verdict.INVALID, f"{p.text} longer than {p.text_max}"
    if fields.get(p.category, "") not in p.categories:
        return Verdict.UNKNOWN_CATEGORY, f"unknown {p.category}"
    return None


# --- answering -------------------------------------------------------------------------------


def render(p: BureauProfile, verdict: Verdict, case_number: str = "", message: str = "") -> Answer:
    """The bureau's answer for a verdict, in its own format."""
    status = p.statuses.get(verdict, 200)
    if p.family == "soap":
        return _render_soap(p, verdict, case_number, message)
    if p.family == "oauth_json" and verdict is Verdict.AUTH:
        body = json.dumps({"error": "invalid_token"}).encode()
        return Answer(401, body, {"content-type": "application/json", "www-authenticate": "Bearer"})
    values: dict[str, object] = {p.code_field: p.codes[verdict], p.message_field: message}
    if case_number:
        values[p.case_field] = case_number
    if p.family == "form_sm3" and p.form_answer == "form":
        form = {k: str(v) for k, v in values.items()}
        return Answer(status, urlencode(form).encode(), {"content-type": "text/plain"})
    body = json.dumps(_nest(values), ensure_ascii=False).encode()
    return Answer(status, body, {"content-type": "application/json; charset=utf-8"})


def _nest(flat: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            assert isinstance(child, dict)
            node = child
        node[leaf] = value
    return out


def _render_soap(p: BureauProfile, verdict: Verdict, case_number: str, message: str) -> Answer:
    if verdict is Verdict.AUTH:
        return soap_fault("wsse:FailedAuthentication", message or "authentication failed")
    if verdict in (Verdict.INVALID, Verdict.UNKNOWN_CATEGORY) and p.client_fault_for_invalid:
        return soap_fault("soap:Client.Validation", message)
    ns, _, _, response = p.soap
    envelope = ET.Element(f"{{{SOAP_NS}}}Envelope")
    answer = ET.SubElement(ET.SubElement(envelope, f"{{{SOAP_NS}}}Body"), f"{{{ns}}}{response}")
    ET.SubElement(answer, f"{{{ns}}}{p.code_field}").text = str(p.codes[verdict])
    ET.SubElement(answer, f"{{{ns}}}{p.message_field}").text = message
    ET.SubElement(answer, f"{{{ns}}}{p.case_field}").text = case_number
    return _xml_answer(200, envelope)


def soap_fault(code: str, text: str) -> Answer:
    envelope = ET.Element(f"{{{SOAP_NS}}}Envelope")
    fault = ET.SubElement(ET.SubElement(envelope, f"{{{SOAP_NS}}}Body"), f"{{{SOAP_NS}}}Fault")
    ET.SubElement(fault, "faultcode").text = code
    ET.SubElement(fault, "faultstring").text = text
    return _xml_answer(500, envelope)


def _xml_answer(status: int, envelope: ET.Element) -> Answer:
    data = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
    return Answer(status, data, {"content-type": "text/xml; charset=utf-8"})


def server_error(p: BureauProfile, status: int) -> Answer:
    if p.family == "soap" and status == 500:
        return soap_fault("soap:Server", "internal error")
    body = json.dumps({"error": "unavailable"}).encode()
    return Answer(status, body, {"content-type": "application/json"})


def too_many(p: BureauProfile, wait_s: float) -> Answer:
    seconds = max(1, int(wait_s + 0.999))
    if p.retry_after_date:
        value = formatdate(time.time() + seconds + 1, usegmt=True)
    else:
        value = str(seconds)
    body = json.dumps({"error": "rate limited"}).encode()
    return Answer(429, body, {"retry-after": value, "content-type": "application/json"})


def not_found() -> Answer:
    return Answer(404, b'{"error":"not found"}', {"content-type": "application/json"})
