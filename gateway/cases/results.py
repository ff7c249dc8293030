"""Handling results out: the department's HandlingResults delivered to each city's bureau.

Through the same delivery engine as escalations (:mod:`gateway.delivery.engine`: per-city
lanes, token bucket, tenacity retries with jitter and capped Retry-After, circuit breaker,
maintenance windows, OAuth2 token cache, bounded dead letters, progress checks), with the
connector's ``translate_result`` / ``interpret_result`` in place of ``translate`` /
``interpret`` (:class:`ResultConnector`) and the result id as the bureau's idempotency key.

The department publishes to one topic, ``{prefix}results.v1`` (key = escalation id), whose
partitions mix cities. The engine isolates a city by pausing that city's partitions, so the
:class:`ResultSplitter` first copies each result, transactionally (exactly once), to its city's
``{prefix}results.<city>.v1`` (key, value and headers unchanged); a result it cannot decode, or
for a city without a result connector here, goes to ``{prefix}dlq.results.v1`` (stage
``results``). The engine (:func:`results_flow`) then writes a ``DeliveryReceipt`` per final
result on ``{prefix}results.receipts.v1`` (key = escalation id; ``case_number`` = the bureau's
receipt number; ``REJECTED`` with the reason for a permanent rejection, which is also
dead-lettered to ``{prefix}dlq.results.v1``). A city whose bureau is down holds only its own
results. As for escalations, a crash between a bureau's answer and the receipt's ack delivers
the result again; the idempotency key makes the bureau answer with the receipt it already gave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from gateway.avro.codec import Codec
from gateway.avro.codec import Kind as SchemaName
from gateway.cases.loop import TransactionalLoop
from gateway.config import Settings
from gateway.delivery.flow import Flow
from gateway.errors import DecodeError, RecordError
from gateway.kafka.append import Outgoing
from gateway.kafka.clients import Headers, Record
from gateway.ops.observer import Observer
from gateway.ops.watchdog import Watchdog
from gateway.sdk import (
    BureauRequest,
    BureauResponse,
    Connector,
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


class ResultKind:
    """Handling results as the delivery engine's records (:class:`~gateway.delivery.flow.Flow`)."""

    schema: SchemaName = "handling_result"

    def item(self, record: Mapping[str, Any]) -> HandlingResult:
        try:
            return handling_result(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"handling result has a bad field: {exc}", reason="invalid") from exc

    def since_ms(self, item: HandlingResult) -> int:
        return item.reported_at_ms

    def receipt_key(self, item: HandlingResult) -> tuple[bytes, Headers]:
        return item.escalation_id.encode(), [("gc-result-id", item.result_id.encode())]

    def receipt_ids(self, item: HandlingResult) -> tuple[str, str]:
        return item.escalation_id, item.complaint_id or ""

    def known_pii(self, item: HandlingResult) -> list[str | None]:
        return [item.note]

    def on_final(self, observer: Observer, city: str, accepted: bool, latency_s: float) -> None:
        observer.on_case_result(city, "accepted" if accepted else "rejected")


def results_flow(settings: Settings) -> Flow:
    """The handling results' flow through the delivery engine. Its pauses and oldest ages do
    not feed the per-city gauges (the escalations' own); its attempts, retries, breaker and
    rate do, as the city's delivery metrics."""
    topics = Topics(settings.topics.prefix)
    return Flow(
        name="results",
        group_id=f"{settings.cases.results_group_id}-deliver",
        topic=topics.results_for,
        city_of=topics.city_of_results,
        receipts=topics.result_receipts,
        dead_letters=topics.dlq_results,
        dead_letter_stage="results",
        kind=ResultKind(),
        city_gauges=False,
    )


def result_connectors(connectors: Mapping[str, Connector]) -> dict[str, Connector]:
    """The connectors (by name) that can report results, seen through their result side."""
    return {
        name: cast(Connector, ResultConnector(k))
        for name, k in connectors.items()
        if isinstance(k, ResultOutbound)
    }


class ResultSplitter(TransactionalLoop):
    """``{prefix}results.v1`` -> ``{prefix}results.<city>.v1``, exactly once."""

    name = "cases-results"
    stage = "results"

    def __init__(
        self,
        settings: Settings,
        cities: list[str],
        codec: Codec,
        observer: Observer,
        watchdog: Watchdog,
        *,
        instance_id: str = "0",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cities = frozenset(cities)
        super().__init__(
            settings,
            codec,
            observer,
            watchdog,
            # the group the results loop of earlier versions consumed with: an upgrade goes on
            # from its committed offsets
            group_id=settings.cases.results_group_id,
            instance_id=instance_id,
            clock=clock,
        )

    def input_topics(self) -> list[str]:
        return [self.topics.results]

    def output_topics(self) -> list[str]:
        return [self.topics.results_for(c) for c in sorted(self.cities)] + [self.topics.dlq_results]

    def outputs(self, records: list[Record]) -> list[Outgoing]:
        out: list[Outgoing] = []
        now = self.now_ms()
        for record in records:
            try:
                city = self._city(record)
            except (DecodeError, RecordError) as exc:
                out.append(
                    self.dead_letter(self.topics.dlq_results, record, exc, exc.reason, "", now)
                )
                continue
            value = record.value or b""
            out.append((self.topics.results_for(city), record.key, value, record.headers))
        return out

    def _city(self, record: Record) -> str:
        if not record.value:
            raise RecordError("record has no value", reason="empty")
        result = ResultKind().item(self.codec.decode_as("handling_result", record.value))
        if result.city not in self.cities:
            raise RecordError(f"no result connector for {result.city!r}", reason="city")
        return result.city
