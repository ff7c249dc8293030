"""CityDelivery, Outcomes, Lane and DeliveryEngine with fakes and a fake clock (no broker).

The real tier (a broker, the simulator, a hostile bureau) is ``tests/integration`` and
``tests/hostile``; these pin the loops' decisions one at a time, in milliseconds.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.delivery.city import Attempts, CityDelivery, Nonces, Result
from gateway.delivery.engine import DeliveryEngine
from gateway.delivery.flow import escalations
from gateway.delivery.lane import Completion, Job, Lane
from gateway.delivery.outcomes import Outcomes
from gateway.errors import (
    BureauUnavailable,
    ConfigError,
    FatalError,
    IrregularAnswer,
    RecordError,
)
from gateway.kafka.clients import Record, TopicPartition
from gateway.ops.watchdog import Watchdog
from gateway.policies.breaker import OPEN
from gateway.policies.ratelimit import TokenBucket
from gateway.policies.retry import Hold
from gateway.sdk import Accepted, Credentials, Escalation, Irregular, Rejected, RetryLater
from tests.unit.delivery_fakes import (
    CODEC,
    TOPICS,
    Clock,
    FakeConnector,
    FakeConsumer,
    FakeLiveness,
    FakeObserver,
    FakeProducer,
    FakeTransport,
    escalation_record,
    unit_settings,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]
YEAR_10000_MS = 253_402_300_800_000 + 86_400_000

# the escalation flow's liveness names, as /healthz reports them
LOOP, COMMIT, WORKERS = "deliver-loop", "deliver-commit", "deliver-workers"


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def city_delivery(
    connector: FakeConnector,
    transport: FakeTransport | None = None,
    *,
    clock: Clock | None = None,
    stop: threading.Event | None = None,
    observer: FakeObserver | None = None,
    **city: Any,
) -> CityDelivery:
    settings = unit_settings(**city).city("wuhu")
    return CityDelivery(
        "wuhu",
        settings,
        connector,
        transport or FakeTransport(),
        observer or FakeObserver(),
        clock=clock or Clock(),
        stop=stop or threading.Event(),
        credentials=Credentials("id", "secret"),
    )


def an_escalation(**fields: Any) -> Escalation:
    from gateway.delivery.convert import to_escalation

    _, esc = escalation_record(**fields)
    return to_escalation(esc)


# -- CityDelivery ------------------------------------------------------------------------------


def test_accepted_at_once_with_the_escalation_id_as_idempotency_key() -> None:
    connector = FakeConnector([Accepted("WH-1")])
    transport = FakeTransport()
    esc = an_escalation()
    result = city_delivery(connector, transport).deliver(esc)
    assert result == Result(True, True, "WH-1", attempts=result.attempts)
    assert result.attempts.count == 1
    assert transport.sent[0].headers["X-Idempotency-Key"] == esc.escalation_id


def test_retry_later_is_retried_with_a_fresh_nonce_and_the_same_key() -> None:
    connector = FakeConnector([RetryLater("busy"), RetryLater("busy"), Accepted("WH-2")])
    observer = FakeObserver()
    esc = an_escalation()
    result = city_delivery(connector, observer=observer).deliver(esc)
    assert result.accepted and result.attempts.count == 3
    assert {key for key, _ in connector.requests} == {esc.escalation_id}
    assert len({ctx.nonce for _, ctx in connector.requests}) == 3
    assert observer.count("on_retry", "wuhu", "busy") == 2


def test_spent_rounds_hold_the_escalation_instead_of_dead_lettering_it() -> None:
    # max_attempts=3 per round: 7 failures span three rounds, then the bureau accepts
    connector = FakeConnector([RetryLater("server_error")] * 7 + [Accepted("WH-3")])
    result = city_delivery(connector, breaker={"failure_threshold": 100}).deliver(an_escalation())
    assert result.final and result.accepted and result.attempts.count == 8


def test_permanent_rejection_is_final() -> None:
    result = city_delivery(FakeConnector([Rejected("business_rule", "3001")])).deliver(
        an_escalation()
    )
    assert (result.final, result.accepted, result.reason) == (True, False, "business_rule")


@pytest.mark.parametrize(
    "case_number", ["9" * 300_000, "W" * 65, "", "   ", "WH-\x00-1", None, 12345]
)
def test_case_number_out_of_bounds_is_an_irregular_answer(case_number: Any) -> None:
    observer = FakeObserver()
    delivery = city_delivery(FakeConnector([Accepted(case_number)]), observer=observer)
    result = delivery.deliver(an_escalation())
    assert (result.final, result.accepted, result.reason) == (True, False, "irregular_answer")
    assert len(result.detail) <= 200
    assert observer.count("on_attempt", "wuhu", "irregular") == 1
    assert delivery.breaker.state == "closed"


def test_an_irregular_answer_from_the_connector_is_final_not_retried() -> None:
    observer = FakeObserver()
    connector = FakeConnector([Irregular("missing_case_number", "no case number")])
    delivery = city_delivery(connector, observer=observer)
    result = delivery.deliver(an_escalation())
    assert (result.final, result.accepted, result.reason) == (True, False, "irregular_answer")
    assert result.detail == "missing_case_number: no case number"
    assert result.attempts.count == 1
    assert observer.count("on_attempt", "wuhu", "irregular") == 1
    assert observer.count("on_attempt", "wuhu", "retry") == 0
    assert delivery.breaker.state == "closed"


def test_case_number_at_the_bound_is_accepted() -> None:
    result = city_delivery(FakeConnector([Accepted("W" * 64)])).deliver(an_escalation())
    assert result.accepted and result.case_number == "W" * 64


def test_oversized_answer_from_the_transport_is_irregular_and_final() -> None:
    transport = FakeTransport([IrregularAnswer("over 1 MiB", reason="answer_too_large")])
    result = city_delivery(FakeConnector([Accepted("never")]), transport).deliver(an_escalation())
    assert (result.final, result.reason) == (True, "irregular_answer")
    assert "answer_too_large" in result.detail


def test_a_slow_answer_counts_as_a_breaker_failure_and_the_escalation_is_held() -> None:
    stop = threading.Event()
    clock = Clock()
    deadline = BureauUnavailable("no whole answer within 2 s", reason="deadline")
    transport = FakeTransport([deadline])
    delivery = city_delivery(
        FakeConnector([Accepted("WH-4")]),
        transport,
        clock=clock,
        stop=stop,
        breaker={"failure_threshold": 3, "open_s": 10.0},
    )
    results: list[Result] = []
    worker = threading.Thread(target=lambda: results.append(delivery.deliver(an_escalation())))
    worker.start()
    assert wait_for(lambda: delivery.breaker.state == OPEN)
    assert len(transport.sent) == 3  # open: no more calls while the (fake) clock stands still
    time.sleep(0.05)
    assert len(transport.sent) == 3 and not delivery.available()
    stop.set()
    worker.join(5)
    assert results and not results[0].final  # handed back, never dead-lettered


def test_breaker_probe_after_the_bureau_recovers_delivers() -> None:
    clock = Clock()
    transport = FakeTransport([BureauUnavailable("down")] * 3 + [None])
    delivery = city_delivery(
        FakeConnector([Accepted("WH-5")]),
        transport,
        clock=clock,
        breaker={"failure_threshold": 3, "open_s": 10.0},
    )
    results: list[Result] = []
    worker = threading.Thread(target=lambda: results.append(delivery.deliver(an_escalation())))
    worker.start()
    assert wait_for(lambda: delivery.breaker.state == OPEN)
    clock.now += 10.0
    worker.join(5)
    assert results[0].accepted and delivery.breaker.state == "closed"


def test_connector_exception_propagates_and_frees_the_breaker_probe() -> None:
    clock = Clock()
    connector = FakeConnector([Accepted("x")], translate_error=ValueError("year 10000"))
    delivery = city_delivery(connector, clock=clock, breaker={"failure_threshold": 1})
    delivery.breaker.record_failure()  # open
    clock.now += 100  # half-open: the next request is the probe
    with pytest.raises(ValueError):
        delivery.deliver(an_escalation())
    assert delivery.breaker.allow(), "the probe was lost with the exception"


def test_429_retry_after_is_capped_and_lowers_the_rate() -> None:
    observer = FakeObserver()
    connector = FakeConnector([RetryLater("rate_limited", retry_after=3600.0), Accepted("WH-6")])
    started = time.monotonic()
    clock = Clock(step=0.05)  # the bucket's penalty (the capped hint) passes as time goes on
    result = city_delivery(connector, observer=observer, clock=clock).deliver(an_escalation())
    assert result.accepted
    assert time.monotonic() - started < 2.0  # the hint was capped (retry_after_cap_s 3 ms)
    assert observer.count("on_rate_changed", "wuhu") >= 2  # initial + lowered


def test_maintenance_window_holds_until_stop() -> None:
    stop = threading.Event()
    clock = Clock(1_790_000_000.0)
    transport = FakeTransport()
    delivery = city_delivery(
        FakeConnector([Accepted("x")]),
        transport,
        clock=clock,
        stop=stop,
        maintenance=[{"start": "00:00", "end": "23:59:59"}],
    )
    threading.Timer(0.2, stop.set).start()
    result = delivery.deliver(an_escalation())
    assert not result.final and transport.sent == []


# -- Outcomes ------------------------------------------------------------------------------------


def outcomes(
    deliver: Callable[[Escalation, Attempts], Result],
    producer: FakeProducer,
    observer: FakeObserver | None = None,
    stop: threading.Event | None = None,
    on_fatal: Callable[[FatalError], None] = lambda exc: None,
) -> Outcomes:
    return Outcomes(
        "wuhu",
        deliver,
        CODEC,
        producer,  # type: ignore[arg-type]
        escalations(TOPICS.prefix, "unit"),
        observer or FakeObserver(),
        clock=Clock(),
        stop=stop or threading.Event(),
        write_backoff_s=(0.001, 0.004),
        on_fatal=on_fatal,
    )


def accepted(case: str = "WH-9") -> Callable[[Escalation, Attempts], Result]:
    def deliver(esc: Escalation, attempts: Attempts) -> Result:
        attempts.count = 1
        return Result(True, True, case, attempts=attempts)

    return deliver


def test_accepted_writes_one_receipt() -> None:
    producer = FakeProducer()
    record, esc = escalation_record()
    assert outcomes(accepted(), producer).handle(record)
    [receipt] = producer.to(TOPICS.receipts)
    decoded = CODEC.decode_as("receipt", receipt.value)
    assert (decoded["outcome"], decoded["case_number"]) == ("ACCEPTED", "WH-9")
    assert receipt.key == esc["complaint_id"].encode()
    assert producer.to(TOPICS.dlq_escalations) == []


def test_rejected_writes_a_dead_letter_and_a_rejected_receipt() -> None:
    producer = FakeProducer()
    record, _ = escalation_record()

    def deliver(esc: Escalation, attempts: Attempts) -> Result:
        return Result(True, False, None, "irregular_answer", "case number too long", attempts)

    assert outcomes(deliver, producer).handle(record)
    [dead] = producer.to(TOPICS.dlq_escalations)
    assert dead.header("gc-dlq-reason") == "irregular_answer"
    assert dead.value == record.value
    [receipt] = producer.to(TOPICS.receipts)
    assert CODEC.decode_as("receipt", receipt.value)["reason"] == "irregular_answer"


def test_any_exception_becomes_an_internal_error_dead_letter_with_a_masked_message() -> None:
    producer = FakeProducer()
    observer = FakeObserver()
    record, esc = escalation_record()
    phone = esc["consumer"]["phone"]

    def deliver(e: Escalation, attempts: Attempts) -> Result:
        attempts.count, attempts.first_ms, attempts.last_ms = 1, 1, 2
        raise ValueError(f"cannot format {phone} for year 10000")

    assert outcomes(deliver, producer, observer).handle(record)
    [dead] = producer.to(TOPICS.dlq_escalations)
    assert dead.header("gc-dlq-reason") == "internal_error"
    assert dead.header("gc-dlq-error-class") == "ValueError"
    message = dead.header("gc-dlq-message") or ""
    assert "year 10000" in message and phone not in message
    assert all(phone not in v.decode("utf-8", "replace") for _, v in dead.headers)
    assert producer.to(TOPICS.receipts) == []
    assert observer.count("on_delivery_internal_error", "wuhu") == 1
    assert observer.count("on_delivery_dead_lettered", "wuhu", "internal_error") == 1


def test_a_receipt_that_cannot_be_encoded_is_an_internal_error_not_a_crash() -> None:
    producer = FakeProducer()
    record, _ = escalation_record()
    assert outcomes(accepted("9" * 300_000), producer).handle(record)  # over the codec's cap
    assert producer.to(TOPICS.receipts) == []
    [dead] = producer.to(TOPICS.dlq_escalations)
    assert dead.header("gc-dlq-error-class") == "OversizedRecord"


def test_undecodable_record_is_dead_lettered_with_the_codec_reason() -> None:
    producer = FakeProducer()
    record, _ = escalation_record()
    broken = record._replace(value=b"\xc3\x01garbage")
    assert outcomes(accepted(), producer).handle(broken)
    [dead] = producer.to(TOPICS.dlq_escalations)
    assert dead.header("gc-dlq-reason") not in (None, "internal_error")


def test_a_failing_write_is_retried_with_backoff_until_it_succeeds() -> None:
    producer = FakeProducer(fail=4)
    observer = FakeObserver()
    record, _ = escalation_record()
    assert outcomes(accepted(), producer, observer).handle(record)
    assert producer.tries == 5 and len(producer.to(TOPICS.receipts)) == 1
    assert observer.count("on_outcome_write_failed", "wuhu", "receipt") == 4


def test_a_write_that_never_succeeds_holds_the_record_until_stop_and_leaves_it_unfinished() -> None:
    producer = FakeProducer(fail=-1)
    stop = threading.Event()
    record, _ = escalation_record()
    threading.Timer(0.1, stop.set).start()
    assert not outcomes(accepted(), producer, stop=stop).handle(record)
    assert producer.tries >= 3 and producer.sent == []


@pytest.mark.parametrize(
    "error",
    [
        FatalError("send to receipts: ProducerFencedError: fenced"),
        ConfigError("send to receipts: TopicAuthorizationFailedError: denied"),
    ],
)
def test_a_fatal_write_error_is_not_retried_and_stops_delivery(error: FatalError) -> None:
    producer = FakeProducer(fail=-1, error=error)
    observer = FakeObserver()
    fatal: list[FatalError] = []
    record, _ = escalation_record()
    assert not outcomes(accepted(), producer, observer, on_fatal=fatal.append).handle(record)
    assert producer.tries == 1 and producer.sent == []
    assert fatal == [error]
    assert observer.count("on_outcome_write_failed", "wuhu", "receipt") == 1


def test_a_producer_left_in_a_fatal_state_stops_delivery_whatever_the_error_says() -> None:
    # kafka-python's idempotent producer after MessageSizeTooLarge: every later send fails
    # with the same (record-level looking) error, forever
    refused = RecordError("send to receipts: MessageSizeTooLargeError", reason="broker_rejected")
    producer = FakeProducer(fail=-1, error=refused)
    producer.broken = "MessageSizeTooLargeError: [Error 10] MessageSizeTooLargeError"
    fatal: list[FatalError] = []
    record, _ = escalation_record()
    assert not outcomes(accepted(), producer, on_fatal=fatal.append).handle(record)
    assert producer.tries == 1
    [exc] = fatal
    assert "fatal state" in str(exc) and "MessageSizeTooLarge" in str(exc)


def test_a_record_level_write_error_on_a_healthy_producer_keeps_the_capped_backoff() -> None:
    refused = RecordError("send to receipts: InvalidRecordError", reason="broker_rejected")
    producer = FakeProducer(fail=3, error=refused)
    fatal: list[FatalError] = []
    record, _ = escalation_record()
    assert outcomes(accepted(), producer, on_fatal=fatal.append).handle(record)
    assert producer.tries == 4 and fatal == []


def test_interrupted_delivery_is_not_final() -> None:
    producer = FakeProducer()
    record, _ = escalation_record()
    assert not outcomes(lambda e, a: Result(False, attempts=a), producer).handle(record)
    assert producer.sent == []


# -- Lane ----------------------------------------------------------------------------------------


def synchronous(
    handle: Callable[[Record], bool],
) -> Callable[[Record, Callable[[bool], None]], None]:
    """A lane handler that finishes each record before returning (as ``handle`` says)."""
    return lambda record, done: done(handle(record))


def lane(
    handle: Callable[[Record], bool],
    *,
    workers: int = 3,
    current: Callable[[TopicPartition, int], bool] = lambda tp, g: True,
    liveness: FakeLiveness | None = None,
) -> tuple[Lane, queue.SimpleQueue[Completion]]:
    done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
    ln = Lane(
        "wuhu",
        workers,
        synchronous(handle),
        done,
        is_current=current,
        stop=threading.Event(),
        clock=Clock(),
        liveness=liveness,
    )
    ln.start()
    return ln, done


def rec(offset: int, key: bytes) -> Record:
    return Record("u.escalations.wuhu.v1", 0, offset, key, b"", [], 1_790_000_000_000)


def drain(done: queue.SimpleQueue[Completion], n: int) -> list[int]:
    return [done.get(timeout=5).offset for _ in range(n)]


def test_one_key_is_handled_in_order_one_record_at_a_time() -> None:
    seen: dict[bytes, list[int]] = {}
    inside: dict[bytes, int] = {}
    overlaps: list[bytes] = []
    lock = threading.Lock()

    def handle(r: Record) -> bool:
        key = r.key or b""
        with lock:
            inside[key] = inside.get(key, 0) + 1
            if inside[key] > 1:
                overlaps.append(key)
            seen.setdefault(key, []).append(r.offset)
        time.sleep(0)  # let the lane's other threads run meanwhile
        with lock:
            inside[key] -= 1
        return True

    ln, done = lane(handle)
    for i in range(60):
        ln.submit(Job(rec(i, b"k%d" % (i % 4)), 0))
    drain(done, 60)
    assert overlaps == []
    assert sorted(seen) == [b"k0", b"k1", b"k2", b"k3"]
    for items in seen.values():
        assert items == sorted(items) and len(items) == 15
    ln.request_stop()
    assert ln.join(5)


def test_an_exception_escaping_handle_leaves_the_worker_alive() -> None:
    def handle(r: Record) -> bool:
        if r.offset == 1:
            raise RuntimeError("bug")
        return True

    ln, done = lane(handle, workers=1)
    for i in range(3):
        ln.submit(Job(rec(i, b"same"), 0))
    assert drain(done, 2) == [0, 2]  # 1 stays unfinished: its commit point waits
    assert ln.dead_workers() == [] and ln.queued == 0
    ln.request_stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_that_dies_is_reported_to_liveness() -> None:
    liveness = FakeLiveness(Clock())

    def handle(r: Record) -> bool:
        raise SystemExit("simulated thread death")

    ln, _ = lane(handle, workers=1, liveness=liveness)
    ln.submit(Job(rec(0, b"k"), 0))
    assert wait_for(lambda: ln.dead_workers() == ["deliver-wuhu-0"])
    assert liveness.failures and liveness.failures[0][0] == WORKERS


def test_records_of_a_revoked_generation_are_dropped_not_completed() -> None:
    calls: list[int] = []
    ln, done = lane(lambda r: calls.append(r.offset) or True, current=lambda tp, g: g == 1)
    ln.submit(Job(rec(0, b"a"), 0))
    ln.submit(Job(rec(1, b"a"), 1))
    assert drain(done, 1) == [1] and calls == [1]
    ln.request_stop()


# -- DeliveryEngine ------------------------------------------------------------------------------


class EngineRig:
    def __init__(
        self, connectors: dict[str, FakeConnector], *, start: bool = True, **city: Any
    ) -> None:
        self.clock = Clock()
        self.liveness = FakeLiveness(self.clock)
        self.producer = FakeProducer()
        self.settings = unit_settings(**city)
        self.consumers: list[FakeConsumer] = []

        def consumer(settings: Any, **kwargs: Any) -> FakeConsumer:
            c = FakeConsumer(**kwargs)
            self.consumers.append(c)
            return c

        self.engine = DeliveryEngine(
            self.settings,
            connectors,  # type: ignore[arg-type]
            CODEC,
            FakeObserver(),
            Watchdog(30),
            cities=["wuhu", "hefei"],
            transport_factory=lambda city: FakeTransport(),
            clock=self.clock,
            liveness=self.liveness,
            producer=self.producer,  # type: ignore[arg-type]
            consumer_factory=consumer,
            topic_limits=lambda topics: {TOPICS.dlq_escalations: 200_000},
        )
        if start:
            for ln in self.engine.lanes.values():
                ln.start()

    @property
    def consumer(self) -> FakeConsumer:
        return self.consumers[0]

    def run_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.engine.step()
            if predicate():
                return True
            time.sleep(0.002)
        return predicate()

    def close(self) -> None:
        self.engine.shutdown(2)


def test_engine_commits_past_final_records_only() -> None:
    gate = threading.Event()

    class Slow(FakeConnector):
        def translate(self, escalation: Escalation, ctx: Any) -> Any:
            if escalation.description == "slow":
                gate.wait(5)
            return super().translate(escalation, ctx)

    rig = EngineRig({"wuhu": Slow([Accepted("WH-1")]), "hefei": FakeConnector([Accepted("HF")])})
    slow, _ = escalation_record("wuhu", 0, key=b"a", description="slow")
    fast, _ = escalation_record("wuhu", 1, key=b"d")  # the other worker
    rig.consumer.queue += [slow, fast]
    tp = slow.tp
    assert rig.run_until(lambda: len(rig.producer.to(TOPICS.receipts)) == 1)
    rig.engine.step()
    assert rig.consumer.committed(tp) in (None, 0)  # offset 1 is final, offset 0 is not
    gate.set()
    assert rig.run_until(lambda: rig.consumer.committed(tp) == 2)
    rig.close()


def test_engine_pauses_only_the_unavailable_city_and_resumes_it() -> None:
    rig = EngineRig(
        {"wuhu": FakeConnector([Accepted("W")]), "hefei": FakeConnector([Accepted("H")])}
    )
    wuhu = rig.engine.deliveries["wuhu"]
    wuhu.breaker.failure_threshold = 1
    wuhu.breaker.record_failure()
    rig.engine.step()
    rig.engine.step()
    assert rig.consumer.paused_tps == {TopicPartition(TOPICS.escalations("wuhu"), 0)}
    rig.clock.now += 60
    assert wuhu.breaker.allow()
    wuhu.breaker.record_success()
    assert rig.run_until(lambda: not rig.consumer.paused_tps)
    rig.close()


def test_engine_year_10000_escalation_is_dead_lettered_and_the_partition_moves_on() -> None:
    rig = EngineRig(
        {"wuhu": FakeConnector([Accepted("W")]), "hefei": FakeConnector([Accepted("H")])}
    )

    class Strict(FakeConnector):
        def translate(self, escalation: Escalation, ctx: Any) -> Any:
            if escalation.received_at_ms > 253_402_300_799_999:
                raise ValueError("year 10000 is out of range")
            return super().translate(escalation, ctx)

    rig.engine.deliveries["wuhu"].connector = Strict([Accepted("W")])
    records = [
        escalation_record(
            "wuhu", i, key=b"same", **({"received_at": YEAR_10000_MS} if i == 1 else {})
        )[0]
        for i in range(3)
    ]
    rig.consumer.queue += records
    assert rig.run_until(lambda: rig.consumer.committed(records[0].tp) == 3)
    assert [s.header("gc-dlq-reason") for s in rig.producer.to(TOPICS.dlq_escalations)] == [
        "internal_error"
    ]
    assert len(rig.producer.to(TOPICS.receipts)) == 2
    assert all(ln.dead_workers() == [] for ln in rig.engine.lanes.values())
    rig.close()


def test_engine_reports_a_commit_point_stuck_while_later_records_are_final() -> None:
    gate = threading.Event()

    class Stuck(FakeConnector):
        def translate(self, escalation: Escalation, ctx: Any) -> Any:
            if escalation.description == "stuck":
                gate.wait(10)
            return super().translate(escalation, ctx)

    rig = EngineRig({"wuhu": Stuck([Accepted("W")]), "hefei": FakeConnector([Accepted("H")])})
    rig.liveness.register(COMMIT, 60)
    stuck, _ = escalation_record("wuhu", 0, key=b"a", description="stuck")
    later, _ = escalation_record("wuhu", 1, key=b"d")  # the other worker
    rig.consumer.queue += [stuck, later]
    assert rig.run_until(lambda: len(rig.producer.to(TOPICS.receipts)) == 1)
    rig.engine.step()
    beat = rig.liveness.last_beat[COMMIT]
    rig.clock.now += 30
    rig.engine.step()
    assert rig.liveness.last_beat[COMMIT] == rig.clock.now  # held 30 s: not stuck yet
    rig.clock.now += 61
    rig.engine.step()
    rig.clock.now += 5
    rig.engine.step()
    assert rig.liveness.last_beat[COMMIT] < rig.clock.now - 60, "still beating while stuck"
    assert rig.liveness.last_beat[COMMIT] > beat
    gate.set()
    assert rig.run_until(lambda: rig.consumer.committed(stuck.tp) == 2)
    rig.engine.step()
    assert rig.liveness.last_beat[COMMIT] == rig.clock.now
    rig.close()


def test_engine_does_not_call_a_city_outage_stuck() -> None:
    rig = EngineRig(
        {"wuhu": FakeConnector([Accepted("W")]), "hefei": FakeConnector([Accepted("H")])}
    )
    part = rig.engine.tracker
    tp = TopicPartition(TOPICS.escalations("wuhu"), 0)
    part.add(tp, 0)
    part.add(tp, 1)
    part.done(tp, 1)  # 0 held, 1 final: like a record held by an open breaker
    breaker = rig.engine.deliveries["wuhu"].breaker
    breaker.failure_threshold = 1
    breaker.record_failure()
    for _ in range(3):
        rig.clock.now += 100
        rig.engine.step()
        assert rig.liveness.last_beat[COMMIT] == rig.clock.now
    rig.close()


def test_engine_stops_on_a_fatal_write_and_raises_without_committing_past_it() -> None:
    rig = EngineRig(
        {"wuhu": FakeConnector([Accepted("W")]), "hefei": FakeConnector([Accepted("H")])},
        start=False,
    )
    rig.producer.fail, rig.producer.error = -1, FatalError("send: ProducerFencedError")
    record, _ = escalation_record("wuhu", 0)
    rig.consumer.queue.append(record)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            rig.engine.run(threading.Event(), drain_timeout_s=2)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the engine kept running after a fatal write"
    assert [type(e) for e in raised] == [FatalError]
    assert rig.engine.fatal is raised[0]
    assert rig.producer.tries == 1
    assert rig.consumer.committed(record.tp) in (None, 0)


def test_engine_registers_and_beats_its_loop_and_workers() -> None:
    rig = EngineRig(
        {"wuhu": FakeConnector([Accepted("W")]), "hefei": FakeConnector([Accepted("H")])},
        start=False,
    )
    stop = threading.Event()
    stop.set()
    rig.engine.run(stop, 1)
    assert {LOOP, COMMIT, WORKERS} <= set(rig.liveness.stale_after)
    assert rig.producer is rig.engine.producer and rig.consumer.closed


# -- outcome sizes ------------------------------------------------------------------------------


def test_a_dead_letter_over_the_record_limit_is_cut_to_fit() -> None:
    import hashlib

    from gateway.delivery.outcomes import record_size

    producer = FakeProducer()
    record, _ = escalation_record(description="投诉" * 20_000)
    record = record._replace(headers=[("big", b"h" * 50_000)])

    def deliver(esc: Escalation, attempts: Attempts) -> Result:
        return Result(True, False, None, "business_rule", "3001", attempts)

    out = outcomes(deliver, producer)
    out.max_record_bytes = lambda topic: 20_000
    assert out.handle(record)
    [dead] = producer.to(TOPICS.dlq_escalations)
    assert record_size(dead.key, dead.value, dead.headers) <= 20_000
    assert dead.header("gc-dlq-reason") == "business_rule"
    assert dead.header("gc-dlq-source-offset") == str(record.offset)
    assert dead.header("gc-dlq-value-bytes") == str(len(record.value or b""))
    assert dead.header("gc-dlq-value-sha256") == hashlib.sha256(record.value or b"").hexdigest()
    assert dead.header("gc-dlq-truncated") and dead.header("big") is None
    assert dead.header("gc-dlq-headers-dropped") == "1"  # the router's contract (big)
    assert dead.value == (record.value or b"")[: len(dead.value)] and len(dead.value) <= 1024
    assert len(producer.to(TOPICS.receipts)) == 1


def test_a_receipt_over_the_record_limit_is_dead_lettered_as_internal_error() -> None:
    producer = FakeProducer()
    record, _ = escalation_record()
    out = outcomes(accepted(), producer)
    out.max_record_bytes = lambda topic: 300 if topic == TOPICS.receipts else 1_000_000
    assert out.handle(record)
    assert producer.to(TOPICS.receipts) == []
    [dead] = producer.to(TOPICS.dlq_escalations)
    assert (dead.header("gc-dlq-reason"), dead.header("gc-dlq-error-class")) == (
        "internal_error",
        "OversizedRecord",
    )


# -- property: any answer, one outcome -----------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gateway.sdk import BureauResponse  # noqa: E402

_OUTCOMES = st.one_of(
    st.builds(Accepted, st.one_of(st.text(max_size=100), st.none(), st.integers())),
    st.builds(Rejected, st.text(max_size=30), st.text(max_size=300)),
    st.builds(
        RetryLater,
        st.text(max_size=20),
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        st.booleans(),
    ),
    st.sampled_from([ValueError("bad"), RecursionError("deep"), KeyError("x"), TypeError()]),
)


@settings(max_examples=60, deadline=None)
@given(first=st.lists(_OUTCOMES, min_size=1, max_size=4), status=st.integers(100, 599))
def test_any_interpretation_ends_in_exactly_one_written_outcome(
    first: list[Any], status: int
) -> None:
    """Whatever the connector makes of the answers (then a good one): exactly one final
    outcome is written — a receipt, or a dead letter (+ REJECTED receipt) — and nothing
    raises out of the worker's handler."""

    class Scripted(FakeConnector):
        def interpret(self, response: BureauResponse) -> Any:
            return super().interpret(BureauResponse(status, {}, response.body))

    connector = Scripted([*first, Accepted("WH-OK")])
    producer = FakeProducer()
    delivery = city_delivery(connector, clock=Clock(step=0.5), breaker={"failure_threshold": 1000})
    record, _ = escalation_record()
    out = outcomes(delivery.deliver, producer)
    assert out.handle(record)
    receipts = [CODEC.decode_as("receipt", s.value) for s in producer.to(TOPICS.receipts)]
    dead = producer.to(TOPICS.dlq_escalations)
    if dead:
        assert len(dead) == 1 and dead[0].header("gc-dlq-reason")
        assert [r["outcome"] for r in receipts] in ([], ["REJECTED"])
    else:
        assert [r["outcome"] for r in receipts] == ["ACCEPTED"]
        assert receipts[0]["case_number"]


