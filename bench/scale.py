"""Scaling benchmark: `greenchannel route` as one process against N members under a supervisor.

Both consume the same COUNT complaints from one 12-partition topic with fresh consumer groups,
in interleaved rounds (1, N, 1, N, ...: the machine's load drifts). What counts is the **whole
run**: from launching the command to the group having committed every record, start-up (imports,
producers, joins) and rebalances included. The group's committed offsets are sampled every
0.1 s; the longest time without any commit after the first one shows what joins cost. CPU is
that of the whole process tree (supervisor and members) over the whole run.

Then one restart round: N members, and once a quarter of the input is committed one member is
SIGKILLed. Measured: the longest commit gap of the other members' partitions around the kill,
how long the killed member's partitions waited (the supervisor's restart, start-up, and the
static member's rejoin), and whether the survivors saw a rebalance.

    python -m bench.scale [--count 1000000] [--rounds 3] [--processes 2] [--size 1KB]

Target (issue 14): N = 2 on 2 cores >= 1.8x one process over the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

from bench.common import (
    broker,
    broker_pid,
    cpu_seconds,
    gateway,
    peak_rss_mb,
    wait_committed,
    write_config,
    write_section,
)
from bench.route import SIZES, fill
from gateway.cities import GREEN_CHANNEL
from gateway.config import KafkaSettings
from gateway.dev.broker import free_ports
from gateway.kafka.admin import Admin
from gateway.topics import Topics

SAMPLE_S = 0.1
Offsets = dict[tuple[str, int], int]


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (the members of a supervisor)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
    return total


class Sampler:
    """The group's committed offsets per partition, every 0.1 s, on a thread."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.admin = Admin(KafkaSettings(bootstrap_servers=bootstrap))
        self.group = group
        self.samples: list[tuple[float, Offsets]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                offsets = self.admin.group_offsets(self.group)
            except Exception:  # the coordinator may not know the group yet
                offsets = {}
            self.samples.append((time.monotonic(), offsets))
            self.stop.wait(SAMPLE_S)

    def finish(self) -> list[tuple[float, Offsets]]:
        self.stop.set()
        self.thread.join(5)
        self.admin.close()
        return self.samples


def longest_gap(
    samples: list[tuple[float, Offsets]],
    parts: set[tuple[str, int]] | None = None,
    since: float = 0.0,
    until: float = float("inf"),
) -> float:
    """Longest time without the committed total (of ``parts``) growing, from the first commit
    (or ``since``) to the last growth before ``until``."""
    last_growth: float | None = None
    longest, previous = 0.0, -1
    for t, offsets in samples:
        if t < since or t > until:
            continue
        total = sum(o for tp, o in offsets.items() if parts is None or tp in parts)
        if total > previous:
            if last_growth is not None and previous >= 0:
                longest = max(longest, t - last_growth)
            if total > 0:
                last_growth = t
            previous = total
    return longest


@dataclass(frozen=True)
class Run:
    members: int
    whole_s: float
    """launch to every record committed"""
    startup_s: float
    """launch to the first commit"""
    window_rate: float
    """records per second, first to last commit"""
    stall_s: float
    """longest time without a commit after the first one"""
    cpu_ms_per_1000: float
    """process tree, whole run"""
    rss_mib: list[float]
    load: float
    """the machine's 1-minute load average at launch (it is shared)"""
    broker_cpu_s: float = float("nan")
    """the local broker's CPU time over the whole run (NaN: an external broker)"""

    def rate(self, count: int) -> float:
        return count / self.whole_s

    def cores(self, count: int) -> float:
        """Cores the process tree got on average over the whole run (CPU time / wall time)."""
        return self.cpu_ms_per_1000 * count / 1e6 / self.whole_s

    @property
    def broker_cores(self) -> float:
        """Cores the broker took over the same whole run: on a machine this size, the routers
        can get at most the cores it leaves."""
        return self.broker_cpu_s / self.whole_s


def config_for(bootstrap: str, prefix: str, name: str, tmp: Path, port: int) -> Path:
    """The same settings as ``bench.route.start_router``, JSON logs, a known ops port."""
    return write_config(
        tmp / f"{name}.yaml",
        {
            "kafka": {"bootstrap_servers": bootstrap},
            "topics": {"prefix": prefix},
            "observability": {"port": port, "log_format": "json", "log_level": "INFO"},
            "router": {"group_id": f"{prefix}{name}", "transactional_id_prefix": f"{prefix}{name}"},
        },
    )


def measure(bootstrap: str, prefix: str, tmp: Path, name: str, count: int, members: int) -> Run:
    topic = Topics(prefix).complaints
    group = f"{prefix}{name}"
    sampler = Sampler(bootstrap, group).start()
    load = os.getloadavg()[0]
    bpid = broker_pid(bootstrap)
    broker_cpu = cpu_seconds(bpid) if bpid else float("nan")
    launched = time.monotonic()
    config = config_for(bootstrap, prefix, name, tmp, 0)
    # one process is `route` alone (bench.common pins it); N members are `route --processes N`
    args = ["route"] if members == 1 else ["route", "--processes", str(members)]
    proc = gateway(args, config, tmp / f"{name}.log")
    try:
        progress = wait_committed(bootstrap, group, topic, count, 900, proc)
        cpu = tree_cpu_s(proc.pid)
        broker_cpu = (cpu_seconds(bpid) if bpid else float("nan")) - broker_cpu
        pids = children(proc.pid) if members > 1 else [proc.pid]
        rss = [peak_rss_mb(p) for p in pids]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        samples = sampler.finish()
    return Run(
        members,
        progress.end_s - launched,
        progress.first_s - launched,
        progress.rate,
        longest_gap(samples),
        cpu / count * 1e6,
        rss,
        load,
        broker_cpu,
    )


@dataclass(frozen=True)
class Restart:
    others_gap_s: float
    """longest commit gap of the surviving members' partitions, kill to kill + 15 s"""
    others_gap_before_s: float
    """the same over the 5 s before the kill (the normal transaction cadence)"""
    killed_wait_s: float
    """kill to the killed member's partitions committing again"""
    partitions: int
    """partitions the killed member held"""
    rebalances: int
    """partition assignments or revocations logged by the survivors after the kill"""
    restarts: int


def restart_round(bootstrap: str, prefix: str, tmp: Path, count: int, members: int) -> Restart:
    name = "restart"
    group = f"{prefix}{name}"
    (port,) = free_ports(1)
    config = config_for(bootstrap, prefix, name, tmp, port)
    log = tmp / f"{name}.log"
    sampler = Sampler(bootstrap, group).start()
    proc = gateway(["route", "--processes", str(members)], config, log)
    try:
        deadline = time.monotonic() + 300
        while sum(sampler.samples[-1][1].values()) < count // 4 if sampler.samples else True:
            assert time.monotonic() < deadline and proc.poll() is None, "no progress"
            time.sleep(SAMPLE_S)
        victim = members - 1
        before = dict(sampler.samples[-1][1])
        killed_at, killed_wall = time.monotonic(), time.time()
        os.kill(_health(port)["members"][str(victim)]["pid"], signal.SIGKILL)  # no drain
        killed_parts = _owned(log, victim, killed_wall)
        wait_committed(bootstrap, group, Topics(prefix).complaints, count, 900, proc)
        done_wall = time.time()
        restarts = sum(int(m["restarts"]) for m in _health(port)["members"].values())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        samples = sampler.finish()
    others = {tp for tp in before if tp not in killed_parts}
    resumed = [
        t
        for t, offs in samples
        if t > killed_at and any(offs.get(tp, 0) > before.get(tp, 0) for tp in killed_parts)
    ]
    return Restart(
        longest_gap(samples, others, since=killed_at - 0.5, until=killed_at + 15),
        longest_gap(samples, others, since=killed_at - 5, until=killed_at),
        (resumed[0] - killed_at) if resumed else float("nan"),
        len(killed_parts),
        _rebalances(log, killed_wall, done_wall, victim),
        restarts,
    )


def _health(port: int) -> dict[str, Any]:
    """The supervisor's /healthz body (members, their pids and restarts)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


def _assignments(log: Path) -> Iterator[tuple[float, int, str, list[str]]]:
    """(time, member, message, partitions) of every assignment change the members logged."""
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        message = entry.get("message", "")
        if message in ("router: partitions assigned", "router: partitions revoked"):
            at = datetime.fromisoformat(entry["time"]).timestamp()
            yield at, entry.get("member", -1), message, entry.get("partitions", [])


def _owned(log: Path, member: int, until: float) -> set[tuple[str, int]]:
    """The partitions ``member`` held at ``until`` (cooperative: added, minus revoked)."""
    owned: set[tuple[str, int]] = set()
    for at, who, message, partitions in _assignments(log):
        if who != member or at > until:
            continue
        tps = {(t, int(p)) for t, p in (x.rsplit(":", 1) for x in partitions)}
        owned = owned | tps if message.endswith("assigned") else owned - tps
    return owned


def _rebalances(log: Path, since: float, until: float, victim: int) -> int:
    """Assignment changes the survivors logged from ``since`` to ``until`` (the victim's new
    incarnation logs its own assignment; it is not a rebalance of the others)."""
    return sum(
        1
        for at, who, _, parts in _assignments(log)
        if since < at < until and who != victim and parts
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--size", choices=list(SIZES), default="1KB", help="complaint size")
    args = ap.parse_args()
    singles: list[Run] = []
    multis: list[Run] = []
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="gc-bench-scale-") as tmpdir:
        tmp = Path(tmpdir)
        prefix = f"s{uuid.uuid4().hex[:6]}."
        topics = Topics(prefix)
        with Admin(KafkaSettings(bootstrap_servers=bootstrap)) as admin:
            admin.wait_ready(60)
            admin.create_topics(topics.all([c.key for c in GREEN_CHANNEL]))
        print(f"filling {topics.complaints} with {args.count:,} complaints ...", flush=True)
        avg_size = fill(bootstrap, topics.complaints, args.count, SIZES[args.size])
        for i in range(args.rounds):
            for members, runs in ((1, singles), (args.processes, multis)):
                run = measure(bootstrap, prefix, tmp, f"m{members}r{i}", args.count, members)
                runs.append(run)
                print(
                    f"round {i + 1}, {members} process(es): whole run {run.whole_s:.1f} s "
                    f"({run.rate(args.count):,.0f} msg/s; start-up {run.startup_s:.1f} s, "
                    f"longest commit gap {run.stall_s:.1f} s, first-to-last commit "
                    f"{run.window_rate:,.0f} msg/s)",
                    flush=True,
                )
        restart = restart_round(bootstrap, prefix, tmp, args.count, args.processes)
        print(restart, flush=True)
    report(args, avg_size, singles, multis, restart)


def report(
    args: argparse.Namespace,
    avg_size: float,
    singles: list[Run],
    multis: list[Run],
    restart: Restart,
) -> None:
    n, count = args.processes, args.count
    ratios = [m.rate(count) / s.rate(count) for s, m in zip(singles, multis, strict=True)]
    rounds = (
        f"| round | 1 process: whole run | {n} processes: whole run | ratio | start-up 1 / {n} "
        f"| longest commit gap 1 / {n} | first-to-last commit 1 / {n} | CPU per 1,000 1 / {n} "
        f"| cores got 1 / {n} | broker's cores 1 / {n} | load average at launch 1 / {n} |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for i, (s, m) in enumerate(zip(singles, multis, strict=True), 1):
        rounds += (
            f"| {i} | {s.whole_s:.1f} s ({s.rate(count):,.0f} msg/s) "
            f"| {m.whole_s:.1f} s ({m.rate(count):,.0f} msg/s) | {ratios[i - 1]:.2f} "
            f"| {s.startup_s:.1f} / {m.startup_s:.1f} s | {s.stall_s:.1f} / {m.stall_s:.1f} s "
            f"| {s.window_rate:,.0f} / {m.window_rate:,.0f} msg/s "
            f"| {s.cpu_ms_per_1000:.0f} / {m.cpu_ms_per_1000:.0f} ms "
            f"| {s.cores(count):.2f} / {m.cores(count):.2f} "
            f"| {s.broker_cores:.2f} / {m.broker_cores:.2f} | {s.load:.1f} / {m.load:.1f} |\n"
        )
    pairs = list(zip(singles, multis, strict=True))
    rss = max(r for m in multis for r in m.rss_mib)
    rows = [
        (f"{n} processes / 1, whole run, median of the rounds", f"{median(ratios):.2f}", ">= 1.8"),
        ("1 process, whole run, median", f"{median(s.rate(count) for s in singles):,.0f} msg/s"),
        (
            f"{n} processes, whole run, median",
            f"{median(m.rate(count) for m in multis):,.0f} msg/s",
        ),
        (
            f"cores the routers got, {n} processes / 1, median of the rounds",
            f"{median(m.cores(count) / s.cores(count) for s, m in pairs):.2f}",
        ),
        (
            f"the broker's cores with {n} processes, median; what that leaves the routers of "
            f"the machine's {os.cpu_count()}",
            f"{median(m.broker_cores for m in multis):.2f}; "
            f"{(os.cpu_count() or 1) - median(m.broker_cores for m in multis):.2f}",
        ),
        (
            f"bound on the whole-run ratio from the cores left (at most {n}: cores left / cores "
            "one process got, median)",
            f"{median(min(n, ((os.cpu_count() or 1) - m.broker_cores) / s.cores(count)) for s, m in pairs):.2f}",
        ),
        (
            f"CPU per record, {n} processes / 1 (whole run, start-up included), median",
            f"{median(m.cpu_ms_per_1000 / s.cpu_ms_per_1000 for s, m in pairs):.2f}",
        ),
        (f"peak RSS per member ({n} processes)", f"{rss:.0f} MiB"),
        (
            "member SIGKILLed mid-run: survivors' longest commit gap (5 s before the kill)",
            f"{restart.others_gap_s:.1f} s ({restart.others_gap_before_s:.1f} s)",
        ),
        (
            f"killed member's {restart.partitions} partitions: kill to committing again",
            f"{restart.killed_wait_s:.1f} s",
        ),
        ("rebalances seen by the survivors after the kill", str(restart.rebalances)),
        ("restarts by the supervisor", str(restart.restarts)),
    ]
    table = "| measure | result | target |\n|---|---|---|\n" + "\n".join(
        f"| {row[0]} | {row[1]} | {row[2] if len(row) > 2 else ''} |" for row in rows
    )
    body = (
        f"### Scaling (`python -m bench.scale --count {count} --rounds {args.rounds} "
        f"--processes {n} --size {args.size}`)\n\n"
        f"{count:,} complaints of {avg_size:.0f} bytes, 12 input partitions; `greenchannel "
        f"route` as one process and as `--processes {n}` (static members, cooperative-sticky "
        f"assignment), interleaved rounds with fresh groups. Whole run = launch to every "
        "record committed (start-up and joins included); longest commit gap = longest time "
        "without any commit after the first one; cores got = CPU time of the process tree / "
        "whole run (the machine is shared: the whole-run ratio is about the cores-got ratio "
        "divided by the CPU-per-record ratio); the broker's cores = its CPU time over the same "
        "whole run.\n\n"
        f"{rounds}\n{table}\n"
    )
    print(rounds)
    print(table)
    write_section("scale", body)


if __name__ == "__main__":
    main()
