"""Helpers for the case tests: records to publish, loops on threads, reading the case topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gateway.avro.codec import Codec
from gateway.cases.loop import TransactionalLoop
from gateway.config import Settings
from gateway.kafka.clients import Producer, Record
from gateway.routing.escalation import escalation_id
from tests.helpers import read_all

HOUR = 3_600_000


def escalation_record(complaint_id: str, city: str, city_code: str, now_ms: int) -> dict[str, Any]:
    return {
        "escalation_id": escalation_id(complaint_id, city),
        "complaint_id": complaint_id,
        "city": city,
        "city_code": city_code,
        "created_at": now_ms,
        "received_at": now_ms - HOUR,
        "handling_deadline": now_ms + 14 * 24 * HOUR,
        "channel": "APP",
        "rule_id": "safety",
        "consumer": {
            "name": "张三",
            "phone": "13812345678",
            "id_number": None,
            "address": None,
            "email": None,
        },
        "merchant": {"merchant_id": "m-1", "name": "某某商贸有限公司", "credit_code": None},
        "order_id": "o-1",
        "amount_fen": 129900,
        "product_category": "ELECTRONICS",
        "category": "QUALITY",
        "description": "充电宝起火",
        "severity": ["safety_hazard"],
    }


def receipt_record(escalation: dict[str, Any], case_number: str, at_ms: int) -> dict[str, Any]:
    return {
        "escalation_id": escalation["escalation_id"],
        "complaint_id": escalation["complaint_id"],
        "city": escalation["city"],
        "outcome": "ACCEPTED",
        "case_number": case_number,
        "reason": None,
        "attempts": 1,
        "first_attempt_at": at_ms,
        "completed_at": at_ms,
        "latency_ms": 5,
    }


def publish(settings: Settings, records: list[tuple[str, bytes | None, bytes]]) -> None:
    producer = Producer(settings.kafka)
    try:
        for topic, key, value in records:
            producer.send(topic, value, key=key)
        producer.flush(30)
    finally:
        producer.close()


@contextmanager
def running(loop: TransactionalLoop, timeout_s: float = 60) -> Iterator[TransactionalLoop]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=loop.name, daemon=True)
    thread.start()
    try:
        assert loop.ready.wait(timeout_s), f"{loop.name} got no partitions"
        yield loop
    finally:
        stop.set()
        thread.join(timeout_s)
    assert not errors, errors


def wait_for(condition: Callable[[], bool], timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}")


def latest_states(codec: Codec, bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for record in read_all(bootstrap, [topic], idle_s=1.5, timeout_s=20):
        assert record.key is not None
        out[record.key.decode()] = codec.decode_as("case_state", record.value)
    return out


def records_of(bootstrap: str, topic: str) -> list[Record]:
    return read_all(bootstrap, [topic], idle_s=1.5, timeout_s=20)
