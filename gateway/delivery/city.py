"""Delivering one escalation to one city until its outcome is final.

``CityDelivery.deliver`` runs on a worker thread of the delivery pool (never on the poll loop). Each
attempt: maintenance window and breaker check -> a token from the city's bucket (retries pay
too; a first attempt started by the city's lane was given its token before it started:
``reserve``/``prepaid``) ->
pure ``translate`` -> bounded HTTP (:mod:`gateway.http`) -> pure ``interpret`` -> the
gateway's own checks on the answer (case number bounds, :func:`gateway.sdk.case_number_problem`).
Retry timing and holding live in the city's :class:`~gateway.policies.retry.DeliveryRetry`:
when a round gives up on a transient failure, or the breaker is open, the escalation is *held*
(never dead-lettered) until the city may be called again, while the engine keeps the city's
partitions paused. Final outcomes are acceptance, a permanent rejection, and an *irregular
answer* (over the size cap, a case number out of bounds, or the connector's own
:class:`~gateway.sdk.Irregular`: a rejection with reason ``irregular_answer``). Any other exception (a connector bug, say) propagates to the caller,
which dead-letters the record as ``internal_error``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from tenacity import RetryCallState

from gateway.config import CitySettings
from gateway.delivery.workers import blocked, blocking
from gateway.errors import BureauUnavailable, GreenChannelError, IrregularAnswer, TransientError
from gateway.http import TokenCache, Transport
from gateway.ops.observer import Observer
from gateway.pii import mask_text, readable, trim
from gateway.policies.breaker import CircuitBreaker
from gateway.policies.ratelimit import TokenBucket
from gateway.policies.retry import DeliveryRetry, Hold, RetryLaterError
from gateway.sdk import (
    Accepted,
    BureauResponse,
    Connector,
    Credentials,
    Escalation,
    Irregular,
    Rejected,
    RequestContext,
    case_number_problem,
)

log = logging.getLogger(__name__)
_SHANGHAI = timedelta(hours=8)
IRREGULAR = "irregular_answer"


@dataclass(slots=True)
class Attempts:
    count: int = 0
    first_ms: int = 0
    last_ms: int = 0
    last_status: int = 0
    last_body: bytes = b""


@dataclass(frozen=True, slots=True)
class Result:
    """Final outcome of one escalation; ``final`` is False when shutdown interrupted it."""

    final: bool
    accepted: bool = False
    case_number: str | None = None
    reason: str = ""
    detail: str = ""
    attempts: Attempts = field(default_factory=Attempts)


class Nonces:
    """Request nonces: 32 hex digits of the operating system's CSPRNG each, as
    ``uuid.uuid4().hex`` gave (but all 128 bits random). Read ``per_read`` at a time: one
    ``getrandom`` system call, which releases the GIL, per ``per_read`` attempts, not each."""

    __slots__ = ("_at", "_buf", "_lock", "_pid", "_size")

    def __init__(self, per_read: int = 256) -> None:
        self._size = 16 * per_read
        self._buf = b""
        self._at = 0
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            # a forked child must not reuse its parent's unread random bytes (the same nonces)
            if self._at >= len(self._buf) or self._pid != os.getpid():
                self._buf, self._at, self._pid = os.urandom(self._size), 0, os.getpid()
            at = self._at
            self._at = at + 16
            buf = self._buf
        return buf[at : at + 16].hex()


class CityDelivery:
    def __init__(
        self,
        city: str,
        settings: CitySettings,
        connector: Connector,
        transport: Transport,
        observer: Observer,
        *,
        clock: Callable[[], float],
        stop: threading.Event,
        credentials: Credentials,
        nonce: Callable[[], str] | None = None,
    ) -> None:
        self.city = city
        self.settings = settings
        self.connector = connector
        self.transport = transport
        self.observer = observer
        self.clock = clock
        self.stop = stop
        self.credentials = credentials
        self.nonce = nonce or Nonces()
        self.limiter = TokenBucket(settings.rate_per_s, settings.burst, clock)
        self._token_turn = threading.Lock()
        self._prepaid = threading.local()
        self.breaker = CircuitBreaker(
            settings.breaker.failure_threshold,
            settings.breaker.open_s,
            settings.breaker.max_open_s,
            clock,
            on_change=lambda state: observer.on_breaker(city, state),
        )
        self.tokens = TokenCache(connector, transport, clock) if connector.token_grant else None
        self.retry = DeliveryRetry(
            settings.retry, stop_event=stop, before_sleep=self._before_sleep, on_held=self._held
        )
        observer.on_breaker(city, "closed")
        observer.on_rate_changed(city, settings.rate_per_s)
        self._reported_rate = settings.rate_per_s

    # -- public ------------------------------------------------------------------------------
    def deliver(self, escalation: Escalation, attempts: Attempts | None = None) -> Result:
        """Attempts until the outcome is final (or the stop event is set: ``final`` False).

        ``attempts`` (filled in as attempts are made) lets the caller describe them even when
        an unexpected exception escapes."""
        attempts = Attempts() if attempts is None else attempts
        if self.stop.is_set():
            return Result(False, attempts=attempts)
        try:
            outcome = self.retry(self._attempt, escalation, attempts)
        except TransientError:  # only once the stop event is set
            return Result(False, attempts=attempts)
        if isinstance(outcome, Accepted):
            return Result(True, True, outcome.case_number, attempts=attempts)
        return Result(True, False, None, outcome.reason, outcome.detail, attempts)

    def in_maintenance(self) -> bool:
        if not self.settings.maintenance:
            return False
        local = (datetime.fromtimestamp(self.clock(), tz=UTC) + _SHANGHAI).time()
        for window in self.settings.maintenance:
            if window.start <= window.end:
                if window.start <= local < window.end:
                    return True
            elif local >= window.start or local < window.end:
                return True
        return False

    def available(self) -> bool:
        """False while the engine should keep this city's partitions paused."""
        return self.breaker.state == "closed" and not self.in_maintenance()

    # -- pacing (the lane's side of the token bucket, see gateway.delivery.lane) -------------
    def reserve(self) -> float:
        """Take the token of an escalation's first attempt now: 0, else seconds to wait."""
        return self.limiter.reserve()

    @contextlib.contextmanager
    def prepaid(self) -> Iterator[None]:
        """The first attempt made on this thread inside uses the token :meth:`reserve` took;
        one not used (no attempt was made: a hold, an undecodable record) goes back."""
        self._prepaid.token = True
        try:
            yield
        finally:
            self._give_back_prepaid()

    def _take_prepaid(self) -> bool:
        """True (once) when this thread's attempt was given its token in advance."""
        if getattr(self._prepaid, "token", False):
            self._prepaid.token = False
            return True
        return False

    def _give_back_prepaid(self) -> None:
        """The attempt will not be made now: a token it took in advance goes back at once."""
        if self._take_prepaid():
            self.limiter.give_back()

    def waited(self, seconds: float) -> None:
        """An escalation waited ``seconds`` for its first attempt's token (in its lane)."""
        self.observer.on_limiter_wait(self.city, seconds)

    # -- one attempt --------------------------------------------------------------------------
    def _attempt(self, escalation: Escalation, attempts: Attempts) -> Accepted | Rejected:
        try:
            return self._try(escalation, attempts)
        except TransientError:  # a backoff, a token or a hold to wait for: tell the pool
            blocked()
            raise

    def _try(self, escalation: Escalation, attempts: Attempts) -> Accepted | Rejected:
        if self.in_maintenance():
            self._give_back_prepaid()
            raise Hold(f"{self.city}: maintenance window", wait_s=1.0)
        if not self.breaker.allow():
            self._give_back_prepaid()
            raise Hold(
                f"{self.city}: breaker {self.breaker.state}",
                wait_s=self.breaker.seconds_until_probe(),
            )
        try:
            self._take_token()
        except BaseException:
            self.breaker.release_probe()
            raise
        now = self.clock()
        attempts.count += 1
        attempts.first_ms = attempts.first_ms or int(now * 1000)
        attempts.last_ms = int(now * 1000)
        ctx = RequestContext(int(now * 1000), self.nonce(), self.credentials)
        try:
            if self.tokens is not None:
                with blocking():  # may ask the token endpoint
                    token = self.tokens.get(ctx)
                ctx = RequestContext(ctx.now_ms, ctx.nonce, ctx.credentials, token)
            request = self.connector.translate(escalation, ctx)
        except BureauUnavailable as exc:  # the token endpoint
            return self._unavailable(exc, attempts)
        except BaseException:  # a connector bug: the bureau was never called
            self.breaker.release_probe()
            self.observer.on_attempt(self.city, "internal_error")
            raise
        try:
            with blocking():
                response = self.transport.send(request)
        except BureauUnavailable as exc:
            return self._unavailable(exc, attempts)
        except IrregularAnswer as exc:
            attempts.last_status, attempts.last_body = 0, str(exc).encode()
            return self._irregular(f"{exc.reason}: {exc}")
        attempts.last_status, attempts.last_body = response.status, response.body[:2048]
        return self._classify(response)

    def _unavailable(self, exc: BureauUnavailable, attempts: Attempts) -> NoReturn:
        attempts.last_status, attempts.last_body = 0, str(exc).encode()
        self.breaker.record_failure()
        self.observer.on_attempt(self.city, "unavailable")
        raise exc

    def _irregular(self, detail: str) -> Rejected:
        """The bureau answered (a successful round trip), but out of bounds: final."""
        self.breaker.record_success()
        self.observer.on_attempt(self.city, "irregular")
        return Rejected(IRREGULAR, trim(detail, 200))

    def _classify(self, response: BureauResponse) -> Accepted | Rejected:
        try:
            outcome = self.connector.interpret(response)
        except GreenChannelError:
            raise
        except BaseException:  # a connector bug; the bureau did answer
            self.breaker.record_success()
            self.observer.on_attempt(self.city, "internal_error")
            raise
        if isinstance(outcome, Irregular):
            return self._irregular(f"{outcome.reason}: {outcome.detail}".rstrip(": "))
        if isinstance(outcome, Accepted):
            problem = case_number_problem(outcome.case_number)
            if problem is not None:
                return self._irregular(problem)
        if isinstance(outcome, Accepted | Rejected):
            self.breaker.record_success()
            self.observer.on_attempt(
                self.city, "accepted" if isinstance(outcome, Accepted) else "rejected"
            )
            return outcome
        self.observer.on_attempt(self.city, "retry")
        if response.status == 429 or outcome.reason == "rate_limited":
            cap = self.settings.retry.retry_after_cap_s
            hint = min(outcome.retry_after, cap) if outcome.retry_after else None
            self._reported_rate = self.limiter.penalize(hint)
            self.observer.on_rate_changed(self.city, self._reported_rate)
        elif outcome.reauthenticate and self.tokens is not None:
            self.tokens.invalidate()
        else:
            self.breaker.record_failure()
        raise RetryLaterError(
            f"{self.city}: retry later ({outcome.reason})",
            reason=outcome.reason,
            retry_after=outcome.retry_after,
        )

    def _take_token(self) -> None:
        # One worker of the city waits for the bucket at a time, the others for this lock: a
        # token wakes one thread, not every worker of the city to find all but one too early.
        # The wait for the turn counts as waiting for the bucket (the metric's rate() stays the
        # number of workers waiting).
        if self._take_prepaid():  # taken when the lane started the record
            self._report_rate()
            return
        waited = 0.0
        if not self._token_turn.acquire(blocking=False):
            began = time.monotonic()
            self._token_turn.acquire()
            waited = time.monotonic() - began
        try:
            while True:
                if self.stop.is_set():  # stopped while this worker waited for its turn
                    raise Hold(f"{self.city}: stopping", wait_s=0)
                wait = self.limiter.reserve()
                if wait <= 0:
                    break
                if self.stop.wait(wait):
                    raise Hold(f"{self.city}: stopping", wait_s=0)
                waited += wait
        finally:
            self._token_turn.release()
        if waited:
            self.observer.on_limiter_wait(self.city, waited)
        self._report_rate()

    def _report_rate(self) -> None:
        if self.limiter.rate != self._reported_rate:  # recovered (or lowered) since last report
            self._reported_rate = self.limiter.rate
            self.observer.on_rate_changed(self.city, self._reported_rate)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = getattr(exc, "reason", "error")
        self.observer.on_retry(self.city, str(reason))

    def _held(self, exc: BaseException) -> None:
        if not isinstance(exc, Hold):
            reason = getattr(exc, "reason", "error")
            log.warning("%s: retry budget spent (%s); holding the escalation", self.city, reason)


def response_excerpt(attempts: Attempts, known_pii: list[str | None]) -> str:
    """The last bureau answer, decoded (also percent-/JSON-/XML-escapes), masked and trimmed."""
    text = readable(attempts.last_body.decode("utf-8", "replace"))
    return trim(mask_text(text, known_pii), 1024)
