"""One simulated city bureau: its fault knobs, rate limit, tokens, cases and request handling.

Independent of HTTP plumbing (see :mod:`gateway.dev.bureaus`): ``handle(Incoming)`` returns the
:class:`~gateway.dev.bureau_protocols.Answer` to send, or ``None`` to hang up without answering.

Order of checks for each request: outage (503 mode) -> latency -> hang -> token endpoint ->
rate limit (429) -> injected 5xx -> route -> mTLS identity -> auth -> body -> idempotency
(a known key answers "duplicate" with the same case number) -> injected busy / business
refusal -> validation -> new case. Thread-safe; every request is logged with its arrival time.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qsl

from gateway.dev.bureau_protocols import (
    Answer,
    BureauProfile,
    Incoming,
    NonceCache,
    Verdict,
    basic_credentials,
    check_auth,
    decode,
    idempotency_key,
    not_found,
    render,
    server_error,
    too_many,
    validate,
)

HANG_MAX_S = 120.0
JITTER_S = 0.1
"""Network jitter the bureau's bucket tolerates beyond the configured rate and burst."""


@dataclass(frozen=True, slots=True)
class Faults:
    """Knobs, changeable while running (``set_faults``, or ``POST /cities/<c>/faults``)."""

    outage: bool = False
    outage_mode: str = "refuse"
    """``refuse``: the port is closed (connection refused); ``503``: every request gets 503."""
    latency_ms: float = 0.0
    hang: bool = False
    """Accept requests and never answer (until ``hang`` is cleared or 120 s pass)."""
    error_5xx_ratio: float = 0.0
    reject_ratio: float = 0.0
    """Share of new cases refused with a business error ("outside jurisdiction")."""
    busy_ratio: float = 0.0
    """Share of new cases answered with the city's "busy" code in a 200."""
    rate_per_s: float = 20.0
    burst: int = 5
    token_ttl_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Case:
    case_number: str
    key: str
    arrived_at: float
    fields: dict[str, str]
    """The bureau's view of the request (personal data: tests only, never logged)."""


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    status: int
    """HTTP status answered; 0 when the bureau hung up without answering."""
    path: str


