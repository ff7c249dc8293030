"""Delivering one escalation to one city until its outcome is final.

``CityDelivery.deliver`` runs on a city worker thread (never on the poll loop). Each attempt:
maintenance window and breaker check -> a token from the city's bucket (retries pay too) ->
pure ``translate`` -> HTTP -> pure ``interpret``. Retry timing is the city's tenacity policy.
When the policy gives up on a transient failure, or the breaker is open, the escalation is
*held* (never dead-lettered): the worker waits for the breaker's next probe and tries again,
while the engine keeps the city's partitions paused. Only a permanent rejection is final
besides acceptance.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tenacity import RetryCallState

from gateway.config import CitySettings
from gateway.errors import BureauUnavailable, TransientError
from gateway.http import TokenCache, Transport
from gateway.ops.observer import Observer
from gateway.pii import mask_text, readable, trim
from gateway.policies.breaker import CircuitBreaker
from gateway.policies.ratelimit import TokenBucket
from gateway.policies.retry import Hold, RetryLaterError, build_retrying
from gateway.sdk import (
    Accepted,
    BureauResponse,
    Connector,
    Credentials,
    Escalation,
    Rejected,
    RequestContext,
)

log = logging.getLogger(__name__)
_SHANGHAI = timedelta(hours=8)


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
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.city = city
        self.settings = settings
        self.connector = connector
        self.transport = transport
        self.observer = observer
        self.clock = clock
        self.stop = stop
        self.credentials = credentials
        self.nonce = nonce
        self.limiter = TokenBucket(settings.rate_per_s, settings.burst, clock)
        self.breaker = CircuitBreaker(
            settings.breaker.failure_threshold,
            settings.breaker.open_s,
            settings.breaker.max_open_s,
            clock,
            on_change=lambda state: observer.on_breaker(city, state),
        )
        self.tokens = TokenCache(connector, transport, clock) if connector.token_grant else None
        self.retrying = build_retrying(
            settings.retry, stop_event=stop, before_sleep=self._before_sleep
        )
        observer.on_breaker(city, "closed")
        observer.on_rate_changed(city, settings.rate_per_s)
        self._reported_rate = settings.rate_per_s

    # -- public ------------------------------------------------------------------------------
    def deliver(self, escalation: Escalation) -> Result:
        attempts = Attempts()
        while not self.stop.is_set():
            try:
                outcome = self.retrying.copy()(self._attempt, escalation, attempts)
            except Hold as hold:
                self.stop.wait(min(max(hold.wait_s, 0.05), 1.0))
                continue
            except TransientError as exc:
                log.warning(
                    "%s: retry budget spent (%s); holding the escalation", self.city, exc.reason
                )
                continue
            if isinstance(outcome, Accepted):
                return Result(True, True, outcome.case_number, attempts=attempts)
            return Result(True, False, None, outcome.reason, outcome.detail, attempts)
        return Result(False, attempts=attempts)

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

    # -- one attempt --------------------------------------------------------------------------
    def _attempt(self, escalation: Escalation, attempts: Attempts) -> Accepted | Rejected:
        if self.in_maintenance():
            raise Hold(f"{self.city}: maintenance window", wait_s=1.0)
        if not self.breaker.allow():
            raise Hold(
                f"{self.city}: breaker {self.breaker.state}",
                wait_s=self.breaker.seconds_until_probe(),
            )
        self._take_token()
        now = self.clock()
        attempts.count += 1
        attempts.first_ms = attempts.first_ms or int(now * 1000)
        attempts.last_ms = int(now * 1000)
        ctx = RequestContext(int(now * 1000), self.nonce(), self.credentials)
        try:
            if self.tokens is not None:
                ctx = RequestContext(ctx.now_ms, ctx.nonce, ctx.credentials, self.tokens.get(ctx))
            response = self.transport.send(self.connector.translate(escalation, ctx))
        except BureauUnavailable as exc:
            attempts.last_status, attempts.last_body = 0, str(exc).encode()
            self.breaker.record_failure()
            self.observer.on_attempt(self.city, "unavailable")
            raise
        attempts.last_status, attempts.last_body = response.status, response.body[:2048]
        return self._classify(response)

    def _classify(self, response: BureauResponse) -> Accepted | Rejected:
        outcome = self.connector.interpret(response)
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
        waited = 0.0
        while True:
            wait = self.limiter.reserve()
            if wait <= 0:
                break
            if self.stop.wait(wait):
                raise Hold(f"{self.city}: stopping", wait_s=0)
            waited += wait
        if waited:
            self.observer.on_limiter_wait(self.city, waited)
        if self.limiter.rate != self._reported_rate:  # recovered (or lowered) since last report
            self._reported_rate = self.limiter.rate
            self.observer.on_rate_changed(self.city, self._reported_rate)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        reason = getattr(exc, "reason", "error")
        self.observer.on_retry(self.city, str(reason))


def response_excerpt(attempts: Attempts, known_pii: list[str | None]) -> str:
    """The last bureau answer, decoded (also percent-/JSON-/XML-escapes), masked and trimmed."""
    text = readable(attempts.last_body.decode("utf-8", "replace"))
    return trim(mask_text(text, known_pii), 1024)