class _CountingStop(threading.Event):
    """A stop event that counts the threads inside ``wait`` at once."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.most = 0
        self._count = threading.Lock()

    def wait(self, timeout: float | None = None) -> bool:
        with self._count:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            return super().wait(timeout)
        finally:
            with self._count:
                self.inside -= 1


def test_one_worker_of_a_city_waits_for_its_bucket_at_a_time() -> None:
    # Several workers of one city short of tokens: one sleeps until the next token is due, the
    # others wait their turn (not each its own timed wait, woken together for one token).
    stop = _CountingStop()
    delivery = city_delivery(FakeConnector(), stop=stop, rate_per_s=200.0, burst=1)
    delivery.clock = time.time
    delivery.limiter = TokenBucket(200.0, 1, time.time)
    grants: list[float] = []
    taken = threading.Lock()

    def take(n: int) -> None:
        for _ in range(n):
            delivery._take_token()
            with taken:
                grants.append(time.monotonic())

    workers = [threading.Thread(target=take, args=(5,)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert len(grants) == 20
    assert stop.most == 1
    assert grants[-1] - grants[0] >= 18 / 200  # the bucket's rate still binds (one in burst)


def test_a_worker_stopped_while_waiting_for_its_turn_takes_no_token() -> None:
    stop = threading.Event()
    delivery = city_delivery(FakeConnector(), stop=stop, burst=5)
    raised: list[BaseException] = []

    def take() -> None:
        try:
            delivery._take_token()
        except BaseException as exc:
            raised.append(exc)

    with delivery._token_turn:  # another worker's turn
        worker = threading.Thread(target=take)
        worker.start()
        time.sleep(0.05)  # time itself is the scenario: let the worker block on the turn
        stop.set()
    worker.join(5)
    assert len(raised) == 1 and isinstance(raised[0], Hold)
    assert delivery.limiter.reserve() == 0.0  # the burst is whole: nothing was taken
    assert sum(delivery.limiter.reserve() == 0.0 for _ in range(4)) == 4


def test_nonces_are_32_hex_digits_and_never_repeat() -> None:

    nonces = Nonces(per_read=4)  # several refills
    seen = [nonces() for _ in range(1000)]
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in seen)
    assert len(set(seen)) == len(seen)
    assert Nonces()() != Nonces()()


def test_the_wait_for_the_turn_counts_as_waiting_for_the_bucket() -> None:
    waits: list[float] = []

    class Observer(FakeObserver):
        def on_limiter_wait(self, city: str, seconds: float) -> None:
            waits.append(seconds)

    delivery = city_delivery(FakeConnector(), observer=Observer(), burst=5)
    delivery._take_token()  # a token at once, no turn to wait for: nothing reported
    assert waits == []
    with delivery._token_turn:  # another worker's turn
        worker = threading.Thread(target=delivery._take_token)
        worker.start()
        time.sleep(0.1)  # time itself is the scenario: the turn is held this long
    worker.join(5)
    assert len(waits) == 1 and waits[0] >= 0.09


def test_a_forked_child_draws_fresh_nonces_not_its_parents_unread_bytes() -> None:
    nonces = Nonces(per_read=4)
    nonces()  # the parent has read its buffer: three unread nonces are left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what would the parent's next nonce be?
        os.write(write, nonces().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert len(child) == 32
    assert child != nonces()
