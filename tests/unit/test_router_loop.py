"""RecordRouter and the Router loop with fake Kafka clients, a fake clock and a fake sleep.

The real-broker side of the same failures is ``tests/hostile/test_router*.py``; here every
branch of the error model (docs/errors.md, router rows) is driven exactly: record-level dead
letters before the transaction, bisection of a refused batch, capped backoff for transient
failures with readiness and the stalled metric, fatal errors that end the loop, liveness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.avro.codec import Codec
from gateway.config import Settings, load_settings
from gateway.deadletters.headers import headers_dict
from gateway.dev.samples import SampleFactory
from gateway.errors import (
    BrokerRejected,
    FatalError,
    KafkaUnavailable,
    TransientError,
)
from gateway.kafka.clients import Record, TopicPartition
from gateway.ops.liveness import Liveness
from gateway.ops.metrics import Metrics
from gateway.ops.watchdog import Watchdog
from gateway.routing.limits import wire_size
from gateway.routing.router import Output, RecordRouter, Router
from gateway.routing.rules import load_rules
from gateway.topics import Topics

pytestmark = pytest.mark.unit

NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
INPUT = "u.complaints.v1"


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW_MS / 1000

    def __call__(self) -> float:
        return self.now


class FakeConsumer:
    def __init__(self, batches: Sequence[list[Record] | Exception] = ()) -> None:
        self.batches = list(batches)
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.positions: dict[TopicPartition, int] = {}
        self.closed = False

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        if not self.batches:
            return []
        item = self.batches.pop(0)
        if isinstance(item, Exception):
            raise item
        for r in item:  # like the real consumer: the next offset it would return
            self.positions[r.tp] = r.offset + 1
        return item

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    def position(self, tp: TopicPartition) -> int:
        return self.positions.get(tp, 0)

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def group_metadata(self) -> object:
        return "group-metadata"

    def lag_by_topic(self, positions: Any, next_offsets: Any) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Records transactions; ``failure(outputs)`` decides whether a commit fails and how."""

    max_request_size = 4 * 1024 * 1024
    fast_path = True

    def __init__(self, failure: Callable[[list[Output]], Exception | None] | None = None) -> None:
        self.failure = failure or (lambda outputs: None)
        self.committed: list[tuple[list[Output], dict[TopicPartition, int]]] = []
        self.begun = self.aborted = 0
        self._open: list[Output] = []
        self._offsets: dict[TopicPartition, int] = {}

    def init_transactions(self) -> None: ...
    def load_metadata(self, topics: Any) -> None: ...
    def close(self) -> None: ...

    def begin(self) -> None:
        self.begun += 1
        self._open, self._offsets = [], {}

    def send_all(self, records: Any) -> None:
        self._open.extend(Output(*r) for r in records)

    def send_offsets(self, offsets: dict[TopicPartition, int], group_metadata: object) -> None:
        self._offsets = dict(offsets)

    def commit(self) -> None:
        error = self.failure(self._open)
        if error is not None:
            raise error
        self.committed.append((self._open, self._offsets))

    def abort(self) -> None:
        self.aborted += 1

    def outputs(self) -> list[Output]:
        return [o for outs, _ in self.committed for o in outs]


@pytest.fixture
def settings() -> Settings:
    return load_settings(None, topics={"prefix": "u."})


@pytest.fixture
def codec(settings: Settings) -> Codec:
    return Codec(settings.codec)


def make_rr(settings: Settings, codec: Codec, clock: FakeClock | None = None) -> RecordRouter:
    clock = clock or FakeClock()
    return RecordRouter(settings, load_rules(), codec, lambda: int(clock() * 1000))


def complaints(codec: Codec, n: int, **changes: Any) -> Iterator[bytes]:
    for sample in SampleFactory(seed=3, start_ms=NOW_MS - 86_400_000).complaints(n):
        yield codec.encode("complaint", sample.record | changes)


def records(
    values: Sequence[bytes], *, partition: int = 0, start: int = 0, headers: Any = ()
) -> list[Record]:
    return [
        Record(INPUT, partition, start + i, f"k{start + i}".encode(), v, headers, NOW_MS)
        for i, v in enumerate(values)
    ]


