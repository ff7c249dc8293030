"""``greenchannel run`` as a real process: probes, SIGTERM drain, restart without loss.

The router and the delivery engine run in one ``greenchannel run`` subprocess against the real
broker; the bureau simulator runs in this process on ephemeral ports. Complaints enter at the
complaints topic (router -> escalation topics -> bureaus), exactly as in production.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.app import EXIT_DRAIN_TIMEOUT, EXIT_OK
from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.dev.broker import LocalBroker
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.samples import SampleFactory
from gateway.kafka.clients import Consumer
from gateway.topics import Topics
from tests.conftest import TopicFactory
from tests.helpers import read_all
from tests.integration.delivery_kit import accepted_ids, wait_until
from tests.integration.run_kit import (
    GatewayRun,
    Publisher,
    expected_escalations,
    run_config,
)
from tests.integration.test_router import department_topics

pytestmark = pytest.mark.integration
DRAIN_MARGIN_S = 3.0
"""Allowed beyond --shutdown-timeout: interpreter exit, client close, process reaping."""


@pytest.fixture
def settings(settings_factory: Callable[..., Settings], topic_factory: TopicFactory) -> Settings:
    topic_factory.create_all()
    return settings_factory()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayRun]]:
    made: list[GatewayRun] = []

    def make(config: Path, shutdown_timeout_s: float = 10.0) -> GatewayRun:
        run = GatewayRun(config, tmp_path / "run.log", shutdown_timeout_s)
        made.append(run)
        return run

    yield make
    for run in made:
        run.kill()


def assert_routed_exactly_once(settings: Settings, count: int) -> None:
    t = Topics(settings.topics.prefix)
    routed = read_all(
        settings.kafka.bootstrap_servers, department_topics(t), expect=count, timeout_s=120
    )
    keys = Counter(r.key for r in routed)
    assert not [k for k, n in keys.items() if n > 1], "a complaint was routed twice"
    assert len(keys) == count, f"{count - len(keys)} complaints not routed"


def assert_accepted_exactly_once(sim: BureauSimulator, expected: dict[str, str]) -> None:
    for city in sim.names():
        keys = accepted_ids(sim, city)
        assert len(keys) == len(set(keys)), f"{city}: a case was opened twice"
        assert set(keys) == {e for e, c in expected.items() if c == city}, city


def receipts(settings: Settings) -> list[dict[str, object]]:
    codec = Codec(settings.codec)
    topic = Topics(settings.topics.prefix).receipts
    records = read_all(settings.kafka.bootstrap_servers, [topic], idle_s=2)
    return [codec.decode_as("receipt", r.value or b"") for r in records]


def all_accepted(sim: BureauSimulator, expected: dict[str, str]) -> bool:
    want = Counter(expected.values())
    return all(len(accepted_ids(sim, c)) >= n for c, n in want.items())


def test_sigterm_mid_stream_with_a_slow_bureau_drains_in_time_and_restart_loses_nothing(
    settings: Settings,
    sim: BureauSimulator,
    tls_dir: Path,
    tmp_path: Path,
    gateway: Callable[..., GatewayRun],
) -> None:
    slow = "wuhu"
    config = run_config(tmp_path / "gc.yaml", settings, sim, tls_dir, **{slow: {"timeout_s": 5.0}})
    sim.city(slow).set_faults(latency_ms=1500)
    samples = list(SampleFactory(seed=41, major_share=0.2).complaints(2400))
    expected = expected_escalations(settings, samples)
    assert Counter(expected.values())[slow] >= 5
    run = gateway(config, shutdown_timeout_s=10.0).start()
    run.wait_ready()
    publisher = Publisher(settings, samples, rate=150).start()  # a 16 s stream
    assert wait_until(lambda: len(accepted_ids(sim, "nanjing")) >= 3, 30), run.tail()
    assert wait_until(lambda: sim.city(slow).counters().get("requests", 0) >= 4, 30)
    sigterm_at = time.time()
    stopped = run.terminate()
    accepted_before = sum(len(accepted_ids(sim, c)) for c in sim.names())
    assert stopped.code == EXIT_OK, run.tail()
    assert stopped.seconds < run.shutdown_timeout_s + DRAIN_MARGIN_S, stopped
    assert publisher.thread.is_alive(), f"SIGTERM came after the stream ended ({publisher.error})"
    in_flight = [a for a in sim.city(slow).arrivals() if sigterm_at - 1.5 <= a.at < sigterm_at]
    assert in_flight, "no request to the slow bureau was in flight at SIGTERM"
    messages = [e["message"] for e in run.log_entries()]
    assert "signal SIGTERM: draining" in messages

    sim.city(slow).set_faults(latency_ms=300)
    run.start().wait_ready()
    publisher.join()
    assert wait_until(lambda: all_accepted(sim, expected), 120), run.tail()
    assert_routed_exactly_once(settings, len(samples))
    assert_accepted_exactly_once(sim, expected)
    second = run.terminate()
    assert second.code == EXIT_OK, run.tail()
    # The requests in flight at SIGTERM were answered and recorded during the drain.
    drained = [
        r
        for r in receipts(settings)
        if r["city"] == slow
        and sigterm_at * 1000 <= int(r["completed_at"]) <= (sigterm_at + stopped.seconds) * 1000
    ]
    assert drained, "no in-flight delivery finished during the drain"
    duplicates = sum(sim.city(c).counters().get("duplicates", 0) for c in sim.names())
    print(
        f"drain {stopped.seconds:.2f}s (deadline {run.shutdown_timeout_s:.0f}s), "
        f"{accepted_before}/{len(expected)} accepted before SIGTERM, "
        f"{len(drained)} in-flight finished while draining, {duplicates} redeliveries answered "
        f"'duplicate' after restart, idle drain {second.seconds:.2f}s"
    )


def test_drain_beyond_the_deadline_exits_non_zero_and_restart_loses_nothing(
    settings: Settings,
    sim: BureauSimulator,
    tls_dir: Path,
    tmp_path: Path,
    gateway: Callable[..., GatewayRun],
) -> None:
    hung = "hefei"
    config = run_config(tmp_path / "gc.yaml", settings, sim, tls_dir, **{hung: {"timeout_s": 60.0}})
    sim.city(hung).set_faults(hang=True)
    samples = list(SampleFactory(seed=42, major_share=0.3).complaints(600))
    expected = expected_escalations(settings, samples)
    assert Counter(expected.values())[hung] >= 3
    run = gateway(config, shutdown_timeout_s=1.0).start()
    run.wait_ready()
    Publisher(settings, samples, rate=1000).start().join()
    assert wait_until(lambda: sim.city(hung).counters().get("hung", 0) >= 1, 30), run.tail()
    stopped = run.terminate()
    assert stopped.code == EXIT_DRAIN_TIMEOUT, run.tail()
    assert stopped.seconds < run.shutdown_timeout_s + DRAIN_MARGIN_S, stopped
    assert any("drain did not finish" in e["message"] for e in run.log_entries())

    sim.city(hung).set_faults(hang=False)
    run.start().wait_ready()
    assert wait_until(lambda: all_accepted(sim, expected), 120), run.tail()
    assert_routed_exactly_once(settings, len(samples))
    assert_accepted_exactly_once(sim, expected)
    assert run.terminate().code == EXIT_OK
    print(f"drain cut at {stopped.seconds:.2f}s (deadline {run.shutdown_timeout_s:.0f}s)")


def test_readyz_waits_for_partitions_and_healthz_ignores_a_bureau_outage(
    settings: Settings,
    sim: BureauSimulator,
    tls_dir: Path,
    tmp_path: Path,
    gateway: Callable[..., GatewayRun],
) -> None:
    config = run_config(tmp_path / "gc.yaml", settings, sim, tls_dir)
    t = Topics(settings.topics.prefix)
    # A member that joined the delivery group and then stops polling holds up the next
    # rebalance: the gateway cannot get its partitions until this member leaves.
    blocker = Consumer(
        settings.kafka,
        group_id=f"{settings.topics.prefix}deliver",
        topics=[t.escalations(c) for c in settings.router.green_cities],
    )
    try:
        assert wait_until(lambda: bool(blocker.poll(100) or blocker.assignment()), 30)
        run = gateway(config).start()
        assert wait_until(lambda: run.get("/healthz")[0] == 200, 30), run.tail()
        time.sleep(2)  # an observation window: /readyz must *stay* 503 while the group is held
        status, body = run.json("/readyz")
        assert status == 503, body
        assert body["components"]["deliver"] is False
        assert run.get("/healthz")[0] == 200
    finally:
        blocker.close()
    run.wait_ready(60)
    status, body = run.json("/readyz")
    assert status == 200 and body["components"] == {"router": True, "deliver": True}

    sim.city("beijing").set_faults(outage=True)
    samples = list(SampleFactory(seed=43, major_share=0.5).complaints(200))
    expected = expected_escalations(settings, samples)
    Publisher(settings, samples, rate=500).start().join()
    paused = 'greenchannel_city_paused{city="beijing"} 1.0'
    healthz: list[int] = []

    def beijing_paused() -> bool:  # alive all along, until the breaker paused the city
        healthz.append(run.get("/healthz")[0])
        return paused in run.get("/metrics")[1]

    assert wait_until(beijing_paused, 60, every_s=0.5), run.tail()
    assert set(healthz) == {200}, (healthz, run.tail())
    sim.city("beijing").reset_faults()
    assert wait_until(lambda: all_accepted(sim, expected), 60), run.tail()
    assert run.terminate().code == EXIT_OK


def test_healthz_stays_up_while_the_broker_is_frozen_within_the_liveness_threshold(
    settings: Settings,
    sim: BureauSimulator,
    tls_dir: Path,
    tmp_path: Path,
    gateway: Callable[..., GatewayRun],
    local_broker: LocalBroker,
) -> None:
    config = run_config(tmp_path / "gc.yaml", settings, sim, tls_dir)
    samples = list(SampleFactory(seed=44, major_share=0.3).complaints(600))
    expected = expected_escalations(settings, samples)
    run = gateway(config).start()
    run.wait_ready()
    publisher = Publisher(settings, samples, rate=100).start()
    # freeze mid-stream: once complaints are routed and delivered
    assert wait_until(lambda: sum(len(accepted_ids(sim, c)) for c in sim.names()) > 0, 60)
    local_broker.freeze()
    statuses: list[int] = []
    oldest_beat = 0.0
    try:
        frozen_until = time.monotonic() + 8
        while time.monotonic() < frozen_until:
            status, body = run.json("/healthz")
            statuses.append(status)
            oldest_beat = max([oldest_beat, *body.get("heartbeat_age_s", {}).values()])
            time.sleep(0.5)
    finally:
        local_broker.thaw()
    assert set(statuses) == {200}, (statuses, run.tail())
    print(f"broker frozen 8 s: /healthz 200 throughout, oldest heartbeat {oldest_beat:.1f}s")
    publisher.join()
    assert wait_until(lambda: all_accepted(sim, expected), 120), run.tail()
    assert_routed_exactly_once(settings, len(samples))
    assert run.terminate().code == EXIT_OK
