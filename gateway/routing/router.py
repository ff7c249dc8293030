"""The router: consume complaints, classify, publish to the pyramid — transactionally.

One loop iteration = one Kafka transaction::

    poll a batch -> for each record: decode, validate, classify -> outputs (or a dead letter)
    -> begin -> send outputs -> send_offsets_to_transaction -> commit

so every complaint appears in its destination topic(s) exactly once for ``read_committed``
readers, also across crashes (a new incarnation with the same transactional id aborts the
unfinished transaction of the old one). Department records carry the *original* bytes (no
re-encoding) plus routing headers; only escalations are encoded. The blocking transaction calls
run under the watchdog. A batch whose transaction fails is aborted and re-read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

from gateway.avro.codec import Codec, validate_complaint
from gateway.cities import city_key
from gateway.config import Settings
from gateway.deadletters.headers import dead_letter_headers
from gateway.errors import (
    FatalError,
    GreenChannelError,
    RecordError,
    TransientError,
    UnknownCity,
)
from gateway.kafka.clients import Consumer, Headers, Producer, Record, TopicPartition, offset_ranges
from gateway.ops.observer import Observer
from gateway.ops.watchdog import Watchdog
from gateway.pii import known_values
from gateway.routing.escalation import build_escalation
from gateway.routing.rules import Classifier, Decision
from gateway.topics import Department, Topics

log = logging.getLogger(__name__)


class Output(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    """None only for a dead-lettered tombstone."""
    headers: Headers


class Routed(NamedTuple):
    outputs: list[Output]
    decision: Decision | None
    dead_letter_reason: str | None = None


class RecordRouter:
    """Pure-ish per-record routing: bytes in, output records out (no Kafka IO)."""

    def __init__(
        self,
        settings: Settings,
        classifier: Classifier,
        codec: Codec,
        clock_ms: Callable[[], int],
    ) -> None:
        self.topics = Topics(settings.topics.prefix)
        self.green = frozenset(settings.router.green_cities)
        self.working_days = settings.router.handling_days
        self.classifier = classifier
        self.codec = codec
        self.clock_ms = clock_ms
        # Destination topic and the rule header per decision, built once (hot path). The topic
        # says where a record went; the header says why.
        self._targets: dict[Decision, tuple[str, tuple[tuple[str, bytes], ...]]] = {
            d: (
                self.topics.desk(d.desk)
                if d.desk is not None
                else self.topics.department(d.department),
                (("gc-rule", d.rule_id.encode()),),
            )
            for d in classifier.decisions
        }

    def output_topics(self) -> list[str]:
        """Every topic :meth:`route` can send to."""
        return [
            *(topic for topic, _ in self._targets.values()),
            *(self.topics.escalations(city) for city in sorted(self.green)),
            self.topics.dlq_complaints,
        ]

    def route(self, record: Record) -> Routed:
        complaint: dict[str, Any] | None = None
        try:
            value = record.value
            if not value:
                raise RecordError("record has no value (empty or tombstone)", reason="empty")
            complaint = self.codec.decode_as("complaint", value)
            return self._route(record, value, complaint)
        except RecordError as exc:
            # the record's own personal values are masked wherever the message quotes them
            return self._dead_letter(record, exc, exc.reason, known_values(complaint or {}))

    def _route(self, record: Record, value: bytes, complaint: dict[str, Any]) -> Routed:
        validate_complaint(complaint)
        city = city_key(complaint["city_code"])
        if city is None:  # validate_complaint knows the city codes: kept as a guard
            raise UnknownCity("city_code is not a known city")
        decision = self.classifier.classify(complaint)
        key = complaint["complaint_id"].encode()
        topic, rule_header = self._targets[decision]
        headers = (*record.headers, *rule_header) if record.headers else rule_header
        if not decision.major:
            return Routed([Output(topic, key, value, headers)], decision)
        # major: say what happens next (escalated to the green-channel bureau, or manual)
        green = city in self.green
        handling = b"escalated" if green else b"manual"
        headers = (*headers, ("gc-handling", handling), ("gc-city", city.encode()))
        outputs = [Output(topic, key, value, headers)]
        if green:
            outputs.append(self._escalation(complaint, city, decision, key))
        return Routed(outputs, decision)

    def _escalation(
        self, complaint: dict[str, object], city: str, decision: Decision, key: bytes
    ) -> Output:
        escalation = build_escalation(
            complaint,
            city=city,
            rule_id=decision.rule_id,
            now_ms=self.clock_ms(),
            working_days=self.working_days,
        )
        topic = self.topics.escalations(city)
        value = self.codec.encode("escalation", escalation, topic)  # the topic names its subject
        headers = [
            ("gc-rule", decision.rule_id.encode()),
            ("gc-escalation-id", str(escalation["escalation_id"]).encode()),
        ]
        return Output(topic, key, value, headers)

    def _dead_letter(
        self, record: Record, error: GreenChannelError, reason: str, known: list[str]
    ) -> Routed:
        headers = dead_letter_headers(
            record,
            stage="router",
            error=error,
            reason=reason,
            now_ms=self.clock_ms(),
            known_pii=known,
        )
        # a tombstone stays a tombstone (null value), not an empty value
        return Routed(
            [Output(self.topics.dlq_complaints, record.key, record.value, headers)], None, reason
        )


def fetch_bytes_for(max_batch: int) -> int:
    """The consumer's fetch size for batches of up to ``max_batch`` ~1 KB complaints.

    A poll returns what the completed fetches hold, so ~800 bytes per record still fills most
    of a batch (two fetches often complete per poll) while bounding memory: the consumer
    holds the fetch being read and the next one, and each record is copied into the
    producer's batches. Measured with 10,000-record batches: 1,280 bytes per record peaked at
    ~165-185 MiB RSS, 800 at ~140 MiB.
    """
    return min(64 << 20, max(1 << 20, max_batch * 800))


class Router:
    """The transactional consume-classify-produce loop."""

    def __init__(
        self,
        settings: Settings,
        record_router: RecordRouter,
        observer: Observer,
        watchdog: Watchdog,
        *,
        instance_id: str = "0",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.rr = record_router
        self.observer = observer
        self.watchdog = watchdog
        self.clock = clock
        rs = settings.router
        self.consumer = Consumer(
            settings.kafka,
            group_id=rs.group_id,
            topics=[record_router.topics.complaints],
            max_poll_records=rs.max_batch,
            session_timeout_ms=rs.session_timeout_ms,
            instance_id=f"{rs.group_id}-{instance_id}" if rs.static_membership else None,
            on_assigned=self._on_assigned,
            on_revoked=self._on_revoked,
            # kafka-python buffers up to 50 MiB of fetched data by default
            fetch_max_bytes=fetch_bytes_for(rs.max_batch),
            max_partition_fetch_bytes=1024 * 1024,
        )
        self.producer = Producer(
            settings.kafka,
            transactional_id=f"{rs.transactional_id_prefix}-{instance_id}",
            transaction_timeout_ms=rs.transaction_timeout_ms,
            linger_ms=rs.linger_ms,
        )
        self._lag: dict[str, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._next_skip_check = 0.0
        self.ready = threading.Event()
        observer.watch_lag("router", lambda: dict(self._lag))

    def _on_assigned(self, tps: list[TopicPartition]) -> None:
        log.info("router: partitions assigned", extra={"partitions": [f"{t}:{p}" for t, p in tps]})
        self.ready.set()

    def _on_revoked(self, tps: list[TopicPartition]) -> None:
        log.info("router: partitions revoked", extra={"partitions": [f"{t}:{p}" for t, p in tps]})

    def run(self, stop: threading.Event) -> None:
        with self.watchdog.guard("init_transactions"):
            self.producer.init_transactions()
        with self.watchdog.guard("load_metadata"):
            self.producer.load_metadata(self.rr.output_topics())
        try:
            while not stop.is_set():
                self.watchdog.beat("router")
                records = self.consumer.poll(self.settings.router.poll_timeout_ms)
                if records:
                    self.process(records)
                else:
                    self._commit_skipped()
        finally:
            self.consumer.close()
            self.producer.close()

    def process(self, records: list[Record]) -> None:
        started = self.clock()
        route = self.rr.route
        # Route everything first, then send in one burst: the sends of a transaction then form
        # one batch per partition (interleaving routing and sending split them: ~25 % more CPU).
        routed = [route(r) for r in records]
        first_offsets, next_offsets = offset_ranges(records)
        # Commit the consumer's position, not last + 1: on a transactional input topic it is
        # past the commit marker (else the marker stays as lag 1 in every lag monitor).
        next_offsets = {tp: max(o, self.consumer.position(tp)) for tp, o in next_offsets.items()}
        try:
            # The whole transaction runs under one deadline: begin, sends (which can block on
            # metadata), send_offsets_to_transaction and commit_transaction.
            with self.watchdog.guard("transaction"):
                self.producer.begin()
                self.producer.send_all([o for result in routed for o in result.outputs])
                self.producer.send_offsets(next_offsets, self.consumer.group_metadata())
                self.producer.commit()
        except GreenChannelError as exc:
            self._abort(exc, first_offsets)
            self.observer.on_transaction(self.clock() - started, len(records), committed=False)
            return
        self._committed(records, routed, started, next_offsets)

    def _commit_skipped(self) -> None:
        """After an empty poll, at most once a second: commit positions that moved without
        returning records (a commit marker or an aborted batch fetched on its own)."""
        now = time.monotonic()
        if now < self._next_skip_check:
            return
        self._next_skip_check = now + 1.0
        moved = {}
        for tp in self.consumer.assignment():
            pos = self.consumer.position(tp)
            known = self._positions.setdefault(tp, pos)  # first seen: where the group already is
            if pos > known:
                moved[tp] = pos
        if not moved:  # nothing to commit: no call that could block on a frozen broker
            return
        try:
            with self.watchdog.guard("commit"):
                self.consumer.commit(moved)
        except TransientError as exc:  # a rebalance: the next empty poll tries again
            log.info("router: commit of skipped offsets deferred: %s", exc)
            return
        self._lag = self.consumer.lag_by_topic(self._positions, moved)

    def _abort(self, exc: GreenChannelError, first_offsets: dict[TopicPartition, int]) -> None:
        log.warning("router: transaction failed, aborting and re-reading the batch: %s", exc)
        try:
            with self.watchdog.guard("abort_transaction"):
                self.producer.abort()
        except GreenChannelError as abort_exc:
            raise FatalError(f"cannot abort transaction after {exc}: {abort_exc}") from abort_exc
        for tp, offset in first_offsets.items():
            self.consumer.seek(tp, offset)

    def _committed(
        self,
        records: list[Record],
        routed: list[Routed],
        started: float,
        next_offsets: dict[TopicPartition, int],
    ) -> None:
        now = self.clock()
        obs = self.observer
        obs.on_transaction(now - started, len(records), committed=True)
        obs.on_consumed(len(records))
        routed_by = Counter(x.decision for x in routed if x.decision is not None)
        obs.on_routed_latencies(
            [
                now - r.timestamp_ms / 1000
                for r, x in zip(records, routed, strict=True)
                if x.decision is not None
            ]
        )
        for d, n in routed_by.items():
            obs.on_routed(d.department.value, d.desk.value if d.desk else "", d.rule_id, n)
        if routed_by.total() < len(routed):
            self._dead_lettered(records, routed)
        self._lag = self.consumer.lag_by_topic(self._positions, next_offsets)

    def _dead_lettered(self, records: list[Record], routed: list[Routed]) -> None:
        dead_by: Counter[str] = Counter()
        for record, result in zip(records, routed, strict=True):
            if result.dead_letter_reason is None:
                continue
            dead_by[result.dead_letter_reason] += 1
            log.warning(
                "router: dead-lettered a complaint record",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "reason": result.dead_letter_reason,
                },
            )
        for reason, n in dead_by.items():
            self.observer.on_router_dead_lettered(reason, n)


__all__ = ["Department", "Output", "RecordRouter", "Routed", "Router"]
