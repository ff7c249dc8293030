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
    sha256_hex,
)
from gateway.sdk import (
    BureauRequest,
    BureauResponse,
    Escalation,
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
