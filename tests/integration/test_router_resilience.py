"""Exactly-once routing under crashes, broker restarts, scaling and a frozen broker.

Routers run as real ``greenchannel route`` processes against the real broker; a publisher
thread streams complaints while the test kills, restarts, adds and removes routers. At the end
every complaint must be in its department topic exactly once (read_committed), and every
major complaint from a green-channel city must have exactly one escalation (none lost, none
doubled). Steps wait on what they need (the router's committed progress, its partitions),
never on a fixed sleep.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.dev.broker import LocalBroker
from gateway.dev.samples import Pacer, Sample, SampleFactory, publish
from gateway.kafka.clients import Producer
from gateway.ops.watchdog import EXIT_STUCK
from gateway.topics import Topics
from tests.conftest import TopicFactory
from tests.helpers import (
    assert_exactly_once,
    committed,
    escalated_keys,
    gateway_process,
    read_all,
    routed_topics,
    stop_process,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Fleet:
    """Router processes under test, restarted like a supervisor would."""

    def __init__(self, tmp_path: Path, settings: Settings, **router: object) -> None:
        self.tmp = tmp_path
        prefix = settings.topics.prefix
        self.config = write_config(
            tmp_path / "gc.yaml",
            {
                "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
                "topics": {"prefix": prefix},
                "observability": {"port": 0, "log_format": "text"},
                "router": {"group_id": f"{prefix}router", "transactional_id_prefix": f"{prefix}tx"}
                | dict(router),
            },
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.exits: list[int] = []
        self.bootstrap = settings.kafka.bootstrap_servers
        self.group = f"{prefix}router"

    def start(self, instance: str) -> None:
        self.procs[instance] = gateway_process(
            ["route", "--instance", instance], self.config, self.tmp / f"router-{instance}.log"
        )

    def kill(self, instance: str, sig: int = signal.SIGKILL) -> int:
        code = stop_process(self.procs.pop(instance), sig)
        self.exits.append(code)
        return code

    def supervise(self) -> int:
        """Restart routers that exited; return how many were restarted."""
        restarted = 0
        for instance, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.exits.append(int(proc.returncode))
                self.start(instance)
                restarted += 1
        return restarted

    def stop_all(self) -> None:
        for instance in list(self.procs):
            self.kill(instance, signal.SIGTERM)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-3000:] for p in self.tmp.glob("router-*.log")
        )

    def assignments(self, instance: str) -> int:
        """How often router ``instance`` (all its runs) got partitions assigned."""
        log = self.tmp / f"router-{instance}.log"
        return log.read_text(errors="replace").count("partitions assigned") if log.exists() else 0

    def progress(self) -> int:
        """Complaints the routers have committed (the group's offsets)."""
        return committed(self.bootstrap, self.group)

    def wait_assigned(self, instance: str, times: int = 1, timeout_s: float = 60) -> None:
        assert wait_until(lambda: self.assignments(instance) >= times, timeout_s), self.logs()

    def wait_progress(self, since: int, done: int, timeout_s: float = 60) -> int:
        """Wait until the routers committed more than ``since`` (or all ``done``); the new
        progress."""
        now = [since]

        def moved() -> bool:
            now[0] = self.progress()
            return now[0] > since or now[0] >= done

        assert wait_until(moved, timeout_s, every_s=0.2), (since, self.logs()[-2000:])
        return now[0]


def stream(
    settings: Settings, count: int, rate: float, seed: int
) -> tuple[threading.Thread, set[bytes]]:
    """Publish ``count`` complaints at ``rate``/s from a thread; returns the thread and the keys
    of the complaints the router must escalate."""
    samples: list[Sample] = list(SampleFactory(seed=seed, major_share=0.1).complaints(count))

    def run() -> None:
        producer = Producer(settings.kafka)
        publish(
            producer,
            Codec(settings.codec),
            Topics(settings.topics.prefix).complaints,
            iter(samples),
            pacer=Pacer(rate),
        )
        producer.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, escalated_keys(settings, samples)


def test_sigkill_the_router_repeatedly_while_20000_complaints_flow(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic_factory.create_all()
    settings = settings_factory()
    fleet = Fleet(tmp_path, settings, static_membership=True)
    fleet.start("0")
    publisher, escalated = stream(settings, 20_000, 1_250, seed=21)
    kills = 0
    progress = 0
    try:
        while publisher.is_alive() or kills < 5:
            # each kill lands after the (restarted) router committed work of its own
            progress = fleet.wait_progress(progress, done=20_000)
            fleet.kill("0")
            kills += 1
            fleet.start("0")
        publisher.join(120)
        assert_exactly_once(settings, 20_000, escalated)
    finally:
        fleet.stop_all()
    assert kills >= 5
    assert all(code == -signal.SIGKILL for code in fleet.exits[:kills]), fleet.exits


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    tmp_path: Path,
    local_broker: LocalBroker,
) -> None:
    topic_factory.create_all()
    settings = settings_factory()
    fleet = Fleet(tmp_path, settings, static_membership=True)
    fleet.start("0")
    publisher, escalated = stream(settings, 10_000, 1_000, seed=22)
    try:
        fleet.wait_progress(0, done=10_000)  # mid-stream: the router is routing
        local_broker.restart()
        deadline = time.monotonic() + 180
        while publisher.is_alive() and time.monotonic() < deadline:
            fleet.supervise()  # a supervisor's periodic check
            publisher.join(1)
        publisher.join(60)
        fleet.supervise()
        assert_exactly_once(settings, 10_000, escalated)
    finally:
        fleet.stop_all()


def test_routers_joining_and_leaving_share_work_without_loss_or_duplicates(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic_factory.create_all()
    settings = settings_factory()
    fleet = Fleet(tmp_path, settings)
    fleet.start("0")
    fleet.start("1")
    publisher, escalated = stream(settings, 20_000, 1_500, seed=23)
    try:
        fleet.wait_assigned("0")
        fleet.wait_assigned("1")
        progress = fleet.wait_progress(0, done=20_000)
        fleet.start("2")  # join
        fleet.wait_assigned("2")
        progress = fleet.wait_progress(progress, done=20_000)
        assert fleet.kill("0", signal.SIGTERM) == 0  # graceful leave
        progress = fleet.wait_progress(progress, done=20_000)
        assigned_before = fleet.assignments("0")  # the first run's, rebalances included
        fleet.start("0")  # rejoin
        fleet.wait_assigned("0", times=assigned_before + 1)
        fleet.kill("1", signal.SIGKILL)  # crash
        publisher.join(120)
        assert_exactly_once(settings, 20_000, escalated)
    finally:
        fleet.stop_all()
    for instance in ("0", "1", "2"):  # every member really took part
        log = (tmp_path / f"router-{instance}.log").read_text(errors="replace")
        assert "partitions assigned" in log, instance


def test_frozen_broker_makes_a_stuck_router_exit_non_zero(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    tmp_path: Path,
    local_broker: LocalBroker,
) -> None:
    """A transaction blocked on a frozen broker trips the watchdog (exit 3, within seconds).

    The router works through a backlog when the broker freezes: each poll then returns records
    fetched ahead, so a transaction is in flight or about to start, and its first broker call
    blocks. (A freeze that lands while the router idles in a fetch blocks no call; that case
    has its own test below.) Should the backlog be gone anyway, on a very slow machine, the test
    thaws, adds a backlog and freezes again.
    """
    topic_factory.create_all()
    settings = settings_factory()
    expected = 30_000
    backlog, escalated = stream(settings, expected, 50_000, seed=24)
    backlog.join(180)
    fleet = Fleet(tmp_path, settings, watchdog_s=5.0)
    fleet.start("0")
    proc = fleet.procs["0"]
    try:
        fleet.wait_assigned("0")
        fleet.wait_progress(0, done=expected)  # into the backlog: a transaction committed
        code: int | None = None
        missed = 0
        while code is None and missed < 3:
            local_broker.freeze()
            frozen_at = time.monotonic()
            try:
                code = _exit_code_within(proc, 20)
            finally:
                local_broker.thaw()
            exited_after = time.monotonic() - frozen_at
            if code is None:
                missed += 1
                more, more_escalated = stream(settings, 10_000, 50_000, seed=240 + missed)
                more.join(180)
                expected += 10_000
                escalated |= more_escalated
        assert code == EXIT_STUCK, (missed, fleet.logs()[-2000:])
        assert exited_after < 20
        assert "blocked for" in fleet.logs()
        fleet.procs.pop("0")
        fleet.start("0")  # the supervisor's restart
        assert_exactly_once(settings, expected, escalated)
    finally:
        fleet.stop_all()


def test_router_idle_through_a_broker_freeze_carries_on_after_the_thaw(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    tmp_path: Path,
    local_broker: LocalBroker,
) -> None:
    """No call is blocked while the router waits in a fetch: a freeze longer than the watchdog
    deadline must not kill it, and it routes what arrives after the thaw."""
    topic_factory.create_all()
    settings = settings_factory()
    fleet = Fleet(tmp_path, settings, watchdog_s=5.0)
    fleet.start("0")
    proc = fleet.procs["0"]
    try:
        first, escalated = stream(settings, 2_000, 1_000, seed=25)
        first.join(60)
        read_all(
            settings.kafka.bootstrap_servers,
            routed_topics(Topics(settings.topics.prefix)),
            expect=2_000,
            timeout_s=120,
            idle_s=3,
        )
        local_broker.freeze()
        try:
            assert _exit_code_within(proc, 12) is None, fleet.logs()[-2000:]
        finally:
            local_broker.thaw()
        second, second_escalated = stream(settings, 2_000, 1_000, seed=26)
        second.join(120)
        assert_exactly_once(settings, 4_000, escalated | second_escalated)
        assert proc.poll() is None
        assert "blocked for" not in fleet.logs()
    finally:
        fleet.stop_all()


def _exit_code_within(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("lost", "major complaints not escalated"),
        ("doubled", "escalations published more than once"),
        ("extra", "escalations for complaints that are not major"),
    ],
)
def test_the_exactly_once_check_catches_escalations_lost_doubled_or_extra(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    fault: str,
    message: str,
) -> None:
    """The check itself: a run whose complaints all arrived once but whose escalations are
    wrong must fail it (the check of old only looked for duplicates)."""
    topic_factory.create_all()
    settings = settings_factory()
    t = Topics(settings.topics.prefix)
    keys = [f"c{i}".encode() for i in range(20)]
    escalated = set(keys[:5])
    written = {"lost": keys[:4], "doubled": [*keys[:5], keys[0]], "extra": keys[:6]}[fault]
    producer = Producer(settings.kafka)
    try:
        for key in keys:
            producer.send(routed_topics(t)[0], b"complaint", key=key)
        for key in written:
            producer.send(t.escalations("wuhu"), b"escalation", key=key)
        producer.flush(30)
    finally:
        producer.close()
    with pytest.raises(AssertionError, match=message):
        assert_exactly_once(settings, len(keys), escalated, timeout_s=10)
