"""Shared benchmark plumbing: a broker, process sampling, committed-offset progress, the report."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gateway.config import KafkaSettings
from gateway.dev.broker import BrokerSettings, LocalBroker, free_ports
from gateway.kafka.admin import Admin

REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "docs" / "benchmarks.md"


_BROKER_PIDS: dict[str, int] = {}


def broker_pid(bootstrap: str) -> int | None:
    """The pid of the local broker :func:`broker` started for ``bootstrap`` (None: external)."""
    return _BROKER_PIDS.get(bootstrap)


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """GREENCHANNEL_BOOTSTRAP_SERVERS if set, else a fresh local broker for this run."""
    external = os.environ.get("GREENCHANNEL_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    port, cport = free_ports(2)
    with tempfile.TemporaryDirectory(prefix="gc-bench-") as tmp:
        b = LocalBroker(
            BrokerSettings(
                port=port, controller_port=cport, data_dir=Path(tmp), heap="-Xms512m -Xmx1g"
            )
        )
        b.start()
        if b.pid is not None:
            _BROKER_PIDS[b.bootstrap] = b.pid
        try:
            yield b.bootstrap
        finally:
            _BROKER_PIDS.pop(b.bootstrap, None)
            b.stop()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def gateway(args: list[str], config: Path, log: Path) -> subprocess.Popen[bytes]:
    # one process unless the args say --processes (run/route start one per core by default)
    env = {"GREENCHANNEL_PROCESS__MEMBERS": "1"} | os.environ | {"GREENCHANNEL_CONFIG": str(config)}
    env.pop("GREENCHANNEL_BOOTSTRAP_SERVERS", None)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and of its children it waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


_ADMINS: dict[str, Admin] = {}


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on ``topic`` (0 while the group does not exist)."""
    admin = _ADMINS.get(bootstrap)
    if admin is None:
        admin = _ADMINS[bootstrap] = Admin(KafkaSettings(bootstrap_servers=bootstrap))
    try:
        offsets = admin.group_offsets(group)
    except Exception:  # the coordinator may not know the group yet
        return 0
    return sum(offset for (name, _), offset in offsets.items() if name == topic)


@dataclass(frozen=True)
class Progress:
    """A consumer group's committed progress through a run, with the process's CPU time."""

    first_s: float
    """monotonic time the first commit was seen"""
    first_done: int
    """records committed by then"""
    first_cpu_s: float
    end_s: float
    end_done: int
    end_cpu_s: float

    @property
    def rate(self) -> float:
        """Records per second between the first and the last commit seen."""
        return (self.end_done - self.first_done) / (self.end_s - self.first_s)

    @property
    def cpu_ms_per_1000(self) -> float:
        """Process CPU per 1,000 records over the same window (start-up excluded)."""
        return (self.end_cpu_s - self.first_cpu_s) / (self.end_done - self.first_done) * 1e6


def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    target: int,
    timeout_s: float,
    proc: subprocess.Popen[bytes],
) -> Progress:
    """Wait until the group committed ``target`` records of ``topic``, sampling the committed
    total every 0.1 s; the window starts at the first commit, so start-up is not counted."""
    first: tuple[float, int, float] | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = committed_total(bootstrap, group, topic)
        now = time.monotonic()
        if done > 0 and first is None:
            first = (now, done, cpu_seconds(proc.pid))
        if done >= target and first is not None and done > first[1]:
            return Progress(*first, now, done, cpu_seconds(proc.pid))
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"{group}: committed {committed_total(bootstrap, group, topic)} of {target}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average at start {load[0]:.1f}"
    )


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between markers for ``name`` in docs/benchmarks.md."""
    REPORT.parent.mkdir(exist_ok=True)
    text = (
        REPORT.read_text(encoding="utf-8")
        if REPORT.exists()
        else (
            "# Benchmarks\n\nFigures written by the scripts under `bench/`; every ratio compares runs "
            "made in the same invocation on the same broker. The machine is shared and noisy: "
            "compare ratios, not absolute numbers across runs.\n"
        )
    )
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{begin}\n_Last run: {stamp}; {machine()}._\n\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text, encoding="utf-8")
