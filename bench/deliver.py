"""Delivery benchmark: 10 cities at their configured limits, and one city down vs a naive loop.

Runs a real broker, the bureau simulator (`greenchannel bureaus`, its own process) and the
deliverer (`greenchannel deliver`, its own process):

A. rate: a backlog of ~15 s per city; achieved/configured request rate per city measured from
   the simulator's arrival times (target >= 0.95, never above: the bureau is set 3x looser so
   only our limiter binds, and the busiest 1 s window must stay within rate + burst);
   CPU per 1,000 deliveries and peak RSS of the deliverer.
B. latency at moderate load (40% of each limit): publish-to-acceptance p50/p99.
C. one city (wuhu) down, same workload for our engine and for bench/naive_deliver.py
   (kafka-python + synchronous HTTP + sleep retries): delivered count and latency of the
   nine healthy cities.

    python -m bench.deliver [--seconds 30]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    broker,
    cpu_seconds,
    gateway,
    peak_rss_mb,
    percentile,
    write_config,
    write_section,
)
from gateway.cities import GREEN_CHANNEL
from gateway.config import KafkaSettings, load_settings
from gateway.dev.broker import free_ports
from gateway.dev.bureaus import RemoteBureaus
from gateway.kafka.admin import Admin
from gateway.topics import Topics
from tests.integration.delivery_kit import EscalationStream

CITIES = [c.key for c in GREEN_CHANNEL]
DOWN = "wuhu"


def base_config(bootstrap: str, tmp: Path, ports: list[int]) -> dict[str, Any]:
    defaults = load_settings()
    cities: dict[str, Any] = {}
    for city, port in zip(CITIES, ports, strict=True):
        scheme = "https" if city == "shenzhen" else "http"
        cities[city] = {
            "endpoint": f"{scheme}://127.0.0.1:{port}",
            "rate_per_s": defaults.city(city).rate_per_s,
            "breaker": {"failure_threshold": 3, "open_s": 1.0, "max_open_s": 4.0},
        }
    tls = tmp / "tls"
    cities["shenzhen"]["tls"] = {
        "ca_file": str(tls / "ca.pem"),
        "cert_file": str(tls / "client.pem"),
        "key_file": str(tls / "client.key"),
    }
    return {
        "kafka": {"bootstrap_servers": bootstrap},
        "observability": {"port": 0, "log_format": "text", "log_level": "WARNING"},
        "cities": cities,
    }


def with_prefix(conf: dict[str, Any], prefix: str) -> dict[str, Any]:
    return conf | {"topics": {"prefix": prefix}, "delivery": {"group_id": f"{prefix}deliver"}}


def make_topics(bootstrap: str, prefix: str) -> None:
    with Admin(KafkaSettings(bootstrap_servers=bootstrap)) as admin:
        admin.wait_ready(60)
        admin.create_topics(Topics(prefix).all(CITIES))


def cases(sim: RemoteBureaus, city: str) -> dict[str, float]:
    return {c["key"]: c["arrived_at"] for c in sim.city(city).cases()}


def wait_cases(sim: RemoteBureaus, want: dict[str, int], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counters = {c: sim.city(c).counters() for c in want}
        got = {c: n.get("cases", 0) + n.get("rejected", 0) for c, n in counters.items()}
        if all(got[c] >= n for c, n in want.items()):
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise TimeoutError(f"not every escalation was accepted in time: {got} of {want}\n{tail}")


def stream_for(conf: dict[str, Any], tmp: Path, prefix: str) -> EscalationStream:
    settings = load_settings(write_config(tmp / f"{prefix}gc.yaml", with_prefix(conf, prefix)))
    return EscalationStream(settings, seed=5)


def paced(stream: EscalationStream, rates: dict[str, float], seconds: float) -> dict[str, int]:
    """Publish each city at ``rates[city]``/s for ``seconds``; returns escalation id -> created ms."""
    start = time.monotonic()
    sent = dict.fromkeys(rates, 0)
    while (elapsed := time.monotonic() - start) < seconds:
        for city, rate in rates.items():
            while sent[city] < rate * elapsed:
                stream.publish(city)
                sent[city] += 1
        stream.producer.flush()
        time.sleep(0.05)
    return {s.escalation_id: s.created_ms for s in stream.sent}


def latencies(sim: RemoteBureaus, created: dict[str, int], cities: list[str]) -> list[float]:
    out = []
    for city in cities:
        for key, at in cases(sim, city).items():
            if key in created:
                out.append(at - created[key] / 1000)
    return out


def part_a_b(
    sim: RemoteBureaus, conf: dict[str, Any], tmp: Path, seconds: float
) -> tuple[str, dict[str, Any]]:
    prefix = f"a{uuid.uuid4().hex[:6]}."
    make_topics(conf["kafka"]["bootstrap_servers"], prefix)
    rates = {c: conf["cities"][c]["rate_per_s"] for c in CITIES}
    stream = stream_for(conf, tmp, prefix)
    for city, rate in rates.items():
        for _ in range(int(rate * 15)):
            stream.publish(city)
    stream.producer.flush()
    proc = gateway(
        ["deliver"],
        write_config(tmp / f"{prefix}d.yaml", with_prefix(conf, prefix)),
        tmp / "deliver-a.log",
    )
    try:
        wait_cases(sim, {c: int(r * 15) for c, r in rates.items()}, 300, tmp / "deliver-a.log")
        cpu = cpu_seconds(proc.pid)
        total = sum(int(r * 15) for r in rates.values())
        rows = []
        burst = load_settings().city("beijing").burst
        for city in CITIES:
            times = sorted(
                a.at for a in sim.city(city).arrivals() if a.status != 0 and "token" not in a.path
            )
            achieved = (len(times) - burst) / (times[-1] - times[0])
            worst = max(sum(1 for t in times[i:] if t < s + 1.0) for i, s in enumerate(times))
            rows.append((city, rates[city], achieved, achieved / rates[city], worst))
        for city in CITIES:
            sim.city(city).clear()
        stream.sent.clear()
        created = paced(stream, {c: r * 0.4 for c, r in rates.items()}, seconds)
        time.sleep(3)
        lat = latencies(sim, created, CITIES)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    table = "| city | configured req/s | achieved req/s | achieved/configured (>= 0.95) | busiest 1 s window |\n|---|---|---|---|---|\n"
    table += "\n".join(
        f"| {c} | {r:.0f} | {a:.1f} | {q:.3f} | {w} (limit {r:.0f} + burst {burst}) |"
        for c, r, a, q, w in rows
    )
    summary = {
        "min_ratio": min(q for *_, q, _ in rows),
        "max_ratio": max(q for *_, q, _ in rows),
        "p50": percentile(lat, 50) * 1000,
        "p99": percentile(lat, 99) * 1000,
        "n_lat": len(lat),
        "cpu_per_1000": cpu / total * 1000,
        "rss": rss,
        "total": total,
    }
    return table, summary


def part_c(
    sim: RemoteBureaus, conf: dict[str, Any], tmp: Path, seconds: float, naive: bool
) -> dict[str, Any]:
    prefix = f"c{uuid.uuid4().hex[:6]}."
    make_topics(conf["kafka"]["bootstrap_servers"], prefix)
    for city in CITIES:
        sim.city(city).clear()
    sim.city(DOWN).set_faults(outage=True)
    cfg = write_config(tmp / f"{prefix}d.yaml", with_prefix(conf, prefix))
    if naive:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.naive_deliver", "--config", str(cfg)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    else:
        proc = gateway(["deliver"], cfg, tmp / "deliver-c.log")
    try:
        time.sleep(3)
        stream = stream_for(conf, tmp, prefix)
        created = paced(stream, dict.fromkeys(CITIES, 5.0), seconds)
        time.sleep(5)
        healthy = [c for c in CITIES if c != DOWN]
        sent = sum(1 for s in stream.sent if s.city != DOWN)
        lat = latencies(sim, created, healthy)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # the naive loop sleeps through SIGTERM
            proc.kill()
            proc.wait(30)
        sim.city(DOWN).reset_faults()
    return {
        "sent": sent,
        "delivered": len(lat),
        "p50": percentile(lat, 50) * 1000,
        "p99": percentile(lat, 99) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="gc-bench-deliver-") as tmpdir:
        tmp = Path(tmpdir)
        ports = free_ports(11)
        conf = base_config(bootstrap, tmp, ports[:10])
        sim_cfg = write_config(tmp / "sim.yaml", conf)
        sim_proc = gateway(
            ["bureaus", "--admin-port", str(ports[10]), "--tls-dir", str(tmp / "tls")],
            sim_cfg,
            tmp / "bureaus.log",
        )
        sim = RemoteBureaus(f"http://127.0.0.1:{ports[10]}")
        try:
            for _ in range(100):
                try:
                    sim.cities()
                    break
                except Exception:
                    time.sleep(0.2)
            for city in CITIES:  # only our own limiter binds
                sim.city(city).set_faults(
                    rate_per_s=conf["cities"][city]["rate_per_s"] * 3, burst=50
                )
            print("A/B: 10 cities at their limits, then 40% load ...", flush=True)
            table, ab = part_a_b(sim, conf, tmp, args.seconds)
            print(table, flush=True)
            print(f"C: {DOWN} down, our engine ...", flush=True)
            ours = part_c(sim, conf, tmp, args.seconds, naive=False)
            print(f"   {ours}", flush=True)
            print(f"C: {DOWN} down, naive loop ...", flush=True)
            naive = part_c(sim, conf, tmp, args.seconds, naive=True)
            print(f"   {naive}", flush=True)
        finally:
            sim.close()
            sim_proc.terminate()
            sim_proc.wait(30)
    body = f"""### Delivery (`python -m bench.deliver --seconds {args.seconds:.0f}`)

