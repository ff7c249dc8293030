"""Failures around the records, against the real broker: a registry outage, a transient poll
error, a fatal error inside the transaction, and kafka-python internals that changed shape.

Issue 9, finding 6: ``Router.process`` caught every ``GreenChannelError``, ``FatalError``
included, aborted and re-read: a non-retriable error became an endless abort loop. Finding 7:
a registry outage while decoding, or a ``TransientError`` from ``poll``, escaped the loop and the
process exited 1. Now: fatal -> the loop ends and ``App.run`` returns 1 at once; transient ->
the router waits with capped backoff (``/readyz`` false, ``greenchannel_router_stalled`` 1) and
resumes by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka.producer.record_accumulator import RecordAccumulator

from gateway.app import EXIT_FATAL
from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.dev.registry import RegistryServer
from gateway.errors import FatalError, KafkaUnavailable
from gateway.kafka.clients import Consumer, Producer
from tests.conftest import TopicFactory
from tests.hostile.router_kit import OutputReader, Publisher, RouterRun, router_settings


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_registry_outage_while_decoding_is_waited_out(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory
) -> None:
    topic_factory.create_all()
    registry = RegistryServer().start()
    port = int(registry.url.rsplit(":", 1)[1])
    codec_conf = {"wire_format": "confluent", "registry_url": registry.url}
    settings = router_settings(
        settings_factory, topic_factory.prefix, codec=codec_conf, router={"backoff_max_s": 1.0}
    )
    pub = Publisher(settings)
    with Codec(settings.codec) as codec:  # registers the schema: Confluent-framed complaints
        tags = pub.valid(codec, 30, seed=31)
    store = registry.store
    registry.stop()  # the router has never seen the schema id: it must ask, and cannot
    reader = OutputReader(settings, pub)
    with RouterRun(settings) as run:
        _wait(
            lambda: run.metric("greenchannel_router_stalled", reason="registry_unavailable") == 1,
            60,
            "the router to report the registry outage",
        )
        time.sleep(2)  # a few backoff rounds
        assert run.thread.is_alive()
        assert run.app.ready() == {"router": False}
        assert run.app.liveness.healthy()  # waiting out an outage is alive: no restart
        reader.linger(1)
        assert not any(reader.outcomes.of(tag) for tag in tags)  # nothing dead-lettered
        back = RegistryServer(port=port)
        back._server.store = store  # the same registry, back on the same address
        back.start()
        try:
            reader.wait_for(tags, timeout_s=60)
            _wait(lambda: run.app.ready() == {"router": True}, 30, "readiness")
        finally:
            back.stop()
        assert run.metric("greenchannel_router_stalled", reason="registry_unavailable") == 0
    assert all(len(reader.outcomes.routed.get(tag, [])) == 1 for tag in tags)
    reader.close()
    pub.close()


def test_a_transient_error_from_poll_does_not_kill_the_router(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic_factory.create_all()
    settings = router_settings(settings_factory, topic_factory.prefix)
    codec = Codec(settings.codec)
    pub = Publisher(settings)
    tags = pub.valid(codec, 30, seed=32)
    real_poll = Consumer.poll
    failures = {"left": 3}

    def flaky_poll(self: Consumer, timeout_ms: int, max_records: int | None = None) -> Any:
        if failures["left"] and getattr(self, "_is_router", False):
            failures["left"] -= 1
            raise KafkaUnavailable("poll: NodeNotReadyError (injected)")
        return real_poll(self, timeout_ms, max_records)

    monkeypatch.setattr(Consumer, "poll", flaky_poll)
    reader = OutputReader(settings, pub)
    with RouterRun(settings) as run:
        assert run.app.router is not None
        run.app.router.consumer._is_router = True  # type: ignore[attr-defined]
        reader.wait_for(tags, timeout_s=60)
        assert run.thread.is_alive()
        assert failures["left"] == 0
        assert run.metric("greenchannel_router_stalls_total", reason="kafka_unavailable") >= 1
    reader.close()
    pub.close()


def test_a_fatal_error_in_the_transaction_ends_the_process_instead_of_looping(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic_factory.create_all()
    settings = router_settings(settings_factory, topic_factory.prefix)
    codec = Codec(settings.codec)
    pub = Publisher(settings)
    pub.valid(codec, 5, seed=33)
    calls = {"n": 0}

    def fenced(self: Producer, offsets: Any, group_metadata: Any) -> None:
        calls["n"] += 1
        raise FatalError("send_offsets_to_transaction: ProducerFencedError (injected)")

    monkeypatch.setattr(Producer, "send_offsets", fenced)
    with RouterRun(settings) as run:
        code = run.wait_exit(60)
        assert code == EXIT_FATAL, "the router kept looping on a fatal error"
        assert calls["n"] == 1  # never retried
        assert any(isinstance(e, FatalError) for e in run.app.errors)
    pub.close()


def test_append_returning_three_values_falls_back_to_send(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Upstream kafka-python's later ``RecordAccumulator.append`` returns three values; the
    parameter names are unchanged, so only exercising it notices. The router must fall back to
    ``send()`` and route everything, not unpack-fail inside every transaction."""
    topic_factory.create_all()
    settings = router_settings(settings_factory, topic_factory.prefix)
    codec = Codec(settings.codec)
    pub = Publisher(settings)
    tags = pub.valid(codec, 200, seed=34)
    real_append = RecordAccumulator.append

    unset = object()

    def three_values(  # the same parameter names: the old guard would not notice
        self: Any,
        tp: Any,
        timestamp_ms: Any,
        key: Any,
        value: Any,
        headers: Any,
        now: Any = None,
        abort_on_new_batch: Any = unset,
    ) -> Any:
        # kafka-python's own send() (it passes abort_on_new_batch) keeps working, as upstream
        # adapted it; a caller of the old shape (the fast path) gets three values
        if abort_on_new_batch is unset:
            return real_append(self, tp, timestamp_ms, key, value, headers, now)[:3]
        return real_append(self, tp, timestamp_ms, key, value, headers, now, abort_on_new_batch)

    monkeypatch.setattr(RecordAccumulator, "append", three_values)
    reader = OutputReader(settings, pub)
    with (
        caplog.at_level(logging.WARNING, logger="gateway.kafka.append"),
        RouterRun(settings) as run,
    ):
        reader.wait_for(tags, timeout_s=60)
        assert run.thread.is_alive()
        assert run.app.router is not None
        assert not run.app.router.producer.fast_path
        assert run.metric("greenchannel_router_transactions_total", result="aborted") == 0
    assert "returned 3 values, expected 4" in caplog.text
    assert all(len(reader.outcomes.routed.get(tag, [])) == 1 for tag in tags)
    reader.close()
    pub.close()


def test_the_same_batch_aborted_again_and_again_turns_liveness_red(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic_factory.create_all()
    settings = router_settings(
        settings_factory,
        topic_factory.prefix,
        router={"max_batch_aborts": 3, "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
    )
    codec = Codec(settings.codec)
    pub = Publisher(settings)
    pub.valid(codec, 5, seed=35)
    real_commit = Producer.commit
    broken = {"on": True}

    def failing_commit(self: Producer) -> None:
        if broken["on"]:
            raise KafkaUnavailable("commit_transaction: KafkaTimeoutError (injected)")
        real_commit(self)

    monkeypatch.setattr(Producer, "commit", failing_commit)
    with RouterRun(settings) as run:
        status = run.app.liveness.status
        _wait(lambda: "router" in status() and not status()["router"].ok, 60, "liveness red")
        assert "aborted" in (run.app.liveness.status()["router"].reason or "")
        assert run.app.ready() == {"router": False}
        assert run.thread.is_alive()  # it keeps trying; the orchestrator decides
        broken["on"] = False
        _wait(run.app.liveness.healthy, 30, "liveness to recover after a commit")
        assert run.app.ready() == {"router": True}
    pub.close()
