"""Form posts signed with SM3, the national hash standard (Hefei, Wuhu, Nanchang).

Request: ``POST <path>``, ``Content-Type: application/x-www-form-urlencoded; charset=utf-8``.
The parameters are the city's business fields plus its app id, timestamp and nonce fields (and
any fixed ones such as ``method``/``sign_type``). Empty values are left out entirely. Then::

    base = "&".join(f"{k}={v}" for k, v in sorted(params.items()))   # raw values, not encoded
    sign = sm3_hex(f"{base}&key={secret}".encode("utf-8"))           # GB/T 32905, lower-case hex
                                                                     # (upper-case for some cities)

and the body is the URL-encoded parameters in key order with ``sign`` appended. The
idempotency key (escalation id) is one of the business fields. Bureaus check the signature,
the timestamp skew and the nonce, so ``translate`` must run afresh for every attempt.

**Case updates (inbound: callback).** The bureau posts one event per callback to
``<callback_path>``, a form signed exactly like our requests (the city's app id, timestamp and
nonce fields, ``sign`` over the sorted non-empty parameters plus ``&key=<secret>``, upper- or
lower-case as the city signs)::

    out_id=<escalation id>&case_id=...&status=accepted&event_time=2026-02-10 10:00:00
    &reason=&result=&event_id=...&remark=...

(status, reason and result words as in the JSON+HMAC family). We answer in the city's answer
format with ``result_code=SUCCESS`` or ``SIGN_ERROR`` / ``TS_ERROR`` / ``NONCE_REPLAYED`` /
``PARAM_ERROR`` / ``BUSY``.

Answers are JSON or form-encoded (per city) with a result code: ok/duplicate -> Accepted, busy
-> RetryLater, signature/app-id codes and HTTP 401/403 -> RetryLater("auth") (our
configuration), any other code -> Rejected. 429/5xx -> RetryLater; other 4xx -> Rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode

from connectors.families.common import (
    AnswerCodes,
    NoToken,
    dump_json,
    form_answer,
    http_outcome,
    http_rejected,
    json_document,
    sm3_hex,
)
from connectors.families.inbound import (
    StatusCodes,
    event_time_ms,
    result_fields,
    same,
    signed_time_ms,
)
from gateway.errors import InboundRefused
from gateway.sdk import (
    BureauRequest,
    BureauResponse,
    Callback,
    Credentials,
    Escalation,
    HandlingResult,
    InboundRequest,
    Irregular,
    Outcome,
    RequestContext,
    RetryLater,
    TokenGrant,
    TransportPolicy,
)

FAMILY = "form_sm3"


def sign_base(params: Mapping[str, str]) -> str:
    return "&".join(f"{key}={params[key]}" for key in sorted(params))


def sm3_signature(params: Mapping[str, str], secret: str, *, upper: bool = False) -> str:
    digest = sm3_hex(f"{sign_base(params)}&key={secret}".encode())
    return digest.upper() if upper else digest


_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
_QUOTED = tuple(chr(b) if b in _SAFE else "+" if b == 0x20 else f"%{b:02X}" for b in range(256))


def _quote_plus(text: str) -> str:
    raw = text.encode()
    if not raw.translate(None, _SAFE):
        return text
    return "".join(map(_QUOTED.__getitem__, raw))


def form_body(params: Mapping[str, str]) -> bytes:
    """``urlencode(params).encode("ascii")``, byte for byte (``quote_plus``: UTF-8, unreserved
    characters kept, a space as ``+``), with each byte's escape looked up in a table rather
    than quoted in a Python loop."""
    return "&".join(f"{_quote_plus(k)}={_quote_plus(v)}" for k, v in params.items()).encode("ascii")


def millis(ms: int) -> str:
    return str(ms)


@dataclass(frozen=True, slots=True)
class FormSm3Connector(NoToken):
    """One city on the form+SM3 family."""

    name: str
    city_code: str
    path: str
    params: Callable[[Escalation], Mapping[str, str]]
    codes: AnswerCodes
    app_id_field: str = "app_id"
    timestamp_field: str = "timestamp"
    timestamp: Callable[[int], str] = millis
    nonce_field: str = "nonce_str"
    sign_field: str = "sign"
    fixed: Mapping[str, str] = field(default_factory=dict)
    upper: bool = False
    answer_format: Literal["json", "form"] = "json"
    personal_data: frozenset[str] = frozenset({"name", "phone"})
    family: str = FAMILY
    auth: str = "sm3-sign"
    token_grant: TokenGrant | None = None
    transport: TransportPolicy = field(default_factory=TransportPolicy)

    @property
    def requires_client_cert(self) -> bool:
        return self.transport.client_cert

    inbound: str = "callback"
    callback_path: str = "/12315/case-notify"
    status_codes: StatusCodes = field(default_factory=StatusCodes)
    result_path: str = "/12315/case-result"

    def signed_params(self, escalation: Escalation, ctx: RequestContext) -> dict[str, str]:
        params = {
            **self.fixed,
            **self.params(escalation),
            self.app_id_field: ctx.credentials.client_id,
            self.timestamp_field: self.timestamp(ctx.now_ms),
            self.nonce_field: ctx.nonce,
        }
        kept = {key: params[key] for key in sorted(params) if params[key] != ""}
        kept[self.sign_field] = sm3_signature(kept, ctx.credentials.secret, upper=self.upper)
        return kept

    def translate(self, escalation: Escalation, ctx: RequestContext) -> BureauRequest:
        body = form_body(self.signed_params(escalation, ctx))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Accept": "application/json" if self.answer_format == "json" else "*/*",
        }
        return BureauRequest("POST", self.path, headers, body)

    def interpret(self, response: BureauResponse) -> Outcome:
        if response.status in (401, 403):
            return RetryLater("auth")
        transient = http_outcome(response)
        if transient is not None:
            return transient
        if 400 <= response.status < 500:
            return http_rejected(response)
        reader = json_document if self.answer_format == "json" else form_answer
        answer = reader(response.body) if 200 <= response.status < 300 else None
        if answer is None:
            return RetryLater("unreadable_answer")
        if isinstance(answer, Irregular):
            return answer
        return self.codes.outcome(answer)

    # --- outbound: handling results ----------------------------------------------------------

    def translate_result(self, result: HandlingResult, ctx: RequestContext) -> BureauRequest:
        params = {
            **result_fields(result),
            self.app_id_field: ctx.credentials.client_id,
            self.timestamp_field: self.timestamp(ctx.now_ms),
            self.nonce_field: ctx.nonce,
        }
        kept = {key: params[key] for key in sorted(params) if params[key] != ""}
        kept[self.sign_field] = sm3_signature(kept, ctx.credentials.secret, upper=self.upper)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Accept": "application/json" if self.answer_format == "json" else "*/*",
        }
        return BureauRequest("POST", self.result_path, headers, form_body(kept))

    def interpret_result(self, response: BureauResponse) -> Outcome:
        return self.interpret(response)

    # --- inbound: the bureau's case-update callbacks ------------------------------------------

    def parse_callback(self, request: InboundRequest, credentials: Credentials) -> Callback:
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InboundRefused("callback body is not UTF-8") from exc
        params = dict(parse_qsl(text, keep_blank_values=True))
        if params.get(self.app_id_field) != credentials.client_id:
            raise InboundRefused("callback from an unknown app id", reason="unknown_client")
        given = params.pop(self.sign_field, "")
        kept = {k: v for k, v in params.items() if v != ""}
        expected = sm3_signature(kept, credentials.secret, upper=self.upper)
        if not given or not same(expected, given):
            raise InboundRefused("callback sign does not verify", reason="bad_signature")
        nonce = params.get(self.nonce_field, "")
        try:
            when = signed_time_ms(params.get(self.timestamp_field, ""))
            event = self.status_codes.event(
                escalation_id=params.get("out_id", ""),
                status=params.get("status", ""),
                occurred_at_ms=event_time_ms(params.get("event_time", "")),
                case_number=params.get("case_id", ""),
                reason=params.get("reason", ""),
                result=params.get("result", ""),
                ref=params.get("event_id", ""),
                note=params.get("remark", ""),
            )
        except ValueError as exc:
            raise InboundRefused(f"unreadable callback: {exc}") from exc
        if not nonce:
            raise InboundRefused("callback without a nonce")
        return Callback(when, nonce, (event,))

    def callback_answer(self, outcome: str) -> BureauResponse:
        code = CALLBACK_CODES.get(outcome, "PARAM_ERROR")
        answer = {"result_code": code, "err_msg": "" if outcome == "ok" else outcome}
        if self.answer_format == "json":
            return BureauResponse(
                200, {"content-type": "application/json; charset=utf-8"}, dump_json(answer)
            )
        return BureauResponse(
            200,
            {"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
            urlencode(answer).encode("ascii"),
        )


CALLBACK_CODES = {
    "ok": "SUCCESS",
    "bad_signature": "SIGN_ERROR",
    "unknown_client": "SIGN_ERROR",
    "stale": "TS_ERROR",
    "replayed": "NONCE_REPLAYED",
    "malformed": "PARAM_ERROR",
    "rate_limited": "BUSY",
    "unavailable": "BUSY",
}
