"""Conformance kit: certify a connector against a running simulated bureau.

``certify(connector, city_settings, endpoint, bureau)`` runs every check below and returns one
:class:`Check` per check (never raises for a failing connector). ``bureau`` is the simulator's
handle for that city: :class:`gateway.dev.bureau_city.CityBureau` in-process, or
:class:`gateway.dev.bureaus.RemoteCity` over the admin API. Used by
``greenchannel connectors certify`` and ``tests/contract/test_conformance.py``.

Checks (knobs are reset after each):

=================  ============================================================================
translate_pure     same escalation + context -> identical request bytes; POST to an absolute path
idempotency_key    the escalation id is in the request (header or body)
personal_data      undeclared consumer data is not sent; none in the path or headers
accepted           a valid escalation -> Accepted with a case number, one new case at the bureau
duplicate          the same escalation again -> Accepted, same case number, no second case
invalid_rejected   missing phone, over-long description -> Rejected (never RetryLater)
rate_limited       the bureau's 429 -> RetryLater with the Retry-After in seconds
server_error       5xx -> RetryLater
outage             port closed -> transport error; 503 -> RetryLater; recovery -> Accepted
hang               no answer -> transport error (timeout)
latency            a slow bureau still accepts
bad_credentials    wrong secret -> refused by the bureau -> RetryLater("auth") / token refused
replay_refused     the same signed request replayed -> refused (signatures carry the nonce)
token_expired      (OAuth2) expired bearer -> RetryLater(reauthenticate=True), then fresh token
client_cert        (mTLS) no client certificate -> transport error
callback           (inbound callback) the bureau's signed callback -> parse_callback reads the
                   case, its state and case number; a tampered one -> InboundRefused
                   (bad_signature); callback_answer("ok") is a 2xx
poll               (inbound poll) an event at the bureau -> poll_request/parse_poll return it
                   with the next cursor; polling from that cursor does not return it again
result             (handling results) translate_result -> Accepted with the bureau's receipt;
                   the same result again -> the same receipt, stored once
=================  ============================================================================

The inbound and result checks need the bureau's lifecycle side (in-process simulator); over
the admin API they are not run.
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import quote, quote_plus, urlsplit

import httpx

from gateway.config import CitySettings, TlsSettings
from gateway.errors import BureauUnavailable
from gateway.sdk import (
    Accepted,
    BureauRequest,
    BureauResponse,
    Connector,
    Consumer,
    Credentials,
    Escalation,
    Merchant,
    Outcome,
    Rejected,
    RequestContext,
    RetryLater,
)

PERSONAL_FIELDS = ("name", "phone", "id_number", "address", "email")
DEFAULT_PERSONAL = frozenset({"name", "phone"})
"""Assumed when a connector declares no ``personal_data``."""


class BureauHandle(Protocol):
    """What the kit needs from the simulated bureau of the city under test."""

    def set_faults(self, **knobs: Any) -> object: ...
    def reset_faults(self) -> object: ...
    def case_count(self) -> int: ...
    def counters(self) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


# --- a small synchronous client (what the engine does, minus retries and limits) -------------


def tls_context(tls: TlsSettings, *, client_cert: bool = True) -> ssl.SSLContext:
    """Trust ``tls.ca_file`` (else the system store) and present the client certificate."""
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if client_cert and tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def credentials_of(city: CitySettings) -> Credentials:
    creds = city.credentials
    return Credentials(creds.client_id, creds.resolved_secret(), dict(creds.extra))


class BureauClient:
    """Sends one connector's requests to one bureau: fresh nonce and time per request, OAuth2
    token fetched and cached, TLS from the city's settings. Transport failures raise
    :class:`~gateway.errors.BureauUnavailable`."""

    def __init__(
        self,
        connector: Connector,
        city: CitySettings,
        endpoint: str | None = None,
        *,
        timeout_s: float | None = None,
        credentials: Credentials | None = None,
        client_cert: bool = True,
    ) -> None:
        self.connector = connector
        self.credentials = credentials or credentials_of(city)
        base = endpoint or city.endpoint
        verify: ssl.SSLContext | bool = True
        if urlsplit(base).scheme == "https":
            verify = tls_context(city.tls, client_cert=client_cert)
        self._http = httpx.Client(
            base_url=base,
            timeout=timeout_s or city.timeout_s,
            verify=verify,
            trust_env=False,
            follow_redirects=False,
        )
        self._token: tuple[str, float] | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BureauClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def context(self, bearer: str | None = None) -> RequestContext:
        return RequestContext(
            now_ms=time.time_ns() // 1_000_000,
            nonce=secrets.token_hex(16),
            credentials=self.credentials,
            bearer_token=bearer,
        )

    def exchange(self, request: BureauRequest) -> BureauResponse:
        try:
            response = self._http.request(
                request.method, request.path, headers=dict(request.headers), content=request.body
            )
        except httpx.TimeoutException as exc:
            raise BureauUnavailable(f"{self.connector.name}: timed out", reason="timeout") from exc
        except httpx.TransportError as exc:
            message = f"{self.connector.name}: {type(exc).__name__}"
            raise BureauUnavailable(message, reason="transport") from exc
        headers = {key.lower(): value for key, value in response.headers.items()}
        return BureauResponse(response.status_code, headers, response.content)

    def token(self, *, refresh: bool = False) -> str:
        """A cached bearer token, fetched again when expired (or asked to)."""
        if self._token and not refresh and self._token[1] > time.monotonic():
            return self._token[0]
        answer = self.exchange(self.connector.token_request(self.context()))
        token, expires_in = self.connector.interpret_token(answer)
        self._token = (token, time.monotonic() + expires_in * 0.9)
        return token

    def send(self, escalation: Escalation, *, bearer: str | None = None) -> Outcome:
        if bearer is None and self.connector.token_grant is not None:
            bearer = self.token()
        request = self.connector.translate(escalation, self.context(bearer))
        return self.connector.interpret(self.exchange(request))


# --- sample data -----------------------------------------------------------------------------


def sample_escalation(connector: Connector, tag: str = "") -> Escalation:
    """A valid escalation for the connector's city with a fresh id (and distinctive PII)."""
    now = time.time_ns() // 1_000_000
    unique = uuid.uuid4().hex[:12]
    return Escalation(
        escalation_id=f"esc-{connector.name}-{unique}{'-' + tag if tag else ''}",
        complaint_id=f"cmp-{unique}",
        city=connector.name,
        city_code=connector.city_code,
        created_at_ms=now,
        received_at_ms=now - 3_600_000,
        handling_deadline_ms=now + 14 * 86_400_000,
        channel="APP",
        rule_id="R-SAFETY-01",
        consumer=Consumer(
            name="王小明",
            phone="13812345678",
            id_number="11010119900307663X",
            address="北京市朝阳区建国路88号",
            email="probe.pii@example.org",
        ),
        merchant=Merchant("m-1001", "某某电器专营店", "91110105MA01ABCD2X"),
        order_id=f"o-{unique}",
        amount_fen=12850,
        product_category="ELECTRONICS",
        category="SAFETY",
        description="充电宝使用中起火，烧伤手部。<script>&\"'",
        severity=("safety_hazard", "injury"),
    )