**A. All 10 cities at once at their configured limits** ({ab["total"]:,} escalations, a ~15 s backlog
per city; the simulator was set 3x looser so only the gateway's token bucket binds):

{table}

| measure | result | target |
|---|---|---|
| achieved/configured, worst city | {ab["min_ratio"]:.3f} | >= 0.95 |
| achieved/configured, highest city | {ab["max_ratio"]:.3f} | never above 1 (+ burst) |
| deliverer CPU per 1,000 deliveries | {ab["cpu_per_1000"]:.2f} s | |
| deliverer peak RSS | {ab["rss"]:.0f} MiB | |

**B. Moderate load** (40% of each limit for {args.seconds:.0f} s): publish-to-acceptance
p50 {ab["p50"]:.0f} ms, p99 {ab["p99"]:.0f} ms over {ab["n_lat"]:,} escalations.

**C. One city ({DOWN}) down**, 5 escalations/s per city for {args.seconds:.0f} s; figures for the nine
healthy cities:

| implementation | healthy sent | healthy delivered | p50 latency | p99 latency |
|---|---|---|---|---|
| Green Channel engine | {ours["sent"]} | {ours["delivered"]} | {ours["p50"]:.0f} ms | {ours["p99"]:.0f} ms |
| naive kafka-python + HTTP + sleep retries | {naive["sent"]} | {naive["delivered"]} | {naive["p50"]:.0f} ms | {naive["p99"]:.0f} ms |
"""
    print(body)
    write_section("deliver", body)


if __name__ == "__main__":
    main()
