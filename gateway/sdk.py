"""The connector SDK: everything a city connector module imports.

A connector turns an :class:`Escalation` into one HTTP request in its bureau's own format and
classifies the bureau's answer. It is *pure*: no sockets, no clocks, no randomness, no sleeping,
no retries, no metrics. Time, nonces, credentials and OAuth2 tokens are handed in through
:class:`RequestContext`; the delivery engine owns IO, retries, rate limits, breakers and offsets.

A connector module exposes a module-level ``connector`` object satisfying :class:`Connector`
and registers it in the ``greenchannel.connectors`` entry-point group::

    [project.entry-points."greenchannel.connectors"]
    wuhu = "connectors.wuhu:connector"

**Inbound side** (case updates from the bureau, ``docs/cases.md``), as pure as the outbound one.
A connector declares ``inbound = "callback"``, ``"poll"`` or ``"none"``:

* ``"callback"`` (:class:`CallbackInbound`): the bureau calls the gateway.
  ``parse_callback(request, credentials) -> Callback`` verifies the city's own signature and
  returns the signed timestamp and nonce (the receiver refuses stale and replayed ones: it owns
  the clock and the nonce memory) and the :class:`CaseEvent` list, or raises
  :class:`~gateway.errors.InboundRefused`; ``callback_answer(outcome)`` is the answer in the
  city's format (``ok``, ``bad_signature``, ``stale``, ``replayed``, ``malformed``,
  ``rate_limited``, ``unavailable``).
* ``"poll"`` (:class:`PollInbound`): the gateway asks. ``poll_request(cursor, ctx)`` builds the
  request for the changes after ``cursor`` (``""`` at the start); ``parse_poll(response) ->
  PollPage`` reads the events and the next cursor (``ValueError`` when unreadable). The engine
  runs polls under the city's rate limit and breaker and keeps the cursor in Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    phone: str
    id_number: str | None = None
    address: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    name: str
    credit_code: str | None = None


@dataclass(frozen=True, slots=True)
class Escalation:
    """A major complaint on its way to a city bureau (mirrors ``schemas/escalation.avsc``)."""

    escalation_id: str
    complaint_id: str
    city: str
    city_code: str
    created_at_ms: int
    received_at_ms: int
    handling_deadline_ms: int
    channel: str
    rule_id: str
    consumer: Consumer
    merchant: Merchant
    order_id: str | None
    amount_fen: int | None
    product_category: str
    category: str
    description: str
    severity: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Credentials:
    """Per-city secrets, resolved from config (env or files). Never logged."""

    client_id: str = ""
    secret: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Everything impure a translation needs, supplied by the engine."""

    now_ms: int
    nonce: str
    credentials: Credentials
    bearer_token: str | None = None


@dataclass(frozen=True, slots=True)
class BureauRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class BureauResponse:
    status: int
    headers: Mapping[str, str]
    """Header names are lower-case."""
    body: bytes


@dataclass(frozen=True, slots=True)
class Accepted:
    """The bureau opened a case (or already had one for this idempotency key)."""

    case_number: str


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Might succeed later: 5xx, 429, a busy code in a 200 body, an expired token...

    ``retry_after`` is the bureau's hint in seconds (the engine caps it).
    ``reauthenticate`` asks the engine to drop the cached token before retrying (OAuth2 401).
    """

    reason: str
    retry_after: float | None = None
    reauthenticate: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """Will never succeed as it is: dead-letter it. ``reason`` is a bounded machine label;
    ``detail`` is the bureau's own code/message (trimmed by the engine)."""

    reason: str
    detail: str = ""


Outcome = Accepted | RetryLater | Rejected


class AuthKind(StrEnum):
    NONE = "none"
    OAUTH2_CLIENT_CREDENTIALS = "oauth2_client_credentials"


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """How to obtain an OAuth2 client-credentials token (the engine does the IO and caching)."""

    path: str = "/oauth/token"
    scope: str = ""


@runtime_checkable
class Connector(Protocol):
    """A city bureau's 12315 interface."""

    # Read-only properties, so frozen dataclasses and plain class attributes both satisfy them.

    @property
    def name(self) -> str:
        """Entry-point / config key, e.g. ``"beijing"``."""
        ...

    @property
    def city_code(self) -> str:
        """GB/T 2260 code of the city, e.g. ``"110000"``."""
        ...

    @property
    def family(self) -> str:
        """Protocol family, e.g. ``"json_hmac"``, ``"soap"``, ``"form_sm3"``, ``"oauth_json"``."""
        ...

    @property
    def token_grant(self) -> TokenGrant | None:
        """Set when the bureau wants an OAuth2 bearer token in ``RequestContext.bearer_token``."""
        ...

    @property
    def requires_client_cert(self) -> bool:
        """True when the bureau authenticates the gateway with mTLS."""
        ...

    def translate(self, escalation: Escalation, ctx: RequestContext) -> BureauRequest:
        """Build the bureau request. Pure."""
        ...

    def interpret(self, response: BureauResponse) -> Outcome:
        """Classify the bureau's answer. Pure."""
        ...

    def token_request(self, ctx: RequestContext) -> BureauRequest:
        """Build the OAuth2 token request. Only called when ``token_grant`` is set. Pure."""
        ...

    def interpret_token(self, response: BureauResponse) -> tuple[str, float]:
        """Parse a token endpoint answer into (access_token, expires_in_seconds).

        Only called when ``token_grant`` is set; raise ``ValueError`` on a bad answer."""
        ...