# --- the checks ------------------------------------------------------------------------------


@dataclass
class _Kit:
    connector: Connector
    city: CitySettings
    endpoint: str
    bureau: BureauHandle
    timeout_s: float
    clients: list[BureauClient] = field(default_factory=list)
    main: BureauClient | None = None

    def client(self, **kwargs: Any) -> BureauClient:
        kwargs.setdefault("timeout_s", self.timeout_s)
        client = BureauClient(self.connector, self.city, self.endpoint, **kwargs)
        self.clients.append(client)
        return client

    def send(self, escalation: Escalation, **kwargs: Any) -> Outcome:
        """Send with a fresh client when options are given, else with the shared one (whose
        OAuth2 token is fetched once and kept, as the engine would)."""
        if kwargs:
            return self.client(**kwargs).send(escalation)
        if self.main is None:
            self.main = self.client()
        return self.main.send(escalation)

    @contextmanager
    def faults(self, **knobs: Any) -> Iterator[None]:
        self.bureau.set_faults(**knobs)
        try:
            yield
        finally:
            self.bureau.reset_faults()


_Result = tuple[bool, str]


def _fixed_context(kit: _Kit) -> RequestContext:
    creds = credentials_of(kit.city)
    return RequestContext(1_767_225_600_000, "0f1e2d3c4b5a69788796a5b4c3d2e1f0", creds, "tok")


