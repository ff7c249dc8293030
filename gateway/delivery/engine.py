"""The delivery engine: one poll loop feeding one lane per city, the lanes sharing one pool of
worker threads (:mod:`gateway.delivery.workers`).

The poll loop never sleeps, never does HTTP and never retries. Each iteration it:
1. takes finished records from the completion queue and commits each partition's commit point
   (the lowest offset still in flight, else the consumer's position, which is past transaction
   markers and aborted batches: lag reaches 0; under the watchdog);
2. pauses the partitions of every city that is unavailable (breaker not closed, maintenance
   window) or saturated (too many records in flight), and resumes them when it recovers — only
   that city's partitions, so one city's trouble never holds back another;
3. polls and hands each record to its city's lane.

Partitions revoked in a rebalance are forgotten; their unfinished records are redelivered by
the new owner and the bureau deduplicates them by idempotency key.

Progress is reported to a :class:`~gateway.delivery.liveness.Liveness` registry: the loop beats
``deliver-loop`` each iteration; ``deliver-workers`` fails when a worker thread is gone;
``deliver-commit`` stops beating when a partition's commit point has been held for
``delivery.stuck_after_s`` by one unfinished record while records after it are final and its
city is available (an outage or a maintenance window holds records by design, never counted).

A receipt or dead-letter write that fails fatally (:mod:`gateway.delivery.outcomes`: a
``FatalError`` from the producer, or a producer in a fatal state) stops the engine: ``run``
drains, commits what is final (never past the unwritten record) and raises the
``FatalError``, and the process exits 1 (``docs/errors.md``).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable

from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.delivery.city import CityDelivery
from gateway.delivery.flow import Flow, escalations
from gateway.delivery.lane import Completion, Job, Lane
from gateway.delivery.liveness import Liveness, NoLiveness
from gateway.delivery.offsets import OffsetTracker
from gateway.delivery.outcomes import Outcomes
from gateway.delivery.workers import Workers
from gateway.delivery.writes import Writes
from gateway.errors import FatalError, GreenChannelError, TransientError
from gateway.http import HttpTransport, Transport
from gateway.kafka.admin import Admin
from gateway.kafka.clients import Consumer, Producer, Record, TopicPartition, offset_ranges
from gateway.ops.observer import Observer
from gateway.ops.watchdog import Watchdog
from gateway.sdk import Connector, Credentials

log = logging.getLogger(__name__)
TransportFactory = Callable[[str], Transport]
WRITE_LINGER_MS = 50
"""How long the producer waits to put more receipts and dead letters into one request."""
WORKER_THREADS = 8
"""Threads of the pool every city's lane shares (more start while some are blocked)."""