def check_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Validate knob names and types; raise ``ValueError`` naming the bad one."""
    known = {f.name: f.default for f in fields(Faults)}
    out: dict[str, Any] = {}
    for name, value in knobs.items():
        if name not in known:
            raise ValueError(f"unknown fault knob {name!r}; known: {sorted(known)}")
        default = known[name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
        elif isinstance(default, str):
            if value not in ("refuse", "503"):
                raise ValueError(f"{name} must be 'refuse' or '503'")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{name} must be a non-negative number")
        elif name.endswith("_ratio") and value > 1:
            raise ValueError(f"{name} must be between 0 and 1")
        out[name] = (
            int(value) if isinstance(default, int) and not isinstance(default, bool) else value
        )
    return out


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._at = float(burst), time.monotonic()

    def take(self) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate if self.rate > 0 else 3600.0


class CityBureau:
    """A city's 12315 interface with its knobs; see the module docstring for the pipeline."""

    def __init__(
        self,
        profile: BureauProfile,
        client: tuple[str, str],
        baseline: Faults,
        *,
        seed: int | None = None,
    ) -> None:
        self.profile, self.name = profile, profile.city
        self._client = client
        self._baseline = baseline
        self._faults = baseline
        self._bucket = TokenBucket(baseline.rate_per_s, baseline.burst)
        self._lock = threading.Lock()
        self._unhang = threading.Event()
        self._unhang.set()
        self._rng = random.Random(seed)
        self._nonces = NonceCache()
        self._tokens: dict[str, float] = {}
        self._by_key: dict[str, Case] = {}
        self._cases: list[Case] = []
        self._arrivals: list[Arrival] = []
        self._counters: dict[str, int] = {}
        self._listeners: list[Callable[[bool], None]] = []
        self.inbound: Callable[[Incoming, float], Answer | None] | None = None
        """Answers case-update polls (set by :mod:`gateway.dev.bureau_lifecycle`)."""
        self.lifecycle: Any = None
        """The :class:`~gateway.dev.bureau_lifecycle.BureauLifecycle` playing this bureau's side
        of the case lifecycle, when one is attached."""

    @staticmethod
    def baseline(rate_per_s: float, burst: int) -> Faults:
        """Default knobs for a city whose gateway-side limit is ``rate_per_s``/``burst``."""
        slack = max(1, math.ceil(rate_per_s * JITTER_S))
        return Faults(rate_per_s=rate_per_s, burst=burst + slack)

    # --- knobs -----------------------------------------------------------------------------

    def on_listening(self, listener: Callable[[bool], None]) -> None:
        """Called with False when a ``refuse`` outage starts, True when it ends."""
        self._listeners.append(listener)

    def set_faults(self, **knobs: Any) -> Faults:
        checked = check_knobs(knobs)
        with self._lock:
            self._faults = replace(self._faults, **checked)
            faults = self._faults
            self._bucket = TokenBucket(faults.rate_per_s, faults.burst)
        if faults.hang:
            self._unhang.clear()
        else:
            self._unhang.set()
        listening = not (faults.outage and faults.outage_mode == "refuse")
        for listener in self._listeners:
            listener(listening)
        return faults

    def reset_faults(self) -> Faults:
        return self.set_faults(**asdict(self._baseline))

    def faults(self) -> Faults:
        return self._faults

    def release(self) -> None:
        """Wake every hanging request (on shutdown)."""
        self._unhang.set()

    # --- observations ----------------------------------------------------------------------

    def cases(self) -> list[Case]:
        with self._lock:
            return list(self._cases)

    def case_count(self) -> int:
        with self._lock:
            return len(self._cases)

    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self._arrivals)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def clear(self) -> None:
        """Forget cases, idempotency keys, arrivals and counters (not the knobs)."""
        with self._lock:
            self._cases.clear()
            self._by_key.clear()
            self._arrivals.clear()
            self._counters.clear()

    # --- requests --------------------------------------------------------------------------

    def handle(self, req: Incoming) -> Answer | None:
        arrived = time.time()
        answer = self._answer(req, arrived)
        with self._lock:
            self._arrivals.append(Arrival(arrived, answer.status if answer else 0, req.path))
            self._count("requests")
        return answer

    def count(self, name: str) -> None:
        """Add one to a counter (the HTTP layer's: ``connections``, ``tls_handshakes``...)."""
        with self._lock:
            self._count(name)

    def _count(self, name: str) -> None:
        self._counters[name] = self._counters.get(name, 0) + 1

    def _counted(self, name: str, answer: Answer) -> Answer:
        with self._lock:
            self._count(name)
        return answer

    def _answer(self, req: Incoming, arrived: float) -> Answer | None:
        faults = self._faults
        if faults.outage:
            return self._counted("outage", server_error(self.profile, 503))
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.hang:
            with self._lock:
                self._count("hung")
            self._unhang.wait(HANG_MAX_S)
            return None
        if self.profile.grant_path and req.path == self.profile.grant_path:
            return self._token(req, arrived)
        return self._limited(req, arrived, faults)

    def _limited(self, req: Incoming, arrived: float, faults: Faults) -> Answer:
        with self._lock:
            wait = self._bucket.take()
        if wait:
            return self._counted("rate_limited", too_many(self.profile, wait))
        if self._rng.random() < faults.error_5xx_ratio:
            status = self._rng.choice((500, 502, 503))
            return self._counted("server_errors", server_error(self.profile, status))
        if self.inbound is not None:
            polled = self.inbound(req, arrived)
            if polled is not None:
                return self._counted("polls", polled)
        if req.method != "POST" or req.path != self.profile.path:
            return not_found()
        return self._business(req, arrived)

    def _business(self, req: Incoming, arrived: float) -> Answer:
        p = self.profile
        if p.mtls and req.peer_cn != self._client[0]:
            return self._counted("auth_failures", Answer(403, b'{"error":"client certificate"}'))
        with self._lock:
            problem = self._auth(req, arrived)
        if problem:
            return self._counted("auth_failures", render(p, Verdict.AUTH, message=problem))
        data = decode(p, req.body)
        key = idempotency_key(p, req, data) if data is not None else ""
        if data is None or not key:
            return self._counted("rejected", render(p, Verdict.INVALID, message="unreadable"))
        return self._open(key, data, arrived)

    def _auth(self, req: Incoming, now: float) -> str | None:
        if self.profile.family != "oauth_json":
            return check_auth(self.profile, req, self._client, self._nonces, now)
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self._tokens.get(token, 0.0) <= now:
            return "invalid or expired token"
        return None

    def token_valid(self, token: str, now: float) -> bool:
        """True for a bearer token this bureau issued that has not expired."""
        with self._lock:
            return self._tokens.get(token, 0.0) > now

    def _open(self, key: str, data: dict[str, str], arrived: float) -> Answer:
        p = self.profile
        with self._lock:
            existing = self._by_key.get(key)
            if existing is not None:
                self._count("duplicates")
                return render(p, Verdict.DUPLICATE, existing.case_number, "duplicate")
            roll = self._rng.random()
            if roll < self._faults.busy_ratio:
                self._count("busy")
                return render(p, Verdict.BUSY, message="system busy")
            if roll < self._faults.busy_ratio + self._faults.reject_ratio:
                self._count("rejected")
                return render(p, Verdict.REFUSED, message="outside jurisdiction")
            invalid = validate(p, data)
            if invalid is not None:
                self._count("rejected")
                return render(p, invalid[0], message=invalid[1])
            case = self._new_case(key, data, arrived)
        return render(p, Verdict.OK, case.case_number, "accepted")

    def _new_case(self, key: str, data: dict[str, str], arrived: float) -> Case:
        day = time.strftime("%Y%m%d", time.gmtime(arrived + 8 * 3600))
        number = f"{self.profile.case_prefix}{day}{len(self._cases) + 1:06d}"
        case = Case(number, key, arrived, data)
        self._cases.append(case)
        self._by_key[key] = case
        self._count("cases")
        return case

    def _token(self, req: Incoming, now: float) -> Answer:
        p, headers = self.profile, {"content-type": "application/json"}
        form = dict(parse_qsl(req.body.decode("utf-8", "replace")))
        if basic_credentials(req.headers.get("authorization", "")) != self._client:
            headers["www-authenticate"] = 'Basic realm="token"'
            return self._counted(
                "auth_failures", Answer(401, _json(error="invalid_client"), headers)
            )
        if form.get("grant_type") != "client_credentials":
            return Answer(400, _json(error="unsupported_grant_type"), headers)
        if p.grant_scope and form.get("scope") != p.grant_scope:
            return Answer(400, _json(error="invalid_scope"), headers)
        token, ttl = secrets.token_urlsafe(24), self._faults.token_ttl_s
        with self._lock:
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + ttl
            self._count("tokens_issued")
        body = _json(access_token=token, token_type="Bearer", expires_in=ttl)  # noqa: S106
        return Answer(200, body, headers)


def _json(**values: object) -> bytes:
    return json.dumps(values).encode()