def check_translate_pure(kit: _Kit) -> _Result:
    escalation, ctx = sample_escalation(kit.connector), _fixed_context(kit)
    first = kit.connector.translate(escalation, ctx)
    second = kit.connector.translate(replace(escalation), replace(ctx))
    if first != second:
        return False, "two translations of the same input differ"
    if first.method not in ("POST", "PUT") or not first.path.startswith("/"):
        return False, f"unexpected {first.method} {first.path}"
    return True, f"{first.method} {first.path}, {len(first.body)} bytes"


def _encodings(value: str) -> set[bytes]:
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
    return {f.encode("utf-8") for f in forms if f}


def _appears(value: str, blob: bytes) -> bool:
    return any(form in blob for form in _encodings(value))


def check_idempotency_key(kit: _Kit) -> _Result:
    escalation = sample_escalation(kit.connector)
    request = kit.connector.translate(escalation, _fixed_context(kit))
    blob = request.body + "\n".join(request.headers.values()).encode()
    if _appears(escalation.escalation_id, blob):
        return True, "escalation id sent"
    return False, "the escalation id is neither in a header nor in the body"


def check_personal_data(kit: _Kit) -> _Result:
    declared = frozenset(getattr(kit.connector, "personal_data", DEFAULT_PERSONAL))
    escalation = sample_escalation(kit.connector)
    request = kit.connector.translate(escalation, _fixed_context(kit))
    exposed = (request.path + "\n" + "\n".join(request.headers.values())).encode()
    problems = []
    for name in PERSONAL_FIELDS:
        value = getattr(escalation.consumer, name) or ""
        if _appears(value, exposed):
            problems.append(f"{name} in path or headers")
        if name not in declared and _appears(value, request.body):
            problems.append(f"{name} sent but not declared in personal_data")
    return (not problems), "; ".join(problems) or f"sends only {sorted(declared)}"


def check_accepted_and_duplicate(kit: _Kit) -> list[Check]:
    escalation, before = sample_escalation(kit.connector), kit.bureau.case_count()
    first = kit.send(escalation)
    if not isinstance(first, Accepted) or not first.case_number:
        return [Check("accepted", False, f"got {first!r}")]
    opened = kit.bureau.case_count() - before
    accepted = Check("accepted", opened == 1, f"case {first.case_number}, {opened} new case(s)")
    again = kit.send(escalation)
    same = again == first and kit.bureau.case_count() - before == 1
    return [accepted, Check("duplicate", same, f"second answer {again!r}")]


def check_invalid_rejected(kit: _Kit) -> _Result:
    base = sample_escalation(kit.connector)
    cases = {
        "missing phone": replace(base, consumer=replace(base.consumer, phone="")),
        "description too long": replace(sample_escalation(kit.connector), description="长" * 5000),
    }
    outcomes = {label: kit.send(e) for label, e in cases.items()}
    bad = {k: v for k, v in outcomes.items() if not isinstance(v, Rejected)}
    return (not bad), "; ".join(f"{k}: {v!r}" for k, v in (bad or outcomes).items())


def check_rate_limited(kit: _Kit) -> _Result:
    with kit.faults(rate_per_s=0.2, burst=1):
        outcomes = [kit.send(sample_escalation(kit.connector)) for _ in range(3)]
    limited = [o for o in outcomes if isinstance(o, RetryLater) and o.retry_after]
    if not limited:
        return False, f"no RetryLater with retry_after among {outcomes!r}"
    return True, f"retry_after={limited[0].retry_after}"


