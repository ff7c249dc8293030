"""Handling results out: the department's HandlingResults delivered to each city's bureau.

A thin path beside the escalation delivery engine that reuses its public pieces: each city's
``gateway.delivery.city.CityDelivery`` (token bucket, tenacity retries with jitter and capped
Retry-After, circuit breaker, maintenance windows, OAuth2 token cache) over the city's
``gateway.http.HttpxTransport`` (allowlist, TLS, mTLS), with the connector's
``translate_result`` / ``interpret_result`` in place of ``translate`` / ``interpret`` and the
result id as the bureau's idempotency key.

Consumes ``{prefix}results.v1`` (key = escalation id). Per poll, the batch's results are
delivered (cities in parallel, one city's results in order), then, in one Kafka transaction with
the consumed offsets: a ``DeliveryReceipt`` per accepted result on ``{prefix}results.receipts.v1``
(``case_number`` = the bureau's receipt number) or the original record on
``{prefix}dlq.results.v1`` with the ``gc-dlq-*`` headers for a permanent rejection. A crash
before the commit re-delivers the batch; the idempotency key makes the bureau answer with the
receipt it already gave. Limitation: a city whose breaker stays open holds the batch (and so the
other cities' results of later batches) until it recovers; results are rare next to
escalations.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from gateway.avro.codec import Codec
from gateway.cases.loop import TransactionalLoop
from gateway.config import Settings
from gateway.delivery.city import CityDelivery, Result
from gateway.errors import DecodeError, RecordError, RejectedByBureau
from gateway.http import HttpxTransport, Transport
from gateway.kafka.append import Outgoing
from gateway.kafka.clients import Record
from gateway.ops.observer import Observer
from gateway.ops.watchdog import Watchdog
from gateway.sdk import (
    BureauRequest,
    BureauResponse,
    Connector,
    Credentials,
    Escalation,
    HandlingResult,
    Outcome,
    RequestContext,
    ResultOutbound,
    TokenGrant,
    TransportPolicy,
)
from gateway.topics import Topics

log = logging.getLogger(__name__)


class ResultConnector:
    """A city connector seen through its result side, so ``CityDelivery`` can drive it."""

    def __init__(self, inner: Connector) -> None:
        if not isinstance(inner, ResultOutbound):
            raise TypeError(f"{inner.name}: the connector cannot report handling results")
        self.inner = inner
        self._results: ResultOutbound = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def city_code(self) -> str:
        return self.inner.city_code

    @property
    def family(self) -> str:
        return self.inner.family

    @property
    def token_grant(self) -> TokenGrant | None:
        return self.inner.token_grant

    @property
    def requires_client_cert(self) -> bool:
        return self.inner.requires_client_cert

    @property
    def transport(self) -> TransportPolicy:
        return self.inner.transport

    def translate(self, escalation: Escalation, ctx: RequestContext) -> BureauRequest:
        return self._results.translate_result(cast(HandlingResult, escalation), ctx)

    def interpret(self, response: BureauResponse) -> Outcome:
        return self._results.interpret_result(response)

    def token_request(self, ctx: RequestContext) -> BureauRequest:
        return self.inner.token_request(ctx)

    def interpret_token(self, response: BureauResponse) -> tuple[str, float]:
        return self.inner.interpret_token(response)


def handling_result(record: Mapping[str, Any]) -> HandlingResult:
    return HandlingResult(
        result_id=record["result_id"],
        escalation_id=record["escalation_id"],
        complaint_id=record.get("complaint_id"),
        city=record["city"],
        case_number=record.get("case_number"),
        contacted_at_ms=int(record["contacted_at"]),
        method=record["method"],
        settled=bool(record["settled"]),
        refund_fen=record.get("refund_fen"),
        compensation_fen=record.get("compensation_fen"),
        satisfaction=record["satisfaction"],
        note=record.get("note"),
        reported_at_ms=int(record["reported_at"]),
    )


class ResultDeliverer(TransactionalLoop):
    name = "cases-results"
    stage = "results"

    def __init__(
        self,
        settings: Settings,
        connectors: Mapping[str, Connector],
        codec: Codec,
        observer: Observer,
        watchdog: Watchdog,
        *,
        instance_id: str = "0",
        clock: Callable[[], float] = time.time,
        transport_for: Callable[[str], Transport] | None = None,
    ) -> None:
        self.topics = Topics(settings.topics.prefix)
        self.codec = codec
        self.observer = observer
        self.stop_event = threading.Event()
        make = transport_for or (
            lambda c: HttpxTransport(
                c,
                settings.cities[c],
                settings.delivery.endpoint_allowlist,
                connectors[c].transport,
            )
        )
        self.cities: dict[str, CityDelivery] = {}
        for city, connector in connectors.items():
            if not isinstance(connector, ResultOutbound):
                continue
            creds = settings.cities[city].credentials
            self.cities[city] = CityDelivery(
                city,
                settings.cities[city],
                ResultConnector(connector),
                make(city),
                observer,
                clock=clock,
                stop=self.stop_event,
                credentials=Credentials(
                    creds.client_id, creds.resolved_secret(), dict(creds.extra)
                ),
            )
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.cities)))
        cs = settings.cases
        super().__init__(
            settings,
            watchdog,
            group_id=cs.results_group_id,
            instance_id=instance_id,
            topics=[self.topics.results],
            clock=clock,
        )

    def run(self, stop: threading.Event) -> None:
        def relay() -> None:
            stop.wait()
            self.stop_event.set()

        threading.Thread(target=relay, daemon=True).start()
        try:
            super().run(stop)
        finally:
            self.stop_event.set()
            self._pool.shutdown(wait=True)
            for city in self.cities.values():
                city.transport.close()

    def output_topics(self) -> list[str]:
        return [self.topics.result_receipts, self.topics.dlq_results]

    def outputs(self, records: list[Record]) -> list[Outgoing] | None:
        decoded: list[tuple[Record, HandlingResult | None, RecordError | None]] = []
        for record in records:
            try:
                if not record.value:
                    raise RecordError("record has no value", reason="empty")
                result = handling_result(self.codec.decode_as("handling_result", record.value))
                if result.city not in self.cities:
                    raise RecordError(f"no result connector for {result.city!r}", reason="city")
                decoded.append((record, result, None))
            except (DecodeError, RecordError) as exc:
                decoded.append((record, None, exc))
        outcomes = self._deliver([item[1] for item in decoded if item[1] is not None])
        if any(not o.final for o in outcomes.values()):
            return None  # stopping mid-batch: nothing is committed, the batch is read again
        out: list[Outgoing] = []
        now = self.now_ms()
        for record, maybe, error in decoded:
            out.append(self._output(record, maybe, error, outcomes, now))
        return out

    def _deliver(self, results: list[HandlingResult]) -> dict[str, Result]:
        by_city: dict[str, list[HandlingResult]] = {}
        for r in results:
            by_city.setdefault(r.city, []).append(r)

        def one_city(items: list[HandlingResult]) -> list[tuple[str, Result]]:
            city = self.cities[items[0].city]
            return [(r.result_id, city.deliver(cast(Escalation, r))) for r in items]

        outcomes: dict[str, Result] = {}
        for pairs in self._pool.map(one_city, by_city.values()):
            outcomes.update(pairs)
        return outcomes

    def _output(
        self,
        record: Record,
        result: HandlingResult | None,
        error: RecordError | None,
        outcomes: Mapping[str, Result],
        now: int,
    ) -> Outgoing:
        if result is None:
            assert error is not None
            return self.dead_letter(self.topics.dlq_results, record, error, error.reason, "", now)
        outcome = outcomes[result.result_id]
        if not outcome.accepted:
            self.observer.on_case_result(result.city, "rejected")
            error = RejectedByBureau(outcome.detail or outcome.reason, reason=outcome.reason)
            return self.dead_letter(
                self.topics.dlq_results, record, error, outcome.reason, result.city, now
            )
        self.observer.on_case_result(result.city, "accepted")
        receipt = {
            "escalation_id": result.escalation_id,
            "complaint_id": result.complaint_id or "",
            "city": result.city,
            "outcome": "ACCEPTED",
            "case_number": outcome.case_number,
            "reason": None,
            "attempts": outcome.attempts.count,
            "first_attempt_at": outcome.attempts.first_ms,
            "completed_at": now,
            "latency_ms": max(0, now - result.reported_at_ms),
        }
        value = self.codec.encode("receipt", receipt)
        return (self.topics.result_receipts, result.escalation_id.encode(), value, ())
