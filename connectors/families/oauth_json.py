"""JSON REST behind OAuth2 client credentials (Shenzhen with mTLS, Suzhou).

Token: the engine calls :meth:`OAuthJsonConnector.token_request` (``POST <token path>``, form
``grant_type=client_credentials[&scope=...]``, HTTP Basic ``client_id:secret`` as RFC 6749
§2.3.1 says: each part form-urlencoded, then base64), sends it, hands the answer to
:meth:`~OAuthJsonConnector.interpret_token` (``access_token``, ``expires_in``) and caches the
token, refreshing it a little before it expires.

Request: ``POST <path>`` with ``Authorization: Bearer <ctx.bearer_token>``,
``Idempotency-Key: <escalation_id>`` and a UTF-8 JSON body (which also carries the id).

**Case updates (inbound: poll).** ``GET <poll_path>?cursor=<c>&limit=100`` with the bearer
token (cursor ``""`` at the start); the bureau answers 200
``{"next_cursor": "...", "updates": [<events as in the JSON+HMAC family's callbacks>]}``.

Answers: as the JSON+HMAC family, except **401 -> RetryLater("token_expired",
reauthenticate=True)**: the engine drops its cached token and fetches a new one before the
retry. 403 (token valid but not allowed, or mTLS identity refused) is our configuration:
``RetryLater("auth")``, never a dead letter.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from connectors.families.common import (
    AnswerCodes,
    JsonValue,
    dump_json,
    interpret_json,
    json_answer,
)
from connectors.families.inbound import StatusCodes, json_event, result_body
from gateway.sdk import (
    BureauRequest,
    BureauResponse,
    Escalation,
    HandlingResult,
    Outcome,
    PollPage,
    RequestContext,
    RetryLater,
    TokenGrant,
    TransportPolicy,
)

FAMILY = "oauth_json"
DEFAULT_EXPIRES_IN = 300.0
"""Token lifetime assumed when the token endpoint does not say (RFC 6749 makes it optional)."""


def basic_auth(client_id: str, secret: str) -> str:
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")


@dataclass(frozen=True, slots=True)
class OAuthJsonConnector:
    """One city on the OAuth2+JSON family."""

    name: str
    city_code: str
    path: str
    body: Callable[[Escalation], Mapping[str, JsonValue]]
    codes: AnswerCodes
    token_grant: TokenGrant | None = field(default_factory=TokenGrant)
    transport: TransportPolicy = field(default_factory=TransportPolicy)
    personal_data: frozenset[str] = frozenset({"name", "phone"})
    family: str = FAMILY
    auth: str = "oauth2-client-credentials"
    inbound: str = "poll"
    poll_path: str = ""
    """Where updates are queried; empty: ``case-updates`` beside the complaint path."""
    poll_limit: int = 100
    status_codes: StatusCodes = field(default_factory=StatusCodes)
    result_path: str = ""
    """Where results are reported; empty: ``case-results`` beside the complaint path."""

    @property
    def requires_client_cert(self) -> bool:
        return self.transport.client_cert

    def translate(self, escalation: Escalation, ctx: RequestContext) -> BureauRequest:
        if not ctx.bearer_token:
            raise ValueError(f"{self.name}: RequestContext.bearer_token is required")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "Authorization": f"Bearer {ctx.bearer_token}",
            "Idempotency-Key": escalation.escalation_id,
        }
        return BureauRequest("POST", self.path, headers, dump_json(self.body(escalation)))

    def interpret(self, response: BureauResponse) -> Outcome:
        if response.status == 401:
            return RetryLater("token_expired", reauthenticate=True)
        return interpret_json(response, self.codes, RetryLater("auth"))

    def token_request(self, ctx: RequestContext) -> BureauRequest:
        grant = self.token_grant or TokenGrant()
        form = {"grant_type": "client_credentials"}
        if grant.scope:
            form["scope"] = grant.scope
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "Authorization": basic_auth(ctx.credentials.client_id, ctx.credentials.secret),
        }
        return BureauRequest("POST", grant.path, headers, urlencode(form).encode("ascii"))

    def interpret_token(self, response: BureauResponse) -> tuple[str, float]:
        answer = json_answer(response.body)
        if response.status != 200 or answer is None:
            error = answer.get("error") if answer else None
            raise ValueError(f"token endpoint answered {response.status} {error or ''}".strip())
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise ValueError("token endpoint answer has no access_token")
        kind = answer.get("token_type", "Bearer")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise ValueError(f"unsupported token_type {kind!r}")
        return token, _expires_in(answer.get("expires_in"))

    # --- outbound: handling results ----------------------------------------------------------

    def translate_result(self, result: HandlingResult, ctx: RequestContext) -> BureauRequest:
        if not ctx.bearer_token:
            raise ValueError(f"{self.name}: RequestContext.bearer_token is required")
        path = self.result_path or self.path.rsplit("/", 1)[0] + "/case-results"
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "Authorization": f"Bearer {ctx.bearer_token}",
            "Idempotency-Key": result.result_id,
        }
        return BureauRequest("POST", path, headers, dump_json(result_body(result)))

    def interpret_result(self, response: BureauResponse) -> Outcome:
        return self.interpret(response)

    # --- inbound: polling the bureau for case updates ----------------------------------------

    def poll_request(self, cursor: str, ctx: RequestContext) -> BureauRequest:
        if not ctx.bearer_token:
            raise ValueError(f"{self.name}: RequestContext.bearer_token is required")
        path = self.poll_path or self.path.rsplit("/", 1)[0] + "/case-updates"
        query = urlencode({"cursor": cursor, "limit": str(self.poll_limit)})
        headers = {"Accept": "application/json", "Authorization": f"Bearer {ctx.bearer_token}"}
        return BureauRequest("GET", f"{path}?{query}", headers, b"")

    def parse_poll(self, response: BureauResponse) -> PollPage:
        answer = json_answer(response.body) if response.status == 200 else None
        if answer is None:
            raise ValueError(f"poll answered {response.status} without a JSON object")
        cursor, updates = answer.get("next_cursor"), answer.get("updates")
        if not isinstance(cursor, str) or not cursor or not isinstance(updates, list):
            raise ValueError("poll answer without next_cursor and updates")
        return PollPage(tuple(json_event(self.status_codes, u) for u in updates), cursor)


def _expires_in(value: object) -> float:
    if value is None:
        return DEFAULT_EXPIRES_IN
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expires_in is not a number")
    seconds = float(value)
    if not seconds > 0:
        raise ValueError("expires_in must be positive")
    return seconds