def check_server_error(kit: _Kit) -> _Result:
    with kit.faults(error_5xx_ratio=1.0):
        outcome = kit.send(sample_escalation(kit.connector))
    return isinstance(outcome, RetryLater), repr(outcome)


def _unavailable(call: Callable[[], object]) -> _Result:
    try:
        result = call()
    except BureauUnavailable as exc:
        return True, f"{exc.reason}: {exc}"
    return False, f"expected a transport error, got {result!r}"


def check_outage(kit: _Kit) -> _Result:
    kit.send(sample_escalation(kit.connector))  # warm up: connection pooled, token cached
    with kit.faults(outage=True):
        refused = _unavailable(lambda: kit.send(sample_escalation(kit.connector)))
    with kit.faults(outage=True, outage_mode="503"):
        unavailable = kit.send(sample_escalation(kit.connector))
    recovered = kit.send(sample_escalation(kit.connector))
    ok = refused[0] and isinstance(unavailable, RetryLater) and isinstance(recovered, Accepted)
    return ok, f"refused: {refused[1]}; 503: {unavailable!r}; after: {recovered!r}"


def check_hang(kit: _Kit) -> _Result:
    with kit.faults(hang=True):
        return _unavailable(lambda: kit.send(sample_escalation(kit.connector), timeout_s=0.5))


def check_latency(kit: _Kit) -> _Result:
    with kit.faults(latency_ms=300):
        started = time.monotonic()
        outcome = kit.send(sample_escalation(kit.connector), timeout_s=5.0)
        took = time.monotonic() - started
    return isinstance(outcome, Accepted) and took >= 0.3, f"{outcome!r} after {took:.2f}s"


def _wrong(kit: _Kit) -> Credentials:
    right = credentials_of(kit.city)
    return replace(right, secret="wrong-" + right.secret)


def check_bad_credentials(kit: _Kit) -> _Result:
    before = kit.bureau.counters().get("auth_failures", 0)
    client = kit.client(credentials=_wrong(kit))
    if kit.connector.token_grant is not None:
        try:
            client.token()
        except ValueError as exc:
            outcome: object = f"token refused ({exc})"
        else:
            return False, "the token endpoint accepted a wrong secret"
    else:
        outcome = client.send(sample_escalation(kit.connector))
        if outcome != RetryLater("auth"):
            return False, f"expected RetryLater('auth'), got {outcome!r}"
    counted = kit.bureau.counters().get("auth_failures", 0) > before
    return counted, f"{outcome}; bureau counted the failure: {counted}"


def check_replay_refused(kit: _Kit) -> _Result:
    client = kit.client()
    bearer = client.token() if kit.connector.token_grant is not None else None
    if bearer is not None:
        return True, "bearer-token family: replay protection is the token's lifetime"
    request = kit.connector.translate(sample_escalation(kit.connector), client.context())
    first = kit.connector.interpret(client.exchange(request))
    replayed = kit.connector.interpret(client.exchange(request))
    ok = isinstance(first, Accepted) and replayed == RetryLater("auth")
    return ok, f"first {first!r}, replay {replayed!r}"


_SHORT_TOKEN_S = 0.2
"""Lifetime asked of the bureau for the token the expiry check lets run out."""
_EXPIRY_GRACE_S = 5.0
"""How long after its stated expiry a token may still be accepted (the bureau's clock)."""
_PROBE_EVERY_S = 0.05


def check_token_expired(kit: _Kit) -> _Result:
    client = kit.client()
    with kit.faults(token_ttl_s=_SHORT_TOKEN_S):
        answer = client.exchange(kit.connector.token_request(client.context()))
        issued = time.monotonic()
    token, lifetime = kit.connector.interpret_token(answer)
    # Wait for the condition, not a guess: until the token's stated lifetime has run out, then
    # until the bureau refuses it (its clock may lag ours a little).
    expires_at = issued + lifetime
    while (left := expires_at - time.monotonic()) > 0:
        time.sleep(left)
    sample = sample_escalation(kit.connector)
    while True:
        expired = client.send(sample, bearer=token)
        if not isinstance(expired, Accepted) or time.monotonic() > expires_at + _EXPIRY_GRACE_S:
            break
        time.sleep(_PROBE_EVERY_S)
    fresh = client.send(sample_escalation(kit.connector), bearer=client.token(refresh=True))
    ok = expired == RetryLater("token_expired", reauthenticate=True) and isinstance(fresh, Accepted)
    return ok, f"expired: {expired!r}; fresh token: {fresh!r}"


