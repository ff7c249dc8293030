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


CASE_NUMBER_MAX_CHARS = 64
"""Longest case number the gateway accepts from a bureau (``receipt.avsc`` ``case_number``).

Real bureau case numbers are 10-30 characters. The engine checks every :class:`Accepted` it
gets from a connector against :func:`case_number_problem`; an answer that fails is an
*irregular answer* (dead-lettered with reason ``irregular_answer``), never a receipt."""


def case_number_problem(value: object) -> str | None:
    """Why ``value`` cannot be a case number (bounded text without the value), or ``None``."""
    if not isinstance(value, str):
        return f"case number is a {type(value).__name__}, not text"
    text = value.strip()
    if not text:
        return "case number is missing or blank"
    if len(text) > CASE_NUMBER_MAX_CHARS:
        return f"case number is {len(text)} characters (at most {CASE_NUMBER_MAX_CHARS})"
    if not text.isprintable():
        return "case number holds control characters"
    return None


@dataclass(frozen=True, slots=True)
class Accepted:
    """The bureau opened a case (or already had one for this idempotency key).

    ``case_number`` is at most :data:`CASE_NUMBER_MAX_CHARS` printable characters; the engine
    enforces it (see :func:`case_number_problem`), connectors need not."""

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


@dataclass(frozen=True, slots=True)
class Irregular:
    """The bureau answered, and the answer is well-formed, but not something the gateway can
    keep: a success code without a case number (or one that is not text), JSON nested beyond
    what can be parsed. Final: asking again gets the same answer. The engine dead-letters the
    escalation with reason ``irregular_answer`` and writes a ``REJECTED`` receipt, as for an
    over-long case number.

    Not for a body that cannot be read at all (an HTML proxy page, a truncated answer): that
    may be transient, and is :class:`RetryLater`. ``reason`` is a bounded machine label (it goes
    into the dead letter's message), ``detail`` a short text without personal data."""

    reason: str
    detail: str = ""


Outcome = Accepted | RetryLater | Rejected | Irregular


TLS_VERSIONS = frozenset({"TLSv1.2", "TLSv1.3"})


@dataclass(frozen=True, slots=True)
class TransportPolicy:
    """What a bureau requires of the connection; enforced when the gateway loads its config.

    Every bureau is reached over TLS: plain HTTP is accepted only for a loopback endpoint with
    ``allow_plaintext: true`` (the development simulator), and never when ``client_cert`` is
    set. ``min_tls`` is the lowest protocol version the gateway will negotiate; a city's
    ``tls.min_version`` may raise it, never lower it. ``client_cert``: the bureau authenticates
    the gateway with a client certificate (mTLS), so ``tls.cert_file`` is required.
    """

    client_cert: bool = False
    min_tls: str = "TLSv1.2"
    """``"TLSv1.2"`` or ``"TLSv1.3"``."""


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
        """True when the bureau authenticates the gateway with mTLS (``transport.client_cert``)."""
        ...

    @property
    def transport(self) -> TransportPolicy:
        """What the bureau requires of the connection (TLS version, client certificate)."""
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