class DeliveryEngine:
    def __init__(
        self,
        settings: Settings,
        connectors: dict[str, Connector],
        codec: Codec,
        observer: Observer,
        watchdog: Watchdog,
        *,
        cities: list[str],
        transport_factory: TransportFactory | None = None,
        clock: Callable[[], float] = time.time,
        liveness: Liveness | None = None,
        producer: Producer | None = None,
        consumer_factory: Callable[..., Consumer] = Consumer,
        topic_limits: Callable[[list[str]], dict[str, int]] | None = None,
        flow: Flow | None = None,
    ) -> None:
        self.settings = settings
        self.flow = flow or escalations(settings.topics.prefix, settings.delivery.group_id)
        self.loop_name, self.commit_name, self.workers_name = (
            self.flow.liveness(part) for part in ("loop", "commit", "workers")
        )
        self.observer = observer
        self.watchdog = watchdog
        self.clock = clock
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self.tracker = OffsetTracker()
        self.liveness = liveness or NoLiveness()
        self._generation: dict[TopicPartition, int] = {}
        self._paused_cities: set[str] = set()
        self._held: dict[TopicPartition, tuple[int, float]] = {}
        self._reported_stuck = False
        self.drained = True
        """False when shutdown() gave up on in-flight deliveries at its deadline."""
        self._commit_deferred = False
        self.fatal: FatalError | None = None
        """The first fatal failure of a worker; ``run`` raises it once drained."""
        self._fatal_lock = threading.Lock()
        make_transport = transport_factory or (
            lambda city: self._http_transport(city, connectors[settings.connector_of(city)])
        )
        self.producer = producer or Producer(settings.kafka, linger_ms=WRITE_LINGER_MS)
        self.writes = Writes(self.producer, observer, stop=self.stop_event, on_fatal=self._on_fatal)
        read_limits = topic_limits or self._topic_limits
        self.record_limits = read_limits([self.flow.receipts, self.flow.dead_letters])
        self.deliveries: dict[str, CityDelivery] = {}
        self.lanes: dict[str, Lane] = {}
        self.workers = Workers(
            min(WORKER_THREADS, sum(settings.city(c).concurrency for c in cities) or 1),
            liveness=self.liveness,
            workers_name=self.workers_name,
        )
        for city in cities:
            self.lanes[city] = self._lane(
                city, connectors[settings.connector_of(city)], make_transport(city), codec
            )
        self.consumer = consumer_factory(
            settings.kafka,
            group_id=self.flow.group_id,
            topics=[self.flow.topic(c) for c in cities],
            max_poll_records=500,
            max_poll_interval_ms=settings.delivery.max_poll_interval_ms,
            session_timeout_ms=10_000,
            on_assigned=self._on_assigned,
            on_revoked=self._on_revoked,
        )
        self._positions: dict[TopicPartition, int] = {}
        self._next_position_scan = 0.0
        self._lag: dict[str, int] = {}
        observer.watch_lag(self.flow.name, lambda: dict(self._lag))
        if self.flow.city_gauges:
            observer.watch_oldest(
                lambda: {c: lane.oldest_age_s() for c, lane in self.lanes.items()}
            )

    def _http_transport(self, city: str, connector: Connector) -> Transport:
        """The city's bounded HTTP client under its connector's transport policy."""
        return HttpTransport(
            city,
            self.settings.city(city),
            self.settings.delivery.endpoint_allowlist,
            connector.transport,
        )

    def _topic_limits(self, names: list[str]) -> dict[str, int]:
        """The topics' own ``max.message.bytes`` where they set one (best effort)."""
        try:
            with Admin(self.settings.kafka) as admin:
                infos = admin.describe_topics(names)
        except GreenChannelError as exc:
            log.warning("cannot read the output topics' max.message.bytes (%s); using config", exc)
            return {}
        limits = {i.name: i.configs.get("max.message.bytes", "") for i in infos}
        return {name: int(v) for name, v in limits.items() if v.isdigit()}

    def _record_limit(self, topic: str) -> int:
        return min(self.settings.delivery.max_record_bytes, self.record_limits.get(topic, 1 << 62))

    def _lane(self, city: str, connector: Connector, transport: Transport, codec: Codec) -> Lane:
        cs = self.settings.city(city)
        creds = Credentials(
            cs.credentials.client_id, cs.credentials.resolved_secret(), cs.credentials.extra
        )
        delivery = CityDelivery(
            city,
            cs,
            connector,
            transport,
            self.observer,
            clock=self.clock,
            stop=self.stop_event,
            credentials=creds,
        )
        self.deliveries[city] = delivery
        outcomes = Outcomes(
            city,
            delivery.deliver,
            codec,
            self.producer,
            self.flow,
            self.observer,
            clock=self.clock,
            stop=self.stop_event,
            max_record_bytes=self._record_limit,
            writes=self.writes,
        )
        return Lane(
            city,
            cs.concurrency,
            outcomes.start,
            self.completions,
            is_current=self._is_current,
            stop=self.stop_event,
            clock=self.clock,
            liveness=self.liveness,
            workers_name=self.workers_name,
            pool=self.workers,
            pacer=delivery,
        )

    # -- rebalance (runs inside poll) --------------------------------------------------------
    def _on_assigned(self, tps: list[TopicPartition]) -> None:
        # A partition's generation changes only when it is revoked: kafka-python may report a
        # partition we keep as "assigned" again, and its queued records must still be delivered.
        for tp in tps:
            self._generation.setdefault(tp, 0)
        self.ready.set()

    def _on_revoked(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self._generation[tp] = self._generation.get(tp, 0) + 1
        self.tracker.forget(tps)

    def _is_current(self, tp: TopicPartition, generation: int) -> bool:
        return self._generation.get(tp) == generation

    # -- loop ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event, drain_timeout_s: float = 20.0) -> None:
        self.liveness.register(self.loop_name, self.settings.router.watchdog_s * 2)
        self.liveness.register(self.commit_name, self.settings.delivery.stuck_after_s)
        self.liveness.register(self.workers_name, math.inf)
        self.workers.start()
        for lane in self.lanes.values():
            lane.start()
        try:
            while not stop.is_set() and not self.stop_event.is_set():
                self.step()
        finally:
            self.shutdown(drain_timeout_s)
        if self.fatal is not None:
            raise self.fatal

    def _on_fatal(self, exc: FatalError) -> None:
        """A worker met a failure no retry can cure: stop everything (called on its thread)."""
        with self._fatal_lock:
            if self.fatal is None:
                self.fatal = exc
        self.stop_event.set()

    def step(self) -> None:
        """One iteration of the poll loop."""
        self.watchdog.beat(self.flow.name)
        self.liveness.beat(self.loop_name)
        self._commit_finished()
        self._check_progress()
        self._pause_or_resume()
        records = self.consumer.poll(self.settings.delivery.poll_timeout_ms)
        for record in records:
            self._dispatch(record)
        self._track_positions(records)

    def _check_progress(self) -> None:
        dead = [name for lane in self.lanes.values() for name in lane.dead_workers()]
        dead += self.workers.dead_workers()
        if dead:
            self.liveness.fail(self.workers_name, f"worker thread(s) gone: {', '.join(dead)}")
        else:
            self.liveness.beat(self.workers_name)
        now = self.clock()
        held: dict[TopicPartition, tuple[int, float]] = {}
        for tp, part in self.tracker.partitions.items():
            head = part.held_by()
            city = self.flow.city_of(tp.topic)
            if head is None or not self.deliveries[city].available():
                continue
            since = self._held.get(tp, (head, now))
            held[tp] = since if since[0] == head else (head, now)
        self._held = held
        limit = self.settings.delivery.stuck_after_s
        stuck = sorted(
            f"{tp.topic}:{tp.partition}" for tp, (_, t) in held.items() if now - t > limit
        )
        if not stuck:
            self.liveness.beat(self.commit_name)
        elif not self._reported_stuck:
            log.error(
                "commit point held for over %gs by one unfinished record: %s",
                limit,
                ", ".join(stuck),
            )
        self._reported_stuck = bool(stuck)

    def _track_positions(self, records: list[Record]) -> None:
        """Feed the consumer's positions to the commit points and the lag metric.

        Positions of the partitions that returned records, after every poll; of every assigned
        partition at most once a second, so a commit marker or an aborted batch fetched on its
        own (no records returned) is committed past too.
        """
        assigned = self.consumer.assignment()
        tps = assigned.intersection(offset_ranges(records)[1])
        now = time.monotonic()
        if now >= self._next_position_scan:
            self._next_position_scan = now + 1.0
            tps |= assigned - self.consumer.paused()
        positions = self.consumer.positions_of(tps)
        for tp, offset in positions.items():
            self.tracker.position(tp, offset)
        self._lag = self.consumer.lag_by_topic(self._positions, positions)

    def _dispatch(self, record: Record) -> None:
        city = self.flow.city_of(record.topic)
        self.tracker.add(record.tp, record.offset)
        self.lanes[city].submit(Job(record, self._generation.get(record.tp, 0)))

    def _commit_finished(self) -> None:
        while True:
            try:
                done = self.completions.get_nowait()
            except queue.Empty:
                break
            if self._is_current(done.tp, done.generation):
                self.tracker.done(done.tp, done.offset)
        offsets = self.tracker.to_commit()
        if offsets:
            try:
                with self.watchdog.guard("commit"):
                    self.consumer.commit(offsets)
            except TransientError as exc:  # rebalance or broker trouble: retry after next poll
                if not self._commit_deferred:
                    log.warning("commit deferred until it succeeds: %s", exc)
                self._commit_deferred = True
                return
            self.tracker.committed(offsets)
            if self._commit_deferred:
                log.info("commits resumed")
                self._commit_deferred = False

    def _pause_or_resume(self) -> None:
        assigned = self.consumer.assignment()
        paused = self.consumer.paused()
        limit = self.settings.delivery.max_in_flight_per_city
        by_topic: dict[str, list[TopicPartition]] = {}
        for tp in assigned:
            by_topic.setdefault(tp.topic, []).append(tp)
        for city, lane in self.lanes.items():
            tps = by_topic.get(self.flow.topic(city), [])
            delivery = self.deliveries[city]
            hold = not delivery.available() or lane.queued >= limit
            if hold:
                to_pause = [tp for tp in tps if tp not in paused]
                if to_pause:
                    self.consumer.pause(to_pause)
            else:
                to_resume = [tp for tp in tps if tp in paused]
                if to_resume:
                    self.consumer.resume(to_resume)
            if hold != (city in self._paused_cities):
                self._paused_cities.symmetric_difference_update({city})
                if self.flow.city_gauges:
                    self.observer.on_paused(city, hold)
                log.info(
                    "%s: %s %s (breaker %s, %d in flight)",
                    city,
                    self.flow.name,
                    "paused" if hold else "resumed",
                    delivery.breaker.state,
                    lane.queued,
                )

    def shutdown(self, timeout_s: float) -> None:
        """Stop fetching, let workers finish their current attempt, commit what is final, close."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        for lane in self.lanes.values():
            lane.request_stop()
        stuck = [
            city
            for city, lane in self.lanes.items()
            if not lane.join(max(0.0, deadline - time.monotonic()))
        ]
        self.workers.request_stop()
        self.workers.join(max(0.0, deadline - time.monotonic()))
        if stuck:
            self.drained = False
            log.error(
                "drain: deliveries to %s still in flight after %.1fs; handing them back",
                ", ".join(stuck),
                timeout_s,
            )
        try:  # the writes still in flight: their acknowledgements complete their records
            self.producer.flush(max(1.0, deadline - time.monotonic()))
        except GreenChannelError as exc:
            log.warning("final flush failed: %s", exc)
        try:
            self._commit_finished()
        except GreenChannelError as exc:
            log.warning("final commit failed: %s", exc)
        for delivery in self.deliveries.values():
            delivery.transport.close()
        self.consumer.close()
        self.producer.close()