def check_client_cert(kit: _Kit) -> _Result:
    client = kit.client(client_cert=False)
    return _unavailable(lambda: client.send(sample_escalation(kit.connector), bearer="x"))


_SIMPLE: list[tuple[str, Callable[[_Kit], _Result]]] = [
    ("translate_pure", check_translate_pure),
    ("idempotency_key", check_idempotency_key),
    ("personal_data", check_personal_data),
    ("invalid_rejected", check_invalid_rejected),
    ("rate_limited", check_rate_limited),
    ("server_error", check_server_error),
    ("outage", check_outage),
    ("hang", check_hang),
    ("latency", check_latency),
    ("bad_credentials", check_bad_credentials),
    ("replay_refused", check_replay_refused),
]


def _lifecycle(kit: _Kit) -> Any:
    lifecycle = getattr(kit.bureau, "lifecycle", None)
    if lifecycle is None:
        raise AssertionError("the bureau has no lifecycle side (in-process simulator only)")
    return lifecycle


def _patient(call: Callable[[], BureauResponse], within_s: float = 40.0) -> BureauResponse:
    """``call()`` again while the bureau answers 429 (the checks share its rate limit)."""
    from connectors.families.common import retry_after

    deadline = time.monotonic() + within_s
    while True:
        response = call()
        if response.status != 429 or time.monotonic() > deadline:
            return response
        time.sleep(min(3.0, retry_after(response) or 0.5))


def _accepted_case(kit: _Kit) -> tuple[Escalation, str]:
    escalation = sample_escalation(kit.connector, "inbound")
    outcome = kit.send(escalation)
    deadline = time.monotonic() + 40.0
    while isinstance(outcome, RetryLater) and outcome.reason == "rate_limited":
        if time.monotonic() > deadline:
            break
        time.sleep(min(3.0, outcome.retry_after or 0.5))
        outcome = kit.send(escalation)
    if not isinstance(outcome, Accepted):
        raise AssertionError(f"the probe escalation was not accepted: {outcome!r}")
    return escalation, outcome.case_number


def check_callback(kit: _Kit) -> _Result:
    from gateway.errors import InboundRefused
    from gateway.sdk import CallbackInbound, InboundRequest

    connector = kit.connector
    assert isinstance(connector, CallbackInbound)
    escalation, number = _accepted_case(kit)
    lifecycle = _lifecycle(kit)
    event = lifecycle.record(escalation.escalation_id, number, "accepted")
    body, headers = lifecycle.signed_callback(event, connector.callback_path)
    request = InboundRequest("POST", connector.callback_path, headers, body)
    creds = credentials_of(kit.city)
    events = connector.parse_callback(request, creds).events
    read_ok = [(e.escalation_id, e.state, e.case_number) for e in events] == [
        (escalation.escalation_id, "ACCEPTED", number)
    ]
    tampered = InboundRequest(
        "POST", connector.callback_path, headers, body.replace(b"accepted", b"closed")
    )
    try:
        connector.parse_callback(tampered, creds)
        refused = "accepted"
    except InboundRefused as exc:
        refused = exc.reason
    answer = connector.callback_answer("ok")
    ok = read_ok and refused == "bad_signature" and 200 <= answer.status < 300
    return ok, f"read: {events!r}; tampered: {refused}; ok answer: {answer.status}"


