"""``greenchannel route --processes 2`` as a real supervisor with two member processes: a member
SIGKILLed mid-stream is restarted, the other keeps committing without a rebalance (static
membership), and every complaint is routed exactly once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import Settings
from gateway.dev.broker import port_block
from gateway.dev.samples import SampleFactory
from tests.conftest import TopicFactory
from tests.helpers import (
    assert_exactly_once,
    committed,
    escalated_keys,
    gateway_process,
    wait_until,
    write_config,
)
from tests.integration.run_kit import GatewayRun, Publisher

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(settings_factory: Callable[..., Settings], topic_factory: TopicFactory) -> Settings:
    topic_factory.create_all()
    return settings_factory()


@pytest.fixture
def supervised(settings: Settings, tmp_path: Path) -> Iterator[GatewayRun]:
    prefix = settings.topics.prefix
    config = write_config(
        tmp_path / "gc.yaml",
        {
            "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
            "topics": {"prefix": prefix},
            "router": {"group_id": f"{prefix}router", "transactional_id_prefix": f"{prefix}tx"},
            "observability": {"port": 0, "log_format": "json", "log_level": "INFO"},
        },
    )
    run = GatewayRun(config, tmp_path / "route.log")
    run.port = port_block(3)  # the supervisor's port, then its members' on port + 1 and + 2
    args = ["route", "--processes", "2", "--metrics-port", str(run.port)]
    run.proc = gateway_process([*args, "--shutdown-timeout", "10"], config, run.log)
    yield run
    run.kill()


def consumed(run: GatewayRun, member: str) -> float:
    """The member's committed complaints (greenchannel_router_consumed_total), from the
    supervisor's merged /metrics; -1 when that member is not in the scrape."""
    for family in text_string_to_metric_families(run.get("/metrics")[1]):
        if family.name == "greenchannel_router_consumed":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels.get("member") == member:
                    return s.value
    return -1.0


def assignments_after(run: GatewayRun, since: float, member: int) -> list[str]:
    return [
        e["message"]
        for e in run.log_entries()
        if e.get("member") == member
        and e["message"] in ("router: partitions assigned", "router: partitions revoked")
        and datetime.fromisoformat(e["time"]).timestamp() > since
    ]


def test_a_killed_member_is_restarted_the_other_keeps_committing_and_nothing_is_lost(
    settings: Settings, supervised: GatewayRun
) -> None:
    run = supervised
    group = f"{settings.topics.prefix}router"
    samples = list(SampleFactory(seed=61, major_share=0.2).complaints(2400))
    run.wait_ready(60)
    status, health = run.json("/healthz")
    assert status == 200, health
    victim_pid = health["members"]["1"]["pid"]
    publisher = Publisher(settings, samples, rate=200).start()  # a 12 s stream
    bootstrap = settings.kafka.bootstrap_servers
    assert wait_until(lambda: committed(bootstrap, group) >= 400, 30), run.tail()
    assert wait_until(lambda: consumed(run, "1") > 0 and consumed(run, "0") > 0, 15), run.tail()

    killed_at = time.time()
    os.kill(victim_pid, signal.SIGKILL)
    before = consumed(run, "0")
    # member 1's new process up: the supervisor restarted it
    assert wait_until(lambda: run.json("/healthz")[1]["members"]["1"]["pid"] != victim_pid, 10)
    rose_meanwhile: list[float] = []

    def member_1_back() -> bool:  # ready again; meanwhile note member 0's commits
        rose_meanwhile.append(consumed(run, "0"))
        return run.json("/readyz")[1]["members"]["1"]["ready"]

    assert wait_until(member_1_back, 30, every_s=0.2), run.tail()
    back_after = time.time() - killed_at
    assert max(rose_meanwhile) > before, "member 0 committed nothing while member 1 restarted"
    publisher.join()
    assert_exactly_once(settings, len(samples), escalated_keys(settings, samples), timeout_s=60)
    _, health = run.json("/healthz")
    assert health["members"]["1"]["restarts"] == 1 and health["members"]["1"]["last_exit"] == -9
    assert health["members"]["0"]["restarts"] == 0
    # static membership: member 0 was never rebalanced by member 1's death and return
    assert assignments_after(run, killed_at, 0) == [], run.tail()
    stopped = run.terminate()
    assert stopped.code == 0, run.tail()
    print(
        f"member 1 SIGKILLed: ready again after {back_after:.1f}s; member 0 committed "
        f"{max(rose_meanwhile) - before:.0f} complaints meanwhile; drain {stopped.seconds:.1f}s"
    )