class Harness:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        *,
        batches: Sequence[list[Record] | Exception] = (),
        failure: Callable[[list[Output]], Exception | None] | None = None,
        limits: dict[str, int] | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.sleeps: list[float] = []
        self.registry = CollectorRegistry()
        self.consumer = FakeConsumer(batches)
        self.producer = FakeProducer(failure)
        self.liveness = Liveness(clock=self.clock)
        self.limit_reads = 0
        self.limits = limits or {}

        def fetch(topics: list[str]) -> dict[str, int]:
            self.limit_reads += 1
            return {t: self.limits.get(t, 1_048_588) for t in topics}

        self.rr = make_rr(settings, codec, self.clock)
        self.router = Router(
            settings,
            self.rr,
            Metrics(self.registry),
            Watchdog(30),
            clock=self.clock,
            liveness=self.liveness,
            consumer=self.consumer,  # type: ignore[arg-type]
            producer=self.producer,  # type: ignore[arg-type]
            limits_fetch=fetch,
            sleep=self.sleep,
        )
        self.liveness.register("router", settings.router.liveness_stale_s)
        self.router.ready.set()
        self.rr.limits.refresh(force=True)
        self.t = Topics(settings.topics.prefix)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.now += seconds

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


# --- record-level: dead letters before the transaction -----------------------------------------


def test_an_output_larger_than_its_topic_takes_is_dead_lettered_not_sent(
    settings: Settings, codec: Codec
) -> None:
    t = Topics(settings.topics.prefix)
    h = Harness(settings, codec)
    for topic in h.rr.output_topics():
        if topic != t.dlq_complaints:
            h.limits[topic] = 20_000
    h.rr.limits.refresh(force=True)
    good = list(complaints(codec, 2))
    batch = records(good) + records(good[:1], start=2, headers=(("trace", b"x" * 30_000),))
    h.router.process(batch)
    [(outs, offsets)] = h.producer.committed
    dead = [o for o in outs if o.topic == t.dlq_complaints]
    assert len(dead) == 1
    meta = headers_dict(dead[0].headers)
    assert meta["gc-dlq-reason"] == "too_large"
    assert meta["gc-dlq-source-offset"] == "2"
    assert "20000" in meta["gc-dlq-message"]
    assert offsets == {TopicPartition(INPUT, 0): 3}
    assert h.metric("greenchannel_router_dead_letters_total", reason="too_large") == 1


def test_a_dead_letter_too_large_itself_keeps_coordinates_reason_hash_and_a_prefix(
    settings: Settings, codec: Codec
) -> None:
    rr = make_rr(settings, codec)
    value = b"\xc3\x01" + b"\xff" * 1_048_490  # the ~1 MB undecodable value of issue 9
    record = Record(INPUT, 4, 77, b"key", value, (("big", b"h" * 100_000),), NOW_MS)
    routed = rr.route(record)
    [out] = routed.outputs
    assert out.topic == rr.topics.dlq_complaints
    assert wire_size(out.key, out.value, out.headers) <= rr.limits.limit(out.topic)
    meta = headers_dict(out.headers)
    assert meta["gc-dlq-truncated"] == "true"
    assert meta["gc-dlq-value-bytes"] == str(len(value))
    assert meta["gc-dlq-value-sha256"] == hashlib.sha256(value).hexdigest()
    assert meta["gc-dlq-headers-dropped"] == "1"
    assert (meta["gc-dlq-source-partition"], meta["gc-dlq-source-offset"]) == ("4", "77")
    assert meta["gc-dlq-reason"] == "oversized"
    assert "big" not in meta
    assert value.startswith(out.value) and 0 < len(out.value) <= 64 * 1024
    assert out.key == b"key"


def test_a_small_dead_letter_is_not_truncated(settings: Settings, codec: Codec) -> None:
    rr = make_rr(settings, codec)
    [out] = rr.route(Record(INPUT, 0, 1, b"k", b"junk", (("a", b"b"),), NOW_MS)).outputs
    meta = headers_dict(out.headers)
    assert "gc-dlq-truncated" not in meta
    assert out.value == b"junk" and ("a", b"b") in out.headers


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("received_at", 253_402_300_800_000),  # year 10000
        ("received_at", -1),
        ("received_at", 0),
        ("received_at", NOW_MS + 2 * 86_400_000),  # two days ahead of the clock
    ],
)
def test_implausible_timestamps_are_dead_lettered(
    settings: Settings, codec: Codec, field: str, value: int
) -> None:
    rr = make_rr(settings, codec)
    [body] = complaints(codec, 1, **{field: value})
    routed = rr.route(records([body])[0])
    assert routed.dead_letter_reason == "implausible_timestamp"
    meta = headers_dict(routed.outputs[0].headers)
    assert meta["gc-dlq-error-class"] == "ImplausibleTimestamp"
    assert field in meta["gc-dlq-message"]


