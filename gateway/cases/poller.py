"""The poller: asks the polled bureaus for case updates, under each city's limit and breaker.

Per polled city: when due, the breaker must allow a request and the city's token bucket give a
token (the bucket of ``cities.<c>.rate_per_s``/``burst``, the poller's own: run one poller
replica), then ``connector.poll_request(cursor)`` goes out through the city's transport (TLS,
mTLS, allowlist as for deliveries; an OAuth2 token from the same token cache). A failure
(transport error, 5xx, 429, unreadable answer) counts against the breaker and the city is
asked again after a capped backoff; a 429 also lowers the bucket's rate and honours
``Retry-After``; a 401 drops the cached token.

A page's events become ``CaseUpdate`` records (source ``POLL``) on ``{prefix}cases.inbound.v1``
and the page's next cursor a record on the compacted ``{prefix}cases.cursors.v1`` (key = city),
**in one Kafka transaction**: after a crash the poller resumes from the last committed cursor
and may fetch the same events again; so may overlapping polls — the keeper applies each state
change once. When a page is full the next one is asked at once, else after
``inbound.poll_interval_s``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.avro.codec import Codec
from gateway.cases.updates import from_event
from gateway.config import Settings
from gateway.errors import BureauUnavailable, GreenChannelError
from gateway.http import HttpTransport, TokenCache, Transport
from gateway.kafka.append import Outgoing
from gateway.kafka.clients import Producer, TopicPartition
from gateway.kafka.reader import read_partitions
from gateway.ops.observer import Observer
from gateway.ops.watchdog import Watchdog
from gateway.policies.breaker import CircuitBreaker
from gateway.policies.ratelimit import TokenBucket
from gateway.sdk import (
    BureauResponse,
    CaseEvent,
    Connector,
    Credentials,
    PollInbound,
    PollPage,
    RequestContext,
    TransportPolicy,
)
from gateway.topics import Topics

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 300.0


@dataclass
class CityPoll:
    city: str
    connector: PollInbound
    transport: Transport
    credentials: Credentials
    limiter: TokenBucket
    breaker: CircuitBreaker
    tokens: TokenCache | None
    interval_s: float
    cursor: str = ""
    due: float = 0.0
    failures: int = 0
    polls: int = field(default=0)


class CasePoller:
    name = "cases-poller"

    def __init__(
        self,
        settings: Settings,
        connectors: Mapping[str, PollInbound],
        codec: Codec,
        observer: Observer,
        watchdog: Watchdog,
        *,
        instance_id: str = "0",
        clock: Callable[[], float] = time.time,
        transport_for: Callable[[str], Transport] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topics.prefix)
        self.codec = codec
        self.observer = observer
        self.watchdog = watchdog
        self.clock = clock
        self.ready = threading.Event()
        make = transport_for or (
            lambda c: HttpTransport(
                c,
                settings.cities[c],
                settings.delivery.endpoint_allowlist,
                _policy(connectors[c]),
            )
        )
        self.cities = {city: self._city(city, c, make(city)) for city, c in connectors.items()}
        self.producer = Producer(
            settings.kafka,
            transactional_id=f"{settings.cases.poller_transactional_id}-{instance_id}",
            linger_ms=5,
        )

    def _city(self, city: str, connector: PollInbound, transport: Transport) -> CityPoll:
        cs = self.settings.cities[city]
        creds = cs.credentials
        tokens = None
        if isinstance(connector, Connector) and connector.token_grant is not None:
            tokens = TokenCache(connector, transport, self.clock)
        return CityPoll(
            city=city,
            connector=connector,
            transport=transport,
            credentials=Credentials(creds.client_id, creds.resolved_secret(), dict(creds.extra)),
            limiter=TokenBucket(cs.rate_per_s, cs.burst, self.clock),
            breaker=CircuitBreaker(
                cs.breaker.failure_threshold, cs.breaker.open_s, cs.breaker.max_open_s, self.clock
            ),
            tokens=tokens,
            interval_s=cs.inbound.poll_interval_s,
        )

    # cursors --------------------------------------------------------------------------------
    def restore_cursors(self) -> None:
        tp = TopicPartition(self.topics.case_cursors, 0)
        with self.watchdog.guard("restore_poll_cursors"):
            records = read_partitions(self.settings.kafka, [tp])
        for record in records:
            city = record.key.decode() if record.key else ""
            if city in self.cities and record.value:
                self.cities[city].cursor = str(json.loads(record.value)["cursor"])
        log.info(
            "cases: poll cursors restored",
            extra={"cursors": {c: p.cursor for c, p in self.cities.items()}},
        )

    # the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        with self.watchdog.guard("init_transactions"):
            self.producer.init_transactions()
        with self.watchdog.guard("load_metadata"):
            self.producer.load_metadata([self.topics.case_inbound, self.topics.case_cursors])
        self.restore_cursors()
        self.ready.set()
        try:
            while not stop.is_set():
                self.watchdog.beat(self.name)
                now = self.clock()
                for poll in self.cities.values():
                    if poll.due <= now:
                        self.poll_once(poll)
                nearest = min((p.due for p in self.cities.values()), default=now + 1)
                stop.wait(min(1.0, max(0.0, nearest - self.clock())))
        finally:
            self.producer.close()
            for poll in self.cities.values():
                poll.transport.close()

    def poll_once(self, poll: CityPoll) -> str:
        """One poll of one city; returns the outcome label (also counted)."""
        outcome = self._poll(poll)
        self.observer.on_case_poll(poll.city, outcome)
        return outcome

    def _poll(self, poll: CityPoll) -> str:
        now = self.clock()
        if not poll.breaker.allow():
            poll.due = now + max(0.5, poll.breaker.seconds_until_probe())
            return "breaker_open"
        wait = poll.limiter.reserve()
        if wait > 0:
            poll.due = now + wait
            return "rate_limited_locally"
        try:
            page = self._fetch(poll)
        except _PollFailed as failed:
            return self._failed(poll, failed.outcome)
        poll.breaker.record_success()
        poll.failures = 0
        if not self._commit(poll, page.events, page.cursor):
            poll.due = self.clock() + 1.0
            return "kafka_unavailable"
        poll.cursor = page.cursor
        full = len(page.events) >= getattr(poll.connector, "poll_limit", 100)
        poll.due = self.clock() + (0.0 if full else poll.interval_s)
        return "ok"

    def _fetch(self, poll: CityPoll) -> PollPage:
        try:
            response = self._send(poll)
        except BureauUnavailable as exc:
            raise _PollFailed("unavailable") from exc
        if response.status == 429:
            poll.limiter.penalize(_retry_after(response))
            raise _PollFailed("rate_limited")
        if response.status == 401 and poll.tokens is not None:
            poll.tokens.invalidate()
            raise _PollFailed("auth")
        try:
            return poll.connector.parse_poll(response)
        except ValueError as exc:
            raise _PollFailed("unreadable" if response.status < 500 else "unavailable") from exc

    def _send(self, poll: CityPoll) -> BureauResponse:
        ctx = RequestContext(int(self.clock() * 1000), uuid.uuid4().hex, poll.credentials)
        if poll.tokens is not None:
            ctx = RequestContext(ctx.now_ms, ctx.nonce, ctx.credentials, poll.tokens.get(ctx))
        return poll.transport.send(poll.connector.poll_request(poll.cursor, ctx))

    def _failed(self, poll: CityPoll, outcome: str) -> str:
        poll.breaker.record_failure()
        poll.failures += 1
        poll.due = self.clock() + min(MAX_BACKOFF_S, poll.interval_s * 2 ** min(poll.failures, 8))
        return outcome

    def _commit(self, poll: CityPoll, events: tuple[CaseEvent, ...], cursor: str) -> bool:
        now_ms = int(self.clock() * 1000)
        outputs: list[Outgoing] = []
        for event in events:
            update = from_event(event, city=poll.city, observed_at_ms=now_ms, source="POLL")
            value = self.codec.encode("case_update", update)
            outputs.append((self.topics.case_inbound, update["escalation_id"].encode(), value, ()))
        cursor_value = json.dumps({"cursor": cursor, "at": now_ms}).encode()
        outputs.append((self.topics.case_cursors, poll.city.encode(), cursor_value, ()))
        try:
            with self.watchdog.guard("transaction"):
                self.producer.begin()
                self.producer.send_all(outputs)
                self.producer.commit()
        except GreenChannelError as exc:
            log.warning("cases: poll of %s not stored, aborting: %s", poll.city, exc)
            with self.watchdog.guard("abort_transaction"):
                self.producer.abort()  # a failed abort is fatal
            return False
        return True


class _PollFailed(Exception):
    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def _retry_after(response: BureauResponse) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(60.0, float(value)) if value else None
    except ValueError:
        return None


def _policy(connector: PollInbound) -> TransportPolicy:
    """The connector's transport policy (client certificate, minimum TLS version): polls are
    held to it as deliveries are."""
    if isinstance(connector, Connector):
        return connector.transport
    raise TypeError(f"{type(connector).__name__}: a polled connector must be a full Connector")
