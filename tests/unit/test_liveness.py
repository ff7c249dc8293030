"""Liveness from progress (gateway.ops.liveness), /healthz over it, and the fast-path self-check."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.producer.record_accumulator import RecordAccumulator
from prometheus_client import CollectorRegistry

from gateway.kafka.append import BatchAppender, batch_appender, self_check
from gateway.kafka.partitioner import KeyHashPartitioner
from gateway.ops.health import OpsServer
from gateway.ops.liveness import Liveness

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_component_is_unhealthy_after_stale_after_s_without_progress() -> None:
    clock = Clock()
    live = Liveness(clock=clock)
    assert not live.healthy()  # nothing registered: nothing proves we are alive
    live.register("router", stale_after_s=10)
    clock.now += 9
    assert live.healthy()
    clock.now += 2
    status = live.status()["router"]
    assert not status.ok and "no progress for 11s" in (status.reason or "")
    live.beat("router")
    assert live.healthy()


def test_fail_holds_until_the_next_beat_and_unknown_names_are_ignored() -> None:
    live = Liveness(clock=Clock())
    live.register("a", 60)
    live.register("b", 60)
    live.fail("a", "the same batch was aborted 10 times")
    live.beat("nobody")
    live.fail("nobody", "x")
    assert not live.healthy()
    assert live.status()["a"].reason == "the same batch was aborted 10 times"
    assert live.status()["b"].ok
    live.beat("a")
    assert live.healthy()
    live.unregister("a")
    assert set(live.status()) == {"b"}


def test_a_gone_thread_is_unhealthy_however_recent_its_beat() -> None:
    live = Liveness(clock=Clock())
    worker = threading.Thread(target=lambda: None)
    worker.start()
    worker.join()
    live.register("deliver-wuhu-0", 60, thread=worker)
    assert live.status()["deliver-wuhu-0"].reason == "thread is gone"


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_healthz_reports_progress_not_only_heartbeats() -> None:
    clock = Clock()
    live = Liveness(clock=clock)
    live.register("router", 30)
    ops = OpsServer(
        "127.0.0.1",
        0,
        CollectorRegistry(),
        lambda: {"router": 0.1},  # the loop iterates...
        lambda: {"router": True},
        progress=live,
    ).start()
    try:
        assert _get(ops.port, "/healthz")[0] == 200
        live.fail("router", "the same batch was aborted 10 times")  # ...but makes no progress
        status, body = _get(ops.port, "/healthz")
        assert status == 503 and body["ok"] is False
        assert body["progress"]["router"]["reason"] == "the same batch was aborted 10 times"
    finally:
        ops.stop()


# --- the fast produce path's start-up self-check ------------------------------------------------


def _producer(accumulator: Any) -> Any:
    return SimpleNamespace(
        config={"partitioner": KeyHashPartitioner(), "max_request_size": 1 << 20},
        _accumulator=accumulator,
        _sender=SimpleNamespace(wakeup=lambda: None),
        _transaction_manager=None,
    )


def test_the_self_check_passes_on_the_installed_kafka_python() -> None:
    producer = _producer(RecordAccumulator(batch_size=16384))
    self_check(producer)
    assert isinstance(batch_appender(producer), BatchAppender)
    assert not producer._accumulator._batches  # the probe never touched the real accumulator


class ThreeValueAccumulator(RecordAccumulator):  # type: ignore[misc]
    """Upstream's later shape: same parameter names, three return values."""

    def append(  # type: ignore[override]
        self,
        tp: Any,
        timestamp_ms: Any,
        key: Any,
        value: Any,
        headers: Any,
        now: Any = None,
        abort_on_new_batch: bool = False,
    ) -> tuple[Any, ...]:
        return super().append(tp, timestamp_ms, key, value, headers, now)[:3]


def test_a_changed_return_shape_falls_back_to_send_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = _producer(ThreeValueAccumulator(batch_size=16384))
    with pytest.raises(TypeError, match="returned 3 values, expected 4"):
        self_check(producer)
    with caplog.at_level(logging.WARNING, logger="gateway.kafka.append"):
        assert batch_appender(producer) is None
    assert "sent one by one with send()" in caplog.text