def test_an_implausible_payment_time_is_dead_lettered(settings: Settings, codec: Codec) -> None:
    rr = make_rr(settings, codec)
    sample = next(
        s for s in SampleFactory(seed=5, start_ms=NOW_MS - 3_600_000).complaints(50) if s.major
    )
    record = sample.record | {"order": dict(sample.record["order"], paid_at=-5)}
    routed = rr.route(records([codec.encode("complaint", record)])[0])
    assert routed.dead_letter_reason == "implausible_timestamp"


def test_plausible_timestamps_route_and_the_clock_is_read_only_when_needed(
    settings: Settings, codec: Codec
) -> None:
    calls: list[int] = []

    def clock_ms() -> int:
        calls.append(1)
        return NOW_MS

    rr = RecordRouter(settings, load_rules(), codec, clock_ms)
    minor = [
        codec.encode("complaint", s.record)
        for s in SampleFactory(seed=9, major_share=0.0, start_ms=NOW_MS - 7_200_000).complaints(50)
    ]
    routed = [rr.route(r) for r in records(minor)]
    assert all(x.decision is not None for x in routed)
    assert len(calls) == 1  # the upper bound is cached: no clock call per record


def test_an_unexpected_exception_costs_one_record(settings: Settings, codec: Codec) -> None:
    rr = make_rr(settings, codec)

    def broken(complaint: Any) -> Any:
        raise ZeroDivisionError("rule blew up on 13800138000")

    rr.classifier.classify = broken  # type: ignore[method-assign]
    [body] = complaints(codec, 1)
    routed = rr.route(records([body])[0])
    assert routed.dead_letter_reason == "internal_error"
    meta = headers_dict(routed.outputs[0].headers)
    assert meta["gc-dlq-error-class"] == "ZeroDivisionError"
    assert "13800138000" not in meta["gc-dlq-message"]  # masked


# --- record-attributable transaction failure: bisect ---------------------------------------------


def test_a_batch_the_broker_refuses_is_bisected_and_only_the_culprit_dead_lettered(
    settings: Settings, codec: Codec
) -> None:
    poison = b"POISON"

    def refuse(outputs: list[Output]) -> Exception | None:
        if any(o.value.endswith(poison) and o.topic != "u.dlq.complaints.v1" for o in outputs):
            return BrokerRejected("commit_transaction: MessageSizeTooLargeError")
        return None

    good = list(complaints(codec, 9))
    # the poison decodes as trailing bytes? no: it is routed (the broker is what refuses it)
    h = Harness(settings, codec, failure=refuse)
    batch = records(good[:5]) + records(good[5:], partition=1, start=5)
    rr_route = h.rr.route

    def route(record: Record) -> Any:
        routed = rr_route(record)
        if record.partition == 0 and record.offset == 3:
            first = routed.outputs[0]
            outs = [first._replace(value=first.value + poison), *routed.outputs[1:]]
            return routed._replace(outputs=outs)
        return routed

    h.rr.route = route  # type: ignore[method-assign]
    h.router.process(batch)
    outs = h.producer.outputs()
    dead = [o for o in outs if o.topic == h.t.dlq_complaints]
    assert len(dead) == 1
    meta = headers_dict(dead[0].headers)
    assert (meta["gc-dlq-source-partition"], meta["gc-dlq-source-offset"]) == ("0", "3")
    assert meta["gc-dlq-reason"] == "broker_rejected"
    routed_keys = [o.key for o in outs if o.topic != h.t.dlq_complaints and "escal" not in o.topic]
    assert len(routed_keys) == len(set(routed_keys)) == 8  # every other record exactly once
    # offsets: committed in order, ending at last + 1 for both partitions
    ends: dict[TopicPartition, int] = {}
    for _, offsets in h.producer.committed:
        for tp, o in offsets.items():
            assert o > ends.get(tp, -1)
            ends[tp] = o
    assert ends == {TopicPartition(INPUT, 0): 5, TopicPartition(INPUT, 1): 9}
    assert h.metric("greenchannel_router_bisections_total") == 1
    assert h.limit_reads == 2  # re-read after the refusal
    assert h.router.stalled is None and h.sleeps == []


