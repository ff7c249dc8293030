"""The router: consume complaints, classify, publish to the pyramid — transactionally.

One loop iteration = one Kafka transaction::

    poll a batch -> for each record: decode, validate, classify -> outputs (or a dead letter)
    -> begin -> send outputs -> send_offsets_to_transaction -> commit

so every complaint appears in its destination topic(s) exactly once for ``read_committed``
readers, also across crashes (a new incarnation with the same transactional id aborts the
unfinished transaction of the old one). Department records carry the *original* bytes (no
re-encoding) plus routing headers; only escalations are encoded. The blocking transaction calls
run under the watchdog.

Errors follow :mod:`gateway.errors` (the per-stage table is ``docs/errors.md``):

* record-level: a record that cannot be decoded, is invalid (timestamps outside plausible
  bounds included), whose output the broker would refuse (larger than the topic's effective
  ``max.message.bytes``, :mod:`gateway.routing.limits`) or whose routing raised anything
  unexpected (``internal_error``) becomes a dead letter *before* the transaction; a dead letter
  that would itself be too large is bounded (:func:`gateway.deadletters.headers.bounded_dead_letter`).
  If the broker still refuses a record of a transaction (``BrokerRejected``), the batch is
  aborted and bisected: halves are committed as their own transactions until the refused record
  is alone, and it is dead-lettered (bounded on a second refusal).
* stage-transient (broker, registry): abort, rewind the consumer to the batch's first offsets,
  wait with capped exponential backoff (``/readyz`` false, ``greenchannel_router_stalled``), try
  again; the batch is never held in memory twice.
* fatal (fencing, authorisation, a broken invariant): never retried; the loop ends and the
  process exits with code 1.

Liveness (:class:`gateway.ops.liveness.Liveness`, component ``router``) comes from progress: a
committed transaction or an idle poll. The same batch aborted ``router.max_batch_aborts`` times
in a row reports the router unhealthy.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from gateway.avro.codec import Codec, validate_complaint
from gateway.cities import city_key
from gateway.config import Settings
from gateway.deadletters.headers import bounded_dead_letter, dead_letter_headers
from gateway.errors import (
    FatalError,
    GreenChannelError,
    ImplausibleTimestamp,
    RecordError,
    RecordTooLarge,
    TransientError,
    UnknownCity,
)
from gateway.kafka.admin import Admin
from gateway.kafka.clients import Consumer, Headers, Producer, Record, TopicPartition, offset_ranges
from gateway.ops.liveness import Liveness
from gateway.ops.observer import Observer
from gateway.ops.watchdog import Watchdog
from gateway.pii import known_values
from gateway.routing.escalation import build_escalation
from gateway.routing.limits import TopicLimits, header_bound, wire_size
from gateway.routing.rules import Classifier, Decision
from gateway.topics import Department, Topics

log = logging.getLogger(__name__)

DEAD_LETTER_PREFIX_BYTES = 64 * 1024
"""How much of the value a bounded dead letter keeps (less if the topic's limit demands)."""
MINIMAL_PREFIX_BYTES = 1024
"""The prefix of a dead letter the broker refused once already."""
_DEFAULT_MAX_REQUEST = 4 * 1024 * 1024


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


_new = tuple.__new__


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
        rs = settings.router
        self.green = frozenset(rs.green_cities)
        self.working_days = rs.handling_days
        self.classifier = classifier
        self.codec = codec
        self.clock_ms = clock_ms
        self.ts_min = rs.timestamp_min_ms
        self._ts_ahead = int(rs.timestamp_max_ahead_s * 1000)
        self._ts_max = 0  # clock + ahead, re-read only when a timestamp is beyond it
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
        # the same, by the identity of the classifier's own Decision objects (classify returns
        # them): one dict lookup per record instead of hashing a dataclass, major precomputed
        self._by_identity = {id(d): (*self._targets[d], d.major) for d in classifier.decisions}
        self.limits = TopicLimits(self.output_topics(), None, max_request_size=_DEFAULT_MAX_REQUEST)
        """Size limits of the output topics; the :class:`Router` replaces it with live ones."""

    def output_topics(self) -> list[str]:
        """Every topic :meth:`route` can send to."""
        return [
            *(topic for topic, _ in self._targets.values()),
            *(self.topics.escalations(city) for city in sorted(self.green)),
            self.topics.dlq_complaints,
        ]

    def route(self, record: Record) -> Routed:
        """Outputs for one record, or its dead letter. Raises only ``TransientError`` (e.g. the
        registry is down: the record is not at fault) and ``FatalError``."""
        complaint: dict[str, Any] | None = None
        try:
            value = record.value
            if not value:
                raise RecordError("record has no value (empty or tombstone)", reason="empty")
            complaint = self.codec.decode_as("complaint", value)
            routed = self._route(record, value, complaint)
        except RecordError as exc:
            # the record's own personal values are masked wherever the message quotes them
            return self._dead_letter(record, exc, exc.reason, _known(complaint))
        except GreenChannelError:
            raise
        except Exception as exc:  # a bug or an input nobody foresaw costs this record only
            return self._dead_letter(record, exc, "internal_error", _known(complaint))
        # The exact size check only for records near the smallest limit: one addition and one
        # comparison per record otherwise.
        size = len(value)
        if record.key is not None:
            size += len(record.key)
        if record.headers:
            size += header_bound(record.headers)
        if size >= self.limits.fast_below:
            return self._fit(record, routed, _known(complaint))
        return routed

    def rejected(self, record: Record, error: GreenChannelError, *, minimal: bool) -> Routed:
        """The dead letter of a record the broker refused in a transaction (``minimal``: it
        refused its dead letter once already, keep only a short prefix)."""
        return self._dead_letter(record, error, error.reason, minimal=minimal)

    def _route(self, record: Record, value: bytes, complaint: dict[str, Any]) -> Routed:
        validate_complaint(complaint)
        received = complaint["received_at"]
        if not self.ts_min <= received <= self._ts_max:
            self._check_timestamp("received_at", received)
        order = complaint["order"]
        if order is not None:
            paid = order["paid_at"]
            if paid is not None and not self.ts_min <= paid <= self._ts_max:
                self._check_timestamp("order.paid_at", paid)
        city = city_key(complaint["city_code"])
        if city is None:  # validate_complaint knows the city codes: kept as a guard
            raise UnknownCity("city_code is not a known city")
        decision = self.classifier.classify(complaint)
        key = complaint["complaint_id"].encode()
        target = self._by_identity.get(id(decision))
        if target is None:  # a Decision the classifier did not list (kept as a guard)
            target = (*self._targets[decision], decision.major)
        topic, rule_header, major = target
        headers = (*record.headers, *rule_header) if record.headers else rule_header
        if not major:
            # tuple.__new__: a C call, where Routed(...) and Output(...) each run a Python-level
            # __new__ (0.5 us of the ~40 a record costs)
            return _new(Routed, ([_new(Output, (topic, key, value, headers))], decision, None))
        # major: say what happens next (escalated to the green-channel bureau, or manual)
        green = city in self.green
        handling = b"escalated" if green else b"manual"
        headers = (*headers, ("gc-handling", handling), ("gc-city", city.encode()))
        outputs = [Output(topic, key, value, headers)]
        if green:
            outputs.append(self._escalation(complaint, city, decision, key))
        return Routed(outputs, decision)

    def _check_timestamp(self, name: str, value: int) -> None:
        """Raise for a timestamp outside the plausible bounds (the upper bound, clock + ahead,
        is cached and re-read from the clock only when a timestamp is beyond it)."""
        if value < self.ts_min:
            raise ImplausibleTimestamp(
                f"complaint {name} {value} is before the plausible minimum {self.ts_min}"
            )
        self._ts_max = self.clock_ms() + self._ts_ahead
        if value > self._ts_max:
            raise ImplausibleTimestamp(
                f"complaint {name} {value} is more than {self._ts_ahead // 1000}s ahead of "
                "the router's clock"
            )

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

    def _fit(self, record: Record, routed: Routed, known: Sequence[str]) -> Routed:
        """``routed``, or a dead letter if one of its outputs is larger than its topic takes."""
        for out in routed.outputs:
            size = wire_size(out.key, out.value, out.headers)
            limit = self.limits.limit(out.topic)
            if size > limit:
                error = RecordTooLarge(
                    f"the output to {out.topic} would be {size} bytes; the topic takes at most "
                    f"{limit} (max.message.bytes)"
                )
                return self._dead_letter(record, error, error.reason, known)
        return routed

    def _dead_letter(
        self,
        record: Record,
        error: BaseException,
        reason: str,
        known: Sequence[str] = (),
        *,
        minimal: bool = False,
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
        value = record.value
        key = record.key
        topic = self.topics.dlq_complaints
        limit = self.limits.limit(topic)
        if minimal or wire_size(key, value, headers) > limit:
            key, _, bounded = bounded_dead_letter(key, value or b"", headers, max_value_bytes=0)
            room = limit - wire_size(key, b"", bounded) - 1024
            cap = MINIMAL_PREFIX_BYTES if minimal else DEAD_LETTER_PREFIX_BYTES
            value, headers = (value or b"")[: max(0, min(cap, room))], bounded
        return Routed([Output(topic, key, value, headers)], None, reason)


def _known(complaint: Mapping[str, Any] | None) -> list[str]:
    """The record's own personal values, for the masker (none when it did not decode)."""
    try:
        return known_values(complaint) if complaint is not None else []
    except Exception:  # a decoded record of an unforeseen shape: the patterns still apply
        return []


def fetch_bytes_for(max_batch: int) -> int:
    """The consumer's fetch size for batches of up to ``max_batch`` complaints.

    A poll returns what the completed fetches hold, so 400 bytes per record still fills most
    of a batch (two fetches often complete per poll) while bounding memory: the consumer
    holds the fetch being read and the next one, and each record is copied into the
    producer's batches. Measured with 10,000-record batches: 1,280 bytes per record peaked at
    ~165-185 MiB RSS, 800 at ~140 MiB; with 8,000-record batches (bench.route, one run each,
    allocator tuned): 800 bytes 106 / 110 MiB (380 B / 1 KB complaints), 400 bytes 95 / 100 MiB
    at the same throughput (20,711 / 14,507 msg/s against 13,081 / 14,653).
    """
    return min(64 << 20, max(1 << 20, max_batch * 400))


class Backoff:
    """Capped exponential backoff (no jitter: one router per partition set waits alone)."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next = initial_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self.max_s, delay * 2)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


def _admin_limits(settings: Settings) -> Callable[[list[str]], Mapping[str, int]]:
    def fetch(topics: list[str]) -> Mapping[str, int]:
        with Admin(settings.kafka) as admin:
            return admin.max_message_bytes(topics)

    return fetch


class Router:
    """The transactional consume-classify-produce loop (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        record_router: RecordRouter,
        observer: Observer,
        watchdog: Watchdog,
        *,
        instance_id: str = "0",
        clock: Callable[[], float] = time.time,
        liveness: Liveness | None = None,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        limits_fetch: Callable[[list[str]], Mapping[str, int]] | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.settings = settings
        self.rr = record_router
        self.observer = observer
        self.watchdog = watchdog
        self.clock = clock
        self.liveness = liveness if liveness is not None else Liveness()
        rs = settings.router
        self.consumer = consumer or Consumer(
            settings.kafka,
            group_id=rs.group_id,
            topics=[record_router.topics.complaints],
            max_poll_records=rs.max_batch,
            session_timeout_ms=rs.session_timeout_ms,
            heartbeat_interval_ms=rs.heartbeat_interval_ms,
            instance_id=f"{rs.group_id}-{instance_id}" if rs.static_membership else None,
            on_assigned=self._on_assigned,
            on_revoked=self._on_revoked,
            # kafka-python buffers up to 50 MiB of fetched data by default
            fetch_max_bytes=fetch_bytes_for(rs.max_batch),
            max_partition_fetch_bytes=1024 * 1024,
        )
        self.producer = producer or Producer(
            settings.kafka,
            transactional_id=f"{rs.transactional_id_prefix}-{instance_id}",
            transaction_timeout_ms=rs.transaction_timeout_ms,
            linger_ms=rs.linger_ms,
        )
        record_router.limits = TopicLimits(
            record_router.output_topics(),
            limits_fetch if limits_fetch is not None else _admin_limits(settings),
            max_request_size=self.producer.max_request_size,
            refresh_s=rs.topic_limits_refresh_s,
        )
        self._lag: dict[str, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._next_skip_check = 0.0
        self.ready = threading.Event()
        """Set once partitions are assigned; :meth:`is_ready` also needs no stall."""
        self.stalled: str | None = None
        """The reason of the stage-transient failure the router is waiting out, if any."""
        self._stop = threading.Event()
        self._own_sleep = sleep is None
        self._sleep = sleep if sleep is not None else self._stop.wait
        self._backoff = Backoff(rs.backoff_initial_s, rs.backoff_max_s)
        self._abort_key: frozenset[tuple[TopicPartition, int]] | None = None
        self.aborts_in_a_row = 0
        observer.watch_lag("router", lambda: dict(self._lag))

    def is_ready(self) -> bool:
        return self.ready.is_set() and self.stalled is None

    def _on_assigned(self, tps: list[TopicPartition]) -> None:
        log.info("router: partitions assigned", extra={"partitions": [f"{t}:{p}" for t, p in tps]})
        self.ready.set()

    def _on_revoked(self, tps: list[TopicPartition]) -> None:
        log.info("router: partitions revoked", extra={"partitions": [f"{t}:{p}" for t, p in tps]})

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        if self._own_sleep:
            self._sleep = stop.wait  # a stop ends a backoff wait at once
        self.liveness.register(
            "router", self.settings.router.liveness_stale_s, thread=threading.current_thread()
        )
        with self.watchdog.guard("init_transactions"):
            self.producer.init_transactions()
        with self.watchdog.guard("load_metadata"):
            self.producer.load_metadata(self.rr.output_topics())
        self.rr.limits.refresh(force=True)
        try:
            while not stop.is_set():
                self.step()
        finally:
            if stop.is_set():
                self.liveness.unregister("router")
            self.consumer.close()
            self.producer.close()

    def step(self) -> None:
        """One loop iteration: poll, then route and commit what came (or wait out an outage)."""
        self.watchdog.beat("router")
        self.rr.limits.refresh()
        try:
            records = self.consumer.poll(self.settings.router.poll_timeout_ms)
        except TransientError as exc:
            self._wait(exc)
            return
        if records:
            self.process(records)
        else:
            self._commit_skipped()
            self._progress()

    def process(self, records: list[Record]) -> None:
        started = self.clock()
        route = self.rr.route
        # Route everything first, then send in one burst: the sends of a transaction then form
        # one batch per partition (interleaving routing and sending split them: ~25 % more CPU).
        try:
            routed = [route(r) for r in records]
        except TransientError as exc:  # e.g. the schema registry is down: no record is at fault
            self._rewind(records)
            self._wait(exc)
            return
        self._commit(records, routed, started)

    def _commit(self, records: list[Record], routed: list[Routed], started: float) -> None:
        """Commit the batch in one transaction; bisect it if the broker refuses a record of it.

        After a refusal (the limits are re-read first) ranges are committed left to right (per
        partition, offsets stay in order); a refused single record is dead-lettered, bounded on
        a second refusal; a third is fatal (the dead-letter topic itself is broken). A transient
        failure rewinds to the first range not committed and waits; only an abort of the whole
        batch counts towards ``router.max_batch_aborts``."""
        refusals: dict[int, int] | None = None  # per record index, once bisecting
        pending = [(0, len(records))]
        while pending:
            lo, hi = pending.pop()
            if refusals is not None:  # the whole batch's transaction counts from routing it
                started = self.clock()
            part = records[lo:hi]
            try:
                # a range ending the batch holds the last polled record of each of its partitions
                next_offsets = self._transaction(
                    part, routed[lo:hi], at_position=hi == len(records)
                )
            except RecordError as exc:
                self._aborted(exc, hi - lo, started)
                if refusals is None:
                    self.rr.limits.refresh(force=True)  # the limits may have changed
                    self.observer.on_router_bisected()
                    refusals = {}
                if hi - lo > 1:
                    mid = (lo + hi) // 2
                    pending += [(mid, hi), (lo, mid)]
                    continue
                n = refusals[lo] = refusals.get(lo, 0) + 1
                if n > 2:
                    r = records[lo]
                    raise FatalError(
                        f"the broker refuses even a bounded dead letter of {r.topic}:"
                        f"{r.partition}:{r.offset} ({exc}): check {self.rr.topics.dlq_complaints}"
                    ) from exc
                routed[lo] = self.rr.rejected(records[lo], exc, minimal=n > 1)
                pending.append((lo, hi))
                continue
            except TransientError as exc:
                self._aborted(exc, hi - lo, started)
                self._rewind(records[lo:])
                if refusals is None:
                    self._count_abort(records)
                self._wait(exc)
                return
            except FatalError:
                self._abort_quietly()
                raise
            self._committed(part, routed[lo:hi], started, next_offsets)
        self._progress()

    def _transaction(
        self, records: list[Record], routed: list[Routed], *, at_position: bool
    ) -> dict[TopicPartition, int]:
        """One transaction: the outputs of ``records`` and their offsets.

        ``at_position``: ``records`` end with the last record polled of each of their partitions,
        so the consumer's position is committed rather than last + 1 — on a transactional input
        topic it is past the commit marker (else the marker stays as lag 1 in every lag monitor).
        """
        _, next_offsets = offset_ranges(records)
        if at_position:
            position = self.consumer.position
            next_offsets = {tp: max(o, position(tp)) for tp, o in next_offsets.items()}
        # The whole transaction runs under one deadline: begin, sends (which can block on
        # metadata), send_offsets_to_transaction and commit_transaction.
        with self.watchdog.guard("transaction"):
            self.producer.begin()
            self.producer.send_all([o for result in routed for o in result.outputs])
            self.producer.send_offsets(next_offsets, self.consumer.group_metadata())
            self.producer.commit()
        return next_offsets

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

    def _aborted(self, exc: GreenChannelError, n: int, started: float) -> None:
        log.warning("router: transaction failed (%s), aborting: %s", exc.reason, exc)
        with self.watchdog.guard("abort_transaction"):
            self.producer.abort()  # a failed abort is fatal
        self.observer.on_transaction(self.clock() - started, n, committed=False)

    def _abort_quietly(self) -> None:
        with contextlib.suppress(GreenChannelError), self.watchdog.guard("abort_transaction"):
            self.producer.abort()

    def _rewind(self, records: list[Record]) -> None:
        first_offsets, _ = offset_ranges(records)
        for tp, offset in first_offsets.items():
            self.consumer.seek(tp, offset)

    def _count_abort(self, records: list[Record]) -> None:
        first_offsets, _ = offset_ranges(records)
        key = frozenset(first_offsets.items())
        self.aborts_in_a_row = self.aborts_in_a_row + 1 if key == self._abort_key else 1
        self._abort_key = key
        limit = self.settings.router.max_batch_aborts
        if self.aborts_in_a_row >= limit:
            self.liveness.fail("router", f"the same batch was aborted {self.aborts_in_a_row} times")

    def _wait(self, exc: GreenChannelError) -> None:
        """Wait out a stage-transient failure: not ready, a metric, capped backoff."""
        if self.stalled != exc.reason:
            if self.stalled is not None:
                self.observer.on_router_stalled(self.stalled, False)
            self.stalled = exc.reason
            self.observer.on_router_stalled(exc.reason, True)
        delay = self._backoff.next()
        log.warning("router: %s; waiting %.1fs: %s", exc.reason, delay, exc)
        if self.aborts_in_a_row < self.settings.router.max_batch_aborts:
            self.liveness.beat("router")  # waiting on purpose is alive; restarting won't help
        self._sleep(delay)

    def _progress(self) -> None:
        self.liveness.beat("router")
        self._backoff.reset()
        self.aborts_in_a_row = 0
        self._abort_key = None
        if self.stalled is not None:
            log.info("router: %s is over, routing again", self.stalled)
            self.observer.on_router_stalled(self.stalled, False)
            self.stalled = None

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
