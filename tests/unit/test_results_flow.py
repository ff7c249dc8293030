"""Handling results through the delivery engine's pieces, with fakes: the results flow's
outcomes (receipt key, dead-letter stage, metrics), the splitter's routing by city, the topic
names the engine pauses by."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gateway.cases.results import ResultKind, ResultSplitter, results_flow
from gateway.delivery.city import Attempts, Result
from gateway.delivery.outcomes import Outcomes
from gateway.kafka.clients import Record
from gateway.ops.watchdog import Watchdog
from gateway.sdk import HandlingResult
from tests.unit.delivery_fakes import (
    CODEC,
    TOPICS,
    Clock,
    FakeObserver,
    FakeProducer,
    unit_settings,
)

pytestmark = pytest.mark.unit


def a_result(city: str = "hefei", **fields: Any) -> dict[str, Any]:
    result = {
        "result_id": "r-1",
        "escalation_id": "e-1",
        "complaint_id": "c-1",
        "city": city,
        "case_number": "HF-1",
        "contacted_at": 1_790_000_000_000,
        "method": "PHONE",
        "settled": True,
        "refund_fen": 100,
        "compensation_fen": None,
        "satisfaction": "SATISFIED",
        "note": "called 13800138000",
        "reported_at": 1_790_000_100_000,
    }
    return result | fields


def result_record(city: str = "hefei", offset: int = 0, **fields: Any) -> Record:
    value = CODEC.encode("handling_result", a_result(city, **fields))
    return Record(TOPICS.results_for(city), 0, offset, b"e-1", value, [("h", b"v")], 1)


def outcomes(deliver: Any, producer: FakeProducer, observer: FakeObserver) -> Outcomes:
    return Outcomes(
        "hefei",
        deliver,
        CODEC,
        producer,  # type: ignore[arg-type]
        results_flow(unit_settings()),
        observer,  # type: ignore[arg-type]
        clock=Clock(),
        stop=threading.Event(),
        write_backoff_s=(0.001, 0.004),
    )


def test_an_accepted_result_writes_its_receipt_keyed_by_escalation_id() -> None:
    producer, observer = FakeProducer(), FakeObserver()
    seen: list[HandlingResult] = []

    def deliver(item: HandlingResult, attempts: Attempts) -> Result:
        seen.append(item)
        attempts.count = 2
        return Result(True, True, "RCPT-7", attempts=attempts)

    assert outcomes(deliver, producer, observer).handle(result_record())
    assert [r.result_id for r in seen] == ["r-1"]
    [receipt] = producer.to(TOPICS.result_receipts)
    decoded = CODEC.decode_as("receipt", receipt.value)
    assert (decoded["outcome"], decoded["case_number"], decoded["attempts"]) == (
        "ACCEPTED",
        "RCPT-7",
        2,
    )
    assert receipt.key == b"e-1" and receipt.header("gc-result-id") == "r-1"
    assert producer.to(TOPICS.receipts) == [] and producer.to(TOPICS.dlq_results) == []
    assert observer.count("on_case_result", "hefei", "accepted") == 1
    assert observer.count("on_delivered", "hefei") == 0  # escalation latency untouched


def test_a_rejected_result_is_dead_lettered_at_stage_results_with_a_rejected_receipt() -> None:
    producer, observer = FakeProducer(), FakeObserver()

    def deliver(item: HandlingResult, attempts: Attempts) -> Result:
        attempts.count, attempts.first_ms, attempts.last_ms = 1, 1, 2
        attempts.last_body = b'{"error":"unknown case","note":"13800138000"}'
        return Result(True, False, None, "unknown_case", "no such case", attempts)

    assert outcomes(deliver, producer, observer).handle(result_record())
    [dead] = producer.to(TOPICS.dlq_results)
    assert dead.header("gc-dlq-stage") == "results"
    assert dead.header("gc-dlq-reason") == "unknown_case"
    assert "13800138000" not in (dead.header("gc-dlq-response") or "")  # the note is masked
    [receipt] = producer.to(TOPICS.result_receipts)
    assert CODEC.decode_as("receipt", receipt.value)["outcome"] == "REJECTED"
    assert observer.count("on_case_result", "hefei", "rejected") == 1
    assert producer.to(TOPICS.dlq_escalations) == []


def test_an_undecodable_result_is_dead_lettered_without_a_call() -> None:
    producer, observer = FakeProducer(), FakeObserver()
    record = Record(TOPICS.results_for("hefei"), 0, 3, b"k", b"\x00junk", [], 1)

    def deliver(item: HandlingResult, attempts: Attempts) -> Result:
        raise AssertionError("must not be called")

    assert outcomes(deliver, producer, observer).handle(record)
    [dead] = producer.to(TOPICS.dlq_results)
    assert dead.header("gc-dlq-stage") == "results" and dead.value == b"\x00junk"


def test_the_flow_names_one_input_topic_per_city() -> None:
    flow = results_flow(unit_settings())
    assert flow.topic("wuhu") == TOPICS.results_for("wuhu") == "u.results.wuhu.v1"
    assert flow.city_of("u.results.wuhu.v1") == "wuhu"
    for other in (TOPICS.results, TOPICS.result_receipts, TOPICS.escalations("wuhu")):
        with pytest.raises(ValueError):
            flow.city_of(other)
    assert flow.liveness("commit") == "results-commit"
    assert not flow.city_gauges
    assert ResultKind().since_ms(ResultKind().item(a_result())) == 1_790_000_100_000


def test_the_splitter_copies_each_result_to_its_city_and_dead_letters_the_rest() -> None:
    splitter = ResultSplitter.__new__(ResultSplitter)  # no Kafka clients: outputs() only
    splitter.topics, splitter.codec, splitter.cities = TOPICS, CODEC, frozenset({"hefei", "wuhu"})
    splitter.clock, splitter.watchdog = Clock(), Watchdog(30)
    unknown = CODEC.encode("handling_result", a_result("atlantis"))
    records = [
        result_record("hefei", 0),
        Record(TOPICS.results, 1, 0, b"e-2", unknown, [], 1),
        Record(TOPICS.results, 2, 0, b"e-3", None, [], 1),
        result_record("wuhu", 1),
    ]
    out = splitter.outputs(records)
    assert [o[0] for o in out] == [
        TOPICS.results_for("hefei"),
        TOPICS.dlq_results,
        TOPICS.dlq_results,
        TOPICS.results_for("wuhu"),
    ]
    assert out[0][1:] == (records[0].key, records[0].value, records[0].headers)
    reasons = [dict(o[3]).get("gc-dlq-reason") for o in out[1:3]]
    assert reasons == [b"city", b"empty"]