def test_a_refused_batch_is_halved_at_once_not_sent_whole_again(
    settings: Settings, codec: Codec
) -> None:
    """Its outputs were routed before the refusal: sending them whole again cannot succeed."""
    sizes: list[int] = []

    def refuse_k2(outputs: list[Output]) -> Exception | None:
        sizes.append(len(outputs))
        if any(
            o.key == b"k2" and headers_dict(o.headers).get("gc-dlq-reason") != "broker_rejected"
            for o in outputs
        ):
            return BrokerRejected("commit_transaction: MessageSizeTooLargeError")
        return None

    h = Harness(settings, codec, failure=refuse_k2)
    h.router.process(records([b"junk"] * 4))
    assert sizes == [4, 2, 2, 1, 1, 1]  # the batch, its halves, the refused record alone twice
    reasons = [headers_dict(o.headers)["gc-dlq-reason"] for o in h.producer.outputs()]
    assert sorted(reasons) == ["bad_magic", "bad_magic", "bad_magic", "broker_rejected"]


def test_a_refused_dead_letter_is_bounded_then_a_third_refusal_is_fatal(
    settings: Settings, codec: Codec
) -> None:
    seen: list[int] = []

    def refuse_everything_from_offset_0(outputs: list[Output]) -> Exception | None:
        if any(headers_dict(o.headers).get("gc-dlq-source-offset") == "0" for o in outputs) or any(
            o.key == b"k0" for o in outputs
        ):
            seen.append(len(outputs))
            return BrokerRejected("commit_transaction: InvalidRecordError")
        return None

    h = Harness(settings, codec, failure=refuse_everything_from_offset_0)
    with pytest.raises(FatalError, match="bounded dead letter"):
        h.router.process(records([b"junk"]))
    assert h.producer.committed == []


def test_a_refused_dead_letter_is_retried_bounded(settings: Settings, codec: Codec) -> None:
    def refuse_unbounded(outputs: list[Output]) -> Exception | None:
        for o in outputs:
            if o.topic == "u.dlq.complaints.v1" and "gc-dlq-truncated" not in headers_dict(
                o.headers
            ):
                return BrokerRejected("commit_transaction: MessageSizeTooLargeError")
        return None

    h = Harness(settings, codec, failure=refuse_unbounded)
    h.router.process(records([b"junk" * 1000]))
    [dead] = h.producer.outputs()
    meta = headers_dict(dead.headers)
    assert meta["gc-dlq-truncated"] == "true" and len(dead.value) <= 1024


# --- fatal: never retried -----------------------------------------------------------------------


def test_a_fatal_error_in_a_transaction_ends_the_loop(settings: Settings, codec: Codec) -> None:
    def fenced(outputs: list[Output]) -> Exception:
        return FatalError("commit_transaction: ProducerFencedError")

    h = Harness(settings, codec, failure=fenced)
    with pytest.raises(FatalError, match="Fenced"):
        h.router.process(records(list(complaints(codec, 3))))
    assert h.producer.begun == 1  # not retried
    assert h.sleeps == []


def test_a_fatal_error_from_poll_ends_the_loop(settings: Settings, codec: Codec) -> None:
    h = Harness(settings, codec, batches=[FatalError("poll: TopicAuthorizationFailedError")])
    with pytest.raises(FatalError):
        h.router.step()


# --- stage-transient: wait, not ready, resume by itself -----------------------------------------


def test_a_transient_commit_failure_rewinds_waits_with_capped_backoff_and_resumes(
    settings: Settings, codec: Codec
) -> None:
    failures = [KafkaUnavailable("commit_transaction: KafkaTimeoutError")] * 8

    def flaky(outputs: list[Output]) -> Exception | None:
        return failures.pop() if failures else None

    h = Harness(settings, codec, failure=flaky)
    batch = records(list(complaints(codec, 4)), start=10)
    for _ in range(8):
        h.router.process(batch)
        assert not h.router.is_ready()
        assert h.metric("greenchannel_router_stalled", reason="kafka_unavailable") == 1
    assert h.sleeps == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert set(h.consumer.seeks) == {(TopicPartition(INPUT, 0), 10)}
    assert h.producer.aborted == 8
    h.router.process(batch)
    assert h.router.is_ready()
    assert h.metric("greenchannel_router_stalled", reason="kafka_unavailable") == 0
    assert h.metric("greenchannel_router_stalls_total", reason="kafka_unavailable") == 1
    assert len(h.producer.committed) == 1
    assert h.liveness.healthy()