def check_poll(kit: _Kit) -> _Result:
    from gateway.sdk import PollInbound

    connector = kit.connector
    assert isinstance(connector, PollInbound)
    client = kit.client()
    escalation, number = _accepted_case(kit)
    bearer = client.token() if kit.connector.token_grant is not None else None

    def poll(cursor: str) -> Any:
        return connector.parse_poll(
            _patient(
                lambda: client.exchange(connector.poll_request(cursor, client.context(bearer)))
            )
        )

    first = poll("")
    _lifecycle(kit).record(escalation.escalation_id, number, "negotiating")
    second = poll(first.cursor)
    third = poll(second.cursor)
    got = [(e.escalation_id, e.state, e.case_number) for e in second.events]
    ok = (escalation.escalation_id, "NEGOTIATION", number) in got and not any(
        e.escalation_id == escalation.escalation_id for e in third.events
    )
    return ok, f"after {first.cursor!r}: {got!r}; after {second.cursor!r}: {len(third.events)}"


def check_result(kit: _Kit) -> _Result:
    from gateway.sdk import HandlingResult, ResultOutbound

    connector = kit.connector
    assert isinstance(connector, ResultOutbound)
    client = kit.client()
    escalation, number = _accepted_case(kit)
    now = time.time_ns() // 1_000_000
    result = HandlingResult(
        result_id=str(uuid.uuid4()), escalation_id=escalation.escalation_id,
        complaint_id=escalation.complaint_id, city=escalation.city, case_number=number,
        contacted_at_ms=now - 3_600_000, method="PHONE", settled=True, refund_fen=12_900,
        compensation_fen=None, satisfaction="SATISFIED", note="已联系", reported_at_ms=now,
    )  # fmt: skip
    bearer = client.token() if kit.connector.token_grant is not None else None

    def send() -> Outcome:
        return connector.interpret_result(
            _patient(
                lambda: client.exchange(connector.translate_result(result, client.context(bearer)))
            )
        )

    first, again = send(), send()
    stored = [k for k in _lifecycle(kit).results if k == result.result_id]
    ok = isinstance(first, Accepted) and first == again and len(stored) == 1
    return ok, f"first: {first!r}; again: {again!r}; stored {len(stored)}"


def _applicable(
    connector: Connector, bureau: object = None
) -> list[tuple[str, Callable[[_Kit], _Result]]]:
    from gateway.sdk import ResultOutbound, inbound_kind

    checks = list(_SIMPLE)
    if connector.token_grant is not None:
        checks.append(("token_expired", check_token_expired))
    if connector.requires_client_cert:
        checks.append(("client_cert", check_client_cert))
    if getattr(bureau, "lifecycle", None) is not None:
        kind = inbound_kind(connector)
        if kind == "callback":
            checks.append(("callback", check_callback))
        elif kind == "poll":
            checks.append(("poll", check_poll))
        if isinstance(connector, ResultOutbound):
            checks.append(("result", check_result))
    return checks


def _run(kit: _Kit, name: str, check: Callable[[_Kit], _Result]) -> Check:
    try:
        ok, detail = check(kit)
    except Exception as exc:  # a broken connector must fail its check, not the whole run
        return Check(name, False, f"raised {type(exc).__name__}: {exc}")
    return Check(name, ok, detail)


def certify(
    connector: Connector,
    city: CitySettings,
    endpoint: str,
    bureau: BureauHandle,
    *,
    timeout_s: float = 3.0,
) -> list[Check]:
    """Run every applicable check of the connector against its simulated bureau."""
    kit = _Kit(connector, city, endpoint, bureau, timeout_s)
    bureau.reset_faults()
    try:
        try:
            results = check_accepted_and_duplicate(kit)
        except Exception as exc:
            results = [Check("accepted", False, f"raised {type(exc).__name__}: {exc}")]
        results += [_run(kit, name, check) for name, check in _applicable(connector, bureau)]
    finally:
        bureau.reset_faults()
        for client in kit.clients:
            client.close()
    return results


def summary(results: Mapping[str, list[Check]]) -> tuple[int, int]:
    """(passed, failed) over every city's checks."""
    flat = [c for checks in results.values() for c in checks]
    return sum(c.ok for c in flat), sum(not c.ok for c in flat)