# --- inbound: case updates from the bureaus ----------------------------------------------------

CASE_STATES = frozenset({"ACCEPTED", "RETURNED", "NEGOTIATION", "MEDIATION", "CLOSED"})
"""States a bureau reports (``schemas/case_update.avsc`` ``CaseStatus``)."""
RETURN_REASONS = frozenset(
    {
        "MISSING_ELEMENTS",
        "UNCLEAR",
        "WRONG_TYPE",
        "DUPLICATE",
        "WITHDRAWN",
        "NOT_JURISDICTION",
        "OTHER",
    }
)
CLOSURES = frozenset({"SETTLED", "NOT_SETTLED", "WITHDRAWN", "TERMINATED", "OTHER"})
CALLBACK_OUTCOMES = frozenset(
    {
        "ok",
        "bad_signature",
        "unknown_client",
        "stale",
        "replayed",
        "malformed",
        "rate_limited",
        "unavailable",
    }
)


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """An HTTP request a bureau sent to the gateway's receiver."""

    method: str
    path: str
    headers: Mapping[str, str]
    """Header names are lower-case."""
    body: bytes
    query: str = ""


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One state change of a case as a bureau reports it (the engine makes a CaseUpdate)."""

    escalation_id: str
    state: str
    """One of :data:`CASE_STATES` (anything else is passed on and refused by the keeper)."""
    occurred_at_ms: int
    case_number: str | None = None
    return_reason: str | None = None
    closure: str | None = None
    bureau_ref: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Callback:
    """A callback whose signature verified."""

    timestamp_ms: int
    nonce: str
    events: tuple[CaseEvent, ...]


@dataclass(frozen=True, slots=True)
class PollPage:
    events: tuple[CaseEvent, ...]
    cursor: str
    """Where the next poll starts (the same cursor again when nothing new came)."""


@runtime_checkable
class CallbackInbound(Protocol):
    """A connector whose bureau calls the gateway back (``inbound = "callback"``)."""

    @property
    def callback_path(self) -> str: ...

    def parse_callback(self, request: InboundRequest, credentials: Credentials) -> Callback:
        """Verify and read a callback. Pure; raises :class:`InboundRefused`."""
        ...

    def callback_answer(self, outcome: str) -> BureauResponse:
        """The answer to send, in the city's format, for one of :data:`CALLBACK_OUTCOMES`."""
        ...


@runtime_checkable
class PollInbound(Protocol):
    """A connector whose bureau is polled for changes (``inbound = "poll"``)."""

    def poll_request(self, cursor: str, ctx: RequestContext) -> BureauRequest:
        """The request for the changes after ``cursor``. Pure."""
        ...

    def parse_poll(self, response: BureauResponse) -> PollPage:
        """Read a poll answer. Pure; ``ValueError`` when it cannot be read."""
        ...


def inbound_kind(connector: object) -> str:
    """``"callback"``, ``"poll"`` or ``"none"``, checked against the protocols."""
    kind = getattr(connector, "inbound", "none")
    if kind == "callback" and isinstance(connector, CallbackInbound):
        return "callback"
    if kind == "poll" and isinstance(connector, PollInbound):
        return "poll"
    return "none"


# --- outbound: handling results to the bureaus -------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandlingResult:
    """How the enterprise handled a case (mirrors ``schemas/handling_result.avsc``)."""

    result_id: str
    """The bureau's idempotency key for this report."""
    escalation_id: str
    complaint_id: str | None
    city: str
    case_number: str | None
    contacted_at_ms: int
    method: str
    settled: bool
    refund_fen: int | None
    compensation_fen: int | None
    satisfaction: str
    note: str | None
    reported_at_ms: int


@runtime_checkable
class ResultOutbound(Protocol):
    """A connector that reports handling results to its bureau (same engine as escalations:
    rate limit, retries, breaker, idempotency key, dead letters, receipts)."""

    def translate_result(self, result: HandlingResult, ctx: RequestContext) -> BureauRequest:
        """Build the bureau request for a result. Pure."""
        ...

    def interpret_result(self, response: BureauResponse) -> Outcome:
        """Classify the bureau's answer (``Accepted.case_number``: its receipt). Pure."""
        ...