def test_the_same_batch_aborted_n_times_makes_liveness_fail(
    settings: Settings, codec: Codec
) -> None:
    h = Harness(settings, codec, failure=lambda outputs: KafkaUnavailable("commit: timeout"))
    batch = records(list(complaints(codec, 2)))
    limit = settings.router.max_batch_aborts
    for _ in range(limit - 1):
        h.router.process(batch)
    assert h.liveness.healthy()
    h.router.process(batch)
    assert not h.liveness.healthy()
    assert "aborted" in (h.liveness.status()["router"].reason or "")
    h.producer.failure = lambda outputs: None
    h.router.process(batch)
    assert h.liveness.healthy()


def test_a_registry_outage_while_decoding_waits_and_resumes(
    settings: Settings, codec: Codec
) -> None:
    class Registry:
        down = 3

        def schema_by_id(self, schema_id: int) -> str:
            if self.down:
                self.down -= 1
                raise TransientError("GET /schemas/ids/7: ConnectError", reason="unavailable")
            return codec_schema

        def close(self) -> None: ...

    from gateway.avro.schemas_path import schema_text

    codec_schema = schema_text("complaint")
    registry = Registry()
    confluent = Codec(settings.codec, registry=registry)  # type: ignore[arg-type]
    body = next(complaints(codec, 1))[10:]  # the Avro body of a single-object message
    framed = b"\x00" + (7).to_bytes(4, "big") + body
    h = Harness(settings, confluent)
    batch = records([framed], start=5)
    for _ in range(3):
        h.router.process(batch)
        assert h.router.stalled == "registry_unavailable" and not h.router.is_ready()
    assert h.producer.begun == 0  # nothing was sent while the registry was down
    assert h.consumer.seeks == [(TopicPartition(INPUT, 0), 5)] * 3
    h.router.process(batch)
    assert h.router.is_ready()
    [(outs, _)] = h.producer.committed
    assert outs and all(o.topic != h.t.dlq_complaints for o in outs)
    assert h.liveness.healthy()  # waiting out an outage is alive


def test_a_transient_poll_error_is_waited_out(settings: Settings, codec: Codec) -> None:
    h = Harness(
        settings,
        codec,
        batches=[KafkaUnavailable("poll: NodeNotReadyError"), records(list(complaints(codec, 1)))],
    )
    h.router.step()
    assert h.router.stalled == "kafka_unavailable" and h.sleeps == [0.2]
    h.router.step()
    assert h.router.stalled is None and len(h.producer.committed) == 1


def test_limits_are_refreshed_periodically(settings: Settings, codec: Codec) -> None:
    h = Harness(settings, codec)
    h.rr.limits._clock = h.clock  # type: ignore[assignment]
    h.rr.limits.refresh(force=True)
    reads = h.limit_reads
    h.router.step()
    assert h.limit_reads == reads
    h.clock.now += settings.router.topic_limits_refresh_s + 1
    h.router.step()
    assert h.limit_reads == reads + 1


def test_no_progress_makes_liveness_stale(settings: Settings, codec: Codec) -> None:
    h = Harness(settings, codec)
    h.router.step()  # an idle poll is progress
    assert h.liveness.healthy()
    h.clock.now += settings.router.liveness_stale_s + 1
    assert not h.liveness.healthy()


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        ("MessageSizeTooLargeError", BrokerRejected, "broker_rejected"),
        ("InvalidRecordError", BrokerRejected, "broker_rejected"),
        ("CommitFailedError", KafkaUnavailable, "rebalance"),
        ("UnknownMemberIdError", KafkaUnavailable, "rebalance"),
        ("TransactionAbortedError", KafkaUnavailable, "transaction_aborted"),
        ("NotCoordinatorError", KafkaUnavailable, "kafka_unavailable"),
        ("ProducerFencedError", FatalError, "fatal"),
        ("TransactionalIdAuthorizationFailedError", FatalError, "fatal"),
    ],
)
def test_kafka_errors_are_classified_at_the_boundary(error: str, kind: type, reason: str) -> None:
    """What the router's loop decides on: record-attributable (bisect), transient (abort, wait,
    re-read) or fatal (exit) — a rebalance under a transaction is not fatal."""
    from kafka import errors as kerrors

    from gateway.kafka.clients import _wrap

    wrapped = _wrap("commit_transaction", getattr(kerrors, error)("x"))
    assert type(wrapped) is kind
    assert wrapped.reason == reason  # type: ignore[attr-defined]
