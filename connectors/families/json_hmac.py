"""JSON REST signed with HMAC-SHA256 (Beijing, Hangzhou, Nanjing).

Request: ``POST <path>`` with a UTF-8 JSON body and these headers::

    Content-Type:       application/json; charset=utf-8
    X-Client-Id:        credentials.client_id
    X-Timestamp:        ctx.now_ms (epoch milliseconds)
    X-Nonce:            ctx.nonce (the bureau refuses a nonce it has seen)
    X-Idempotency-Key:  escalation_id
    X-Signature:        hex HMAC-SHA256(secret, string_to_sign)

    string_to_sign = "{method}\\n{path}\\n{timestamp}\\n{nonce}\\n{sha256_hex(body)}"

Bureaus check the signature, a timestamp skew of a few minutes and nonce replay, so the engine
must call ``translate`` afresh (new ``now_ms`` and ``nonce``) for every attempt.

Answers (see :func:`connectors.families.common.interpret_json`): 200/201 with the city's result
code and case number; a 200 with an error code is a business rejection, or ``RetryLater`` for
the city's busy codes; 409 is a duplicate -> ``Accepted`` with the existing case number;
429 -> ``RetryLater`` with Retry-After; 5xx -> ``RetryLater``; other 4xx -> ``Rejected``.

**Case updates (inbound: callback).** The bureau calls ``POST <callback_path>`` signed exactly
like our requests (same headers, same ``string_to_sign`` over *its* method, path, timestamp,
nonce and body, with the same shared secret); body::

    {"events": [{"idempotency_key": "<escalation id>", "case_no": "...", "status": "accepted",
                 "time": "2026-02-10T10:00:00+08:00", "reason": "", "result": "",
                 "event_id": "...", "remark": "..."}]}

``status``: accepted, returned (``reason``: missing_elements, unclear, wrong_type, duplicate,
withdrawn, not_jurisdiction), negotiating, mediating, closed (``result``: settled, not_settled,
withdrawn, terminated). We answer ``{"code": "0", "message": "ok"}`` (200) or an error code
with 400/401/409/429/503 (:meth:`JsonHmacConnector.callback_answer`).

**401/403 -> RetryLater(reason="auth"), not Rejected.** A refused signature means *our*
configuration is wrong (secret, clock) and says nothing about the escalation: dead-lettering
would bury good complaints. Retrying lets the city's breaker open, its partitions pause and the
auth alert fire; once the secret is fixed everything flows again, nothing lost.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from connectors.families.common import (
    AnswerCodes,
    JsonValue,
    NoToken,
    dump_json,
    interpret_json,
    json_answer,
    sha256_hex,
)
from connectors.families.inbound import (
    StatusCodes,
    json_event,
    result_body,
    same,
    signed_time_ms,
)
from gateway.errors import InboundRefused
from gateway.sdk import (
    BureauRequest,
    BureauResponse,
    Callback,
    CaseEvent,
    Credentials,
    Escalation,
    HandlingResult,
    InboundRequest,
    Outcome,
    RequestContext,
    RetryLater,
    TokenGrant,
    TransportPolicy,
)

FAMILY = "json_hmac"


def string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return f"{method}\n{path}\n{timestamp}\n{nonce}\n{sha256_hex(body)}"


def signature(secret: str, message: str) -> str:
    """Hex HMAC-SHA256 of a :func:`string_to_sign` result."""
    return hmac.new(secret.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class JsonHmacConnector(NoToken):
    """One city on the JSON+HMAC family: a path, a body builder and the answer codes."""

    name: str
    city_code: str
    path: str
    body: Callable[[Escalation], Mapping[str, JsonValue]]
    codes: AnswerCodes
    personal_data: frozenset[str] = frozenset({"name", "phone"})
    """Consumer fields this bureau needs (and so receives)."""
    family: str = FAMILY
    auth: str = "hmac-sha256"
    token_grant: TokenGrant | None = None
    transport: TransportPolicy = field(default_factory=TransportPolicy)

    @property
    def requires_client_cert(self) -> bool:
        return self.transport.client_cert

    inbound: str = "callback"
    callback_path: str = "/12315/case-updates"
    status_codes: StatusCodes = field(default_factory=StatusCodes)
    result_path: str = "/12315/case-results"

    def translate(self, escalation: Escalation, ctx: RequestContext) -> BureauRequest:
        body = dump_json(self.body(escalation))
        timestamp = str(ctx.now_ms)
        secret = ctx.credentials.secret
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "X-Client-Id": ctx.credentials.client_id,
            "X-Timestamp": timestamp,
            "X-Nonce": ctx.nonce,
            "X-Idempotency-Key": escalation.escalation_id,
            "X-Signature": signature(
                secret, string_to_sign("POST", self.path, timestamp, ctx.nonce, body)
            ),
        }
        return BureauRequest("POST", self.path, headers, body)

    def interpret(self, response: BureauResponse) -> Outcome:
        return interpret_json(response, self.codes, RetryLater("auth"))

    # --- outbound: handling results ----------------------------------------------------------

    def translate_result(self, result: HandlingResult, ctx: RequestContext) -> BureauRequest:
        body = dump_json(result_body(result))
        timestamp = str(ctx.now_ms)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "X-Client-Id": ctx.credentials.client_id,
            "X-Timestamp": timestamp,
            "X-Nonce": ctx.nonce,
            "X-Idempotency-Key": result.result_id,
            "X-Signature": signature(
                ctx.credentials.secret,
                string_to_sign("POST", self.result_path, timestamp, ctx.nonce, body),
            ),
        }
        return BureauRequest("POST", self.result_path, headers, body)

    def interpret_result(self, response: BureauResponse) -> Outcome:
        return self.interpret(response)

    # --- inbound: the bureau's case-update callbacks ------------------------------------------

    def parse_callback(self, request: InboundRequest, credentials: Credentials) -> Callback:
        h = request.headers
        if h.get("x-client-id") != credentials.client_id:
            raise InboundRefused("callback from an unknown client id", reason="unknown_client")
        stamp, nonce = h.get("x-timestamp", ""), h.get("x-nonce", "")
        try:
            when = signed_time_ms(stamp)
        except ValueError as exc:
            raise InboundRefused("callback without a valid X-Timestamp") from exc
        message = string_to_sign(request.method, request.path, stamp, nonce, request.body)
        if not nonce or not same(signature(credentials.secret, message), h.get("x-signature", "")):
            raise InboundRefused("callback signature does not verify", reason="bad_signature")
        return Callback(when, nonce, tuple(self._events(request.body)))

    def _events(self, body: bytes) -> list[CaseEvent]:
        answer = json_answer(body)
        events = answer.get("events") if answer is not None else None
        if not isinstance(events, list):
            raise InboundRefused("callback body has no events list")
        try:
            return [json_event(self.status_codes, e) for e in events]
        except (ValueError, TypeError, AttributeError) as exc:
            raise InboundRefused(f"unreadable callback event: {exc}") from exc

    def callback_answer(self, outcome: str) -> BureauResponse:
        return json_callback_answer(outcome)


CALLBACK_STATUS = {
    "ok": 200,
    "bad_signature": 401,
    "unknown_client": 401,
    "stale": 401,
    "replayed": 409,
    "malformed": 400,
    "rate_limited": 429,
    "unavailable": 503,
}


def json_callback_answer(outcome: str) -> BureauResponse:
    status = CALLBACK_STATUS.get(outcome, 400)
    code = "0" if outcome == "ok" else outcome.upper()
    body = dump_json({"code": code, "message": outcome})
    headers = {"content-type": "application/json; charset=utf-8"}
    if outcome == "rate_limited":
        headers["retry-after"] = "1"
    return BureauResponse(status, headers, body)
