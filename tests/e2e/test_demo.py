"""``make demo`` end to end: the demo as a real process against the test broker.

Each run gets its own topic prefix, free ports for the simulator (``--port-base 0``) and the
gateway's ``/metrics``, and a temporary working directory (``var/demo``, ``var/bureaus/tls``).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from gateway.cities import GREEN_CHANNEL_KEYS
from gateway.config import KafkaSettings
from gateway.dev.broker import free_ports
from gateway.dev.demo_view import Status, Style, frame, parse_metrics
from gateway.kafka.admin import Admin
from gateway.ops.metrics import Metrics

CITIES = list(GREEN_CHANNEL_KEYS)


class DemoRun:
    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.metrics_port = free_ports(1)[0]
        self.workdir = workdir
        self.env = os.environ | {
            "GREENCHANNEL_BOOTSTRAP_SERVERS": bootstrap,
            "GREENCHANNEL_TOPICS__PREFIX": self.prefix,
            "GREENCHANNEL_OBSERVABILITY__PORT": str(self.metrics_port),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("GREENCHANNEL_CONFIG", None)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gateway.dev.demo", "--no-broker", "--port-base", "0", *args]


@pytest.fixture
def demo(kafka_bootstrap: str, tmp_path: Path) -> Iterator[DemoRun]:
    run = DemoRun(kafka_bootstrap, tmp_path)
    yield run
    with Admin(KafkaSettings(bootstrap_servers=kafka_bootstrap)) as admin:
        admin.wait_ready(30)
        admin.delete_topics([n for n in admin.list_topics() if n.startswith(run.prefix)])


def _total_delivered(output: str) -> int:
    match = re.search(r"^total\s+([\d,]+)", output, re.MULTILINE)
    assert match, output
    return int(match.group(1).replace(",", ""))


def _gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def _session_members(sid: int) -> list[int]:
    """Live processes of session ``sid`` (everything a process started in it)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="ascii").rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@pytest.mark.slow
def test_demo_runs_and_reports_every_city(demo: DemoRun) -> None:
    result = subprocess.run(
        demo.command("--duration", "25"),
        cwd=demo.workdir,
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(
        r"^city\s+bureau \(simulated\)\s+delivered\s+retries\s+dead letters", output, re.M
    )
    for city in CITIES:
        assert re.search(rf"^{city}\s+\S.*\s(closed|half-open|open)\s", output, re.M), city
    assert _total_delivered(output) > 0, output
    assert f"http://127.0.0.1:{demo.metrics_port}/metrics" in output
    assert re.search(r"^metrics\s+http://127\.0\.0\.1:\d+/metrics$", output, re.M), output
    assert "published" in output and "dead-lettered complaints" in output
    assert "stopping the gateway (SIGTERM, draining) … exited with 0" in output
    assert output.rstrip().endswith("demo stopped")
    assert (demo.workdir / "var/demo/gateway.log").stat().st_size > 0
    # the case lifecycle view: the keeper's table and the closing line
    assert re.search(
        r"^city\s+accepted\s+negotiation\s+mediation\s+closed\s+returned", output, re.M
    )
    assert re.search(
        r"^cases: [\d,]+ closed, [\d,]+ returned, [\d,]+ handling results", output, re.M
    )
    assert "stopping the case keeper … exited with 0" in output


def test_sigint_stops_everything_the_demo_started(demo: DemoRun) -> None:
    proc = subprocess.Popen(
        demo.command("--duration", "0"),
        cwd=demo.workdir,
        env=demo.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    captured: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    gateway_pid = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "".join(captured)
                continue
            captured.append(line)
            if match := re.match(r"gateway\s+pid (\d+):", line):
                gateway_pid = int(match.group(1))
            if line.startswith("publishing"):
                break
        else:
            pytest.fail("the demo did not start:\n" + "".join(captured))
        assert gateway_pid is not None and not _gone(gateway_pid)
        # live until a progress line reports published complaints (deliveries under way)
        progress = re.compile(r"^\[\s*\d+s\] published [1-9][\d,]*")
        deadline = time.monotonic() + 60
        while not any(progress.match(line) for line in captured):
            assert time.monotonic() < deadline, "no progress line:\n" + "".join(captured)
            try:
                captured.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "".join(captured)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        reader.join(10)
        assert proc.stdout is not None
        proc.stdout.close()
    while not lines.empty():
        captured.append(lines.get())
    output = "".join(captured)
    assert "stopped by SIGINT" in output, output
    assert "stopping the gateway (SIGTERM, draining) … exited with 0" in output, output
    assert "bureau simulator stopped" in output
    assert re.search(r"^\[\s*\d+s\] published [\d,]+", output, re.M), output  # progress lines
    assert _gone(gateway_pid), f"gateway pid {gateway_pid} survived the demo"
    assert _session_members(proc.pid) == []
    assert _session_members(gateway_pid) == []


def test_view_shows_every_city_from_a_real_scrape() -> None:
    """The frame from a genuine /metrics exposition (no processes needed)."""
    metrics = Metrics()
    for city in CITIES:
        metrics.on_breaker(city, "closed")
        metrics.on_rate_changed(city, 20)
        metrics.on_paused(city, False)
    metrics.on_delivered("wuhu", 0.2)
    metrics.on_retry("hefei", "server_error")
    metrics.on_breaker("hefei", "open")
    metrics.on_paused("hefei", True)
    metrics.on_delivery_dead_lettered("wuhu", "rejected")
    metrics.on_routed("consumer-protection", "", "safety")
    metrics.on_router_dead_lettered("undecodable")
    metrics.watch_oldest(lambda: {"hefei": 12.5, "wuhu": 0.0})
    scrape = parse_metrics(generate_latest(metrics.registry).decode())
    assert scrape.cities["hefei"].breaker == "open" and scrape.cities["hefei"].paused
    assert scrape.cities["hefei"].oldest_s == 12.5
    assert scrape.delivered == 1 and scrape.delivery_dead_letters == 1
    assert scrape.routed == {"consumer-protection": 1} and scrape.router_dead_letters == 1
    status = Status(
        elapsed_s=10, duration_s=60, published=500, majors=70, junk=2, rate=50, count=None,
        bureaus={"hefei": "5xx 30%"}, metrics_url="http://127.0.0.1:9308/metrics",
    )  # fmt: skip
    text = "\n".join(frame(scrape, CITIES, status, Style(color=False, unicode=False)))
    for city in CITIES:
        assert re.search(rf"^{city}\s", text, re.M), text
    assert re.search(r"^hefei\s+5xx 30%\s+0\s+1\s+0\s+open\s+paused\s+20\s+12\.5s$", text, re.M)
    assert "00:10 / 01:00  [####" in text
    assert "metrics    http://127.0.0.1:9308/metrics" in text
