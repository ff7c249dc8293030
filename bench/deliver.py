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
   nine healthy cities, and the same workload with every city up (the baseline, same run):
   healthy-city p99 (one down) / p99 (all up), target <= 1.2. Each run is measured from a
   running deliverer: one escalation per healthy city is delivered before the workload starts.
   Our engine's two runs are repeated ``--c-rounds`` times (3), interleaved, and each side's
   latencies pooled: a p99 of one 30 s run is its ~14th-slowest delivery, and on this machine
   it moved by 0.86x-1.23x between identical runs.
D. ``--cities N`` (default 100) simulated cities, N/10 copies of each of the ten
   (:func:`gateway.dev.bureaus.stamp_cities`, their own simulator process), at 1,000
   deliveries/s in total (a ~15 s backlog each): every city's achieved/configured rate, the
   deliverer's CPU per delivery and RSS. D runs ``--d-rounds`` times (3) and reports the
   median round, listing each: on the shared 2-core machine one run says little.

Each section also prints the simulator's connection counters (connections opened, TLS
handshakes, TLS sessions resumed) against the requests it answered: connection reuse.
CPU per delivery is given with start-up included (the process's whole CPU time) and for the
steady state (from the first delivery to the last).

    python -m bench.deliver [--seconds 30] [--cities 100] [--d-rounds 3] [--c-rounds 3]
                            [--sections ABCD]
"""

from __future__ import annotations

import argparse
import os
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
from gateway.cities import GREEN_CHANNEL, default_city_config
from gateway.config import KafkaSettings, load_settings
from gateway.dev.broker import free_ports
from gateway.dev.bureaus import RemoteBureaus, stamp_cities
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


def make_topics(bootstrap: str, prefix: str, cities: list[str] = CITIES) -> None:
    with Admin(KafkaSettings(bootstrap_servers=bootstrap)) as admin:
        admin.wait_ready(60)
        admin.create_topics(Topics(prefix).all(cities))


def connection_counters(sim: RemoteBureaus, cities: list[str] | None = None) -> dict[str, int]:
    """Requests answered, connections accepted, TLS handshakes and resumed sessions, summed
    over ``cities`` (default: all), and the same for the HTTPS cities alone."""
    out = dict.fromkeys(
        ("requests", "connections", "tls_handshakes", "tls_resumed", "https_requests"), 0
    )
    for city in sim.cities():
        if cities is not None and city["name"] not in cities:
            continue
        n = city["counters"]
        for key in ("requests", "connections", "tls_handshakes", "tls_resumed"):
            out[key] += n.get(key, 0)
        if str(city["endpoint"]).startswith("https"):
            out["https_requests"] += n.get("requests", 0)
    return out


def counters_line(c: dict[str, int]) -> str:
    return (
        f"{c['requests']:,} requests over {c['connections']:,} connections; HTTPS: "
        f"{c['https_requests']:,} requests, {c['tls_handshakes']:,} TLS handshakes, "
        f"{c['tls_resumed']:,} of them resumed sessions"
    )


def final_count(sim: RemoteBureaus) -> int:
    """Escalations final at the simulator, all its cities together (its ``/totals``: one small
    answer, not every city described, so polling it adds little to the machine measured)."""
    counters = sim.totals()
    return counters.get("cases", 0) + counters.get("rejected", 0)


def backlog_cpu(
    sim: RemoteBureaus, proc: Any, total: int, timeout_s: float, log: Path
) -> tuple[float, float]:
    """Wait until ``total`` escalations are final (the simulator serves only the cities
    measured); the deliverer's CPU seconds per delivery with start-up included, and in the
    steady state (first delivery seen -> last)."""
    deadline = time.monotonic() + timeout_s
    first: tuple[float, int] | None = None
    done = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the deliverer exited ({proc.returncode}): {log}")
        done = final_count(sim)
        if first is None and done:
            first = (cpu_seconds(proc.pid), done)
        if done >= total:
            break
        time.sleep(0.2)
    else:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise TimeoutError(f"{done} of {total} escalations final in time\n{tail}")
    cpu = cpu_seconds(proc.pid)
    assert first is not None
    steady = (cpu - first[0]) / max(1, done - first[1])
    return cpu / total, steady


def rate_rows(
    sim: RemoteBureaus, cities: list[str], rates: dict[str, float], burst: int
) -> list[tuple[str, float, float, float, int]]:
    """Per city: configured rate, achieved rate (simulator arrivals), ratio, busiest 1 s window.

    The achieved rate is the paced part: the arrivals after the opening burst (a full bucket
    lets ``burst`` requests go at once) over their own span, ``(n - 1 - burst) / (t[n-1] -
    t[burst])``. Counting from the first arrival instead overstates it whenever the opening
    requests arrive late, as they do where each opens a new connection (a TLS handshake on a
    busy machine: up to 1.6 % over at 10/s in 15 s, always a TLS city at the top)."""
    rows = []
    for city in cities:
        times = sorted(
            a.at for a in sim.city(city).arrivals() if a.status != 0 and "token" not in a.path
        )
        achieved = (len(times) - 1 - burst) / (times[-1] - times[burst])
        worst, j = 0, 0
        for i, start in enumerate(times):
            while j < len(times) and times[j] < start + 1.0:
                j += 1
            worst = max(worst, j - i)
        rows.append((city, rates[city], achieved, achieved / rates[city], worst))
    return rows


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
    total = sum(int(r * 15) for r in rates.values())
    burst = load_settings().city("beijing").burst
    try:
        cpu_all, cpu_steady = backlog_cpu(sim, proc, total, 300, tmp / "deliver-a.log")
        rows = rate_rows(sim, CITIES, rates, burst)
        conns = connection_counters(sim, CITIES)
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
        "cpu_per_1000": cpu_all * 1000,
        "cpu_steady_per_1000": cpu_steady * 1000,
        "rss": rss,
        "total": total,
        "conns": conns,
    }
    return table, summary


def part_c(
    sim: RemoteBureaus,
    conf: dict[str, Any],
    tmp: Path,
    seconds: float,
    naive: bool,
    down: str | None = DOWN,
) -> dict[str, Any]:
    """5 escalations/s per city, ``down`` in an outage (None: every city up); figures for the
    cities other than DOWN either way, so the baseline compares the same nine cities."""
    prefix = f"c{uuid.uuid4().hex[:6]}."
    make_topics(conf["kafka"]["bootstrap_servers"], prefix)
    for city in CITIES:
        sim.city(city).clear()
    if down is not None:
        sim.city(down).set_faults(outage=True)
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
        stream = stream_for(conf, tmp, prefix)
        warm_up(sim, stream, [c for c in CITIES if c != down], proc, tmp / "deliver-c.log")
        created = paced(stream, dict.fromkeys(CITIES, 5.0), seconds)
        time.sleep(5)
        healthy = [c for c in CITIES if c != DOWN]
        sent = sum(1 for s in stream.sent if s.city != DOWN)
        lat = latencies(sim, created, healthy)
        conns = connection_counters(sim, healthy)
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
        "conns": conns,
        "latencies": lat,
    }


def pooled_c(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one side of C as one measurement: counts summed, latencies pooled, each
    round's p99 kept (``rounds``), the last round's connection counters."""
    lat = [x for run in runs for x in run["latencies"]]
    return {
        "sent": sum(run["sent"] for run in runs),
        "delivered": sum(run["delivered"] for run in runs),
        "p50": percentile(lat, 50) * 1000,
        "p99": percentile(lat, 99) * 1000,
        "conns": runs[-1]["conns"],
        "rounds": [run["p99"] for run in runs],
    }


def warm_up(
    sim: RemoteBureaus, stream: EscalationStream, cities: list[str], proc: Any, log: Path
) -> None:
    """Measure from a running deliverer: one escalation per city, waited for, then forgotten.

    A fixed pause after starting the deliverer is not enough on a busy machine: start-up
    (imports, TLS contexts, the consumer group's first assignment) can outlast it, and the
    records published meanwhile wait for it, so the run's p99 measured the start-up (which
    took longer or shorter in each of C's runs) rather than the outage."""
    for city in cities:
        stream.publish(city)
    stream.producer.flush()
    deadline = time.monotonic() + 120
    while (done := final_count(sim)) < len(cities):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"deliverer not delivering ({done} of {len(cities)}): {log}")
        time.sleep(0.2)
    stream.sent.clear()  # its cases stay at the simulator, but outside what is measured


def stamped_config(
    bootstrap: str, tmp: Path, copies: int, ports: list[int], rate: float
) -> dict[str, Any]:
    """``copies`` simulated cities per built-in city, each at ``rate``/s, on ``ports``."""
    blocks: dict[str, Any] = {}
    for city in GREEN_CHANNEL:
        block = default_city_config(city) | {
            "rate_per_s": rate,
            "breaker": {"failure_threshold": 3, "open_s": 1.0, "max_open_s": 4.0},
        }
        if "tls" in block:
            block["tls"] = {
                "ca_file": str(tmp / "tls" / "ca.pem"),
                "cert_file": str(tmp / "tls" / "client.pem"),
                "key_file": str(tmp / "tls" / "client.key"),
            }
        blocks[city.key] = block
    cities = stamp_cities(blocks, copies, iter(ports))
    cities |= {key: {"enabled": False} for key in CITIES}  # only the copies
    return {
        "kafka": {"bootstrap_servers": bootstrap},
        "observability": {"port": 0, "log_format": "text", "log_level": "WARNING"},
        "cities": cities,
    }


def publish_stamped(stream: EscalationStream, city: str, base: str) -> None:
    esc = stream.escalation(base)
    esc["city"] = city
    esc["created_at"] = int(time.time() * 1000)
    value = stream.codec.encode("escalation", esc)
    stream.producer.send(stream.topics.escalations(city), value, key=esc["complaint_id"].encode())


def part_d(bootstrap: str, tmp: Path, n_cities: int, total_rate: float) -> dict[str, Any]:
    """``n_cities`` stamped cities at ``total_rate`` in total, one deliverer process."""
    copies = max(1, n_cities // len(CITIES))
    rate = total_rate / (copies * len(CITIES))
    ports = free_ports(copies * len(CITIES) + 1)
    conf = stamped_config(bootstrap, tmp, copies, ports[:-1], rate)
    names = [name for name, block in conf["cities"].items() if "connector" in block]
    bases = {name: conf["cities"][name]["connector"] for name in names}
    sim_proc = gateway(
        ["bureaus", "--admin-port", str(ports[-1]), "--tls-dir", str(tmp / "tls")],
        write_config(tmp / "sim-d.yaml", conf),
        tmp / "bureaus-d.log",
    )
    sim = RemoteBureaus(f"http://127.0.0.1:{ports[-1]}")
    try:
        wait_sim(sim)
        for name in names:  # only our own limiter binds
            sim.city(name).set_faults(rate_per_s=rate * 3, burst=50)
        prefix = f"d{uuid.uuid4().hex[:6]}."
        make_topics(bootstrap, prefix, names)
        stream = stream_for(conf, tmp, prefix)
        per_city = int(rate * 15)
        for _ in range(per_city):
            for name in names:
                publish_stamped(stream, name, bases[name])
        stream.producer.flush()
        total = per_city * len(names)
        log = tmp / "deliver-d.log"
        proc = gateway(
            ["deliver"], write_config(tmp / f"{prefix}d.yaml", with_prefix(conf, prefix)), log
        )
        try:
            start, sim_cpu0 = time.monotonic(), cpu_seconds(sim_proc.pid)
            cpu_all, cpu_steady = backlog_cpu(sim, proc, total, 600, log)
            wall = time.monotonic() - start
            cores = {
                "deliverer": cpu_all * total / wall,
                "simulator": (cpu_seconds(sim_proc.pid) - sim_cpu0) / wall,
            }
            load = os.getloadavg()[0]
            rss = peak_rss_mb(proc.pid)
            threads = len(list(Path(f"/proc/{proc.pid}/task").iterdir()))
        finally:
            proc.terminate()
            proc.wait(30)
        rows = rate_rows(sim, names, dict.fromkeys(names, rate), 2)
        arrivals = sorted(
            a.at for n in names for a in sim.city(n).arrivals() if "token" not in a.path
        )
        conns = connection_counters(sim, names)
    finally:
        sim.close()
        sim_proc.terminate()
        sim_proc.wait(30)
    return {
        "cities": len(names),
        "rate": rate,
        "total": total,
        "achieved_total": (len(arrivals) - 2 * len(names)) / (arrivals[-1] - arrivals[0]),
        # each city over its own first-to-last request: what the cities sustained together
        # (the figure above also counts the spread of their start-up, ~1-2 s of a ~16 s run)
        "sustained_total": sum(a for _, _, a, _, _ in rows),
        "min_ratio": min(q for *_, q, _ in rows),
        "max_ratio": max(q for *_, q, _ in rows),
        "rows": rows,
        "cpu_per_1000": cpu_all * 1000,
        "cpu_steady_per_1000": cpu_steady * 1000,
        "rss": rss,
        "threads": threads,
        "conns": conns,
        "cores": cores,
        "load": load,
    }


def wait_sim(sim: RemoteBureaus) -> None:
    for _ in range(150):
        try:
            sim.cities()
            return
        except Exception:
            time.sleep(0.2)
    sim.cities()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--cities", type=int, default=100, help="simulated cities of section D")
    ap.add_argument("--rate", type=float, default=1000.0, help="section D's total deliveries/s")
    ap.add_argument(
        "--d-rounds",
        type=int,
        default=3,
        help="section D runs this many times (fresh simulator and topics each); the table is "
        "the median round's",
    )
    ap.add_argument(
        "--c-rounds",
        type=int,
        default=3,
        help="section C: our engine's baseline and one-down runs, this many times each "
        "(interleaved), latencies pooled",
    )
    ap.add_argument(
        "--sections", default="ABCD", help="which sections to run (A and B run together)"
    )
    args = ap.parse_args()
    want = set(args.sections.upper())
    ab = ours = base = naive = None
    d_rounds: list[dict[str, Any]] = []
    table = ""
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="gc-bench-deliver-") as tmpdir:
        tmp = Path(tmpdir)
        ports = free_ports(11)
        conf = base_config(bootstrap, tmp, ports[:10])
        if want & set("ABC"):
            sim_cfg = write_config(tmp / "sim.yaml", conf)
            sim_proc = gateway(
                ["bureaus", "--admin-port", str(ports[10]), "--tls-dir", str(tmp / "tls")],
                sim_cfg,
                tmp / "bureaus.log",
            )
            sim = RemoteBureaus(f"http://127.0.0.1:{ports[10]}")
            try:
                wait_sim(sim)
                for city in CITIES:  # only our own limiter binds
                    sim.city(city).set_faults(
                        rate_per_s=conf["cities"][city]["rate_per_s"] * 3, burst=50
                    )
                if want & set("AB"):
                    print("A/B: 10 cities at their limits, then 40% load ...", flush=True)
                    table, ab = part_a_b(sim, conf, tmp, args.seconds)
                    print(table, flush=True)
                    print(f"   {ab}", flush=True)
                if "C" in want:
                    bases: list[dict[str, Any]] = []
                    downs: list[dict[str, Any]] = []
                    for k in range(max(1, args.c_rounds)):
                        print(f"C: every city up (baseline), our engine, round {k + 1} ...")
                        bases.append(part_c(sim, conf, tmp, args.seconds, naive=False, down=None))
                        print(f"   p99 {bases[-1]['p99']:.0f} ms", flush=True)
                        print(f"C: {DOWN} down, our engine, round {k + 1} ...", flush=True)
                        downs.append(part_c(sim, conf, tmp, args.seconds, naive=False))
                        print(f"   p99 {downs[-1]['p99']:.0f} ms", flush=True)
                    base, ours = pooled_c(bases), pooled_c(downs)
                    print(f"C: {DOWN} down, naive loop ...", flush=True)
                    naive = part_c(sim, conf, tmp, args.seconds, naive=True)
                    print(f"   p50 {naive['p50']:.0f} ms, p99 {naive['p99']:.0f} ms", flush=True)
            finally:
                sim.close()
                sim_proc.terminate()
                sim_proc.wait(30)
        if "D" in want and args.cities:
            for n in range(max(1, args.d_rounds)):
                print(
                    f"D: {args.cities} simulated cities, {args.rate:,.0f}/s in total, "
                    f"round {n + 1} ...",
                    flush=True,
                )
                d_rounds.append(part_d(bootstrap, tmp, args.cities, args.rate))
                print({k: v for k, v in d_rounds[-1].items() if k != "rows"}, flush=True)
    body = report(args, table, ab, base, ours, naive, d_rounds)
    print(body)
    if want >= set("ABCD"):
        write_section("deliver", body)


def rounds_ms(side: dict[str, Any]) -> str:
    return ", ".join(f"{p99:.0f}" for p99 in side["rounds"]) + " ms"


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round of D with the median deliveries/s (the lower middle one of an even count).

    One round says little on a shared 2-core machine: six back-to-back runs of D gave 426 to
    866 deliveries/s, with the deliverer getting 0.6 to 0.85 of a core."""
    ordered = sorted(rounds, key=lambda r: r["achieved_total"])
    return ordered[(len(ordered) - 1) // 2]


def rounds_table(rounds: list[dict[str, Any]], chosen: dict[str, Any]) -> str:
    rows = [
        "| round | deliveries/s (first to last; sustained) | cities' achieved/configured | CPU per 1,000 (steady) | "
        "cores: deliverer / simulator | load average at the end |",
        "|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(rounds, 1):
        mark = " (the table above)" if r is chosen else ""
        rows.append(
            f"| {n}{mark} | {r['achieved_total']:,.0f}; {r['sustained_total']:,.0f} | {r['min_ratio']:.3f}-{r['max_ratio']:.3f} "
            f"| {r['cpu_steady_per_1000']:.2f} s | {r['cores']['deliverer']:.2f} / "
            f"{r['cores']['simulator']:.2f} | {r['load']:.1f} |"
        )
    return "\n".join(rows) + "\n"


def report(
    args: argparse.Namespace,
    table: str,
    ab: dict[str, Any] | None,
    base: dict[str, Any] | None,
    ours: dict[str, Any] | None,
    naive: dict[str, Any] | None,
    d_rounds: list[dict[str, Any]],
) -> str:
    """The report; section D is its median round (:func:`median_round`), every round listed."""
    d = median_round(d_rounds) if d_rounds else None
    cmd = f"python -m bench.deliver --seconds {args.seconds:.0f} --cities {args.cities}"
    out = f"### Delivery (`{cmd}`)\n"
    if ab is not None:
        out += f"""
**A. All 10 cities at once at their configured limits** ({ab["total"]:,} escalations, a ~15 s backlog
per city; the simulator was set 3x looser so only the gateway's token bucket binds):

{table}

| measure | result | target |
|---|---|---|
| achieved/configured, worst city | {ab["min_ratio"]:.3f} | >= 0.95 |
| achieved/configured, highest city | {ab["max_ratio"]:.3f} | never above 1 (+ burst) |
| deliverer CPU per 1,000 deliveries, start-up included | {ab["cpu_per_1000"]:.2f} s | |
| deliverer CPU per 1,000 deliveries, steady state | {ab["cpu_steady_per_1000"]:.2f} s | <= 0.70 s |
| deliverer peak RSS | {ab["rss"]:.0f} MiB | |

Connections (simulator's counters): {counters_line(ab["conns"])}.

**B. Moderate load** (40% of each limit for {args.seconds:.0f} s): publish-to-acceptance
p50 {ab["p50"]:.0f} ms, p99 {ab["p99"]:.0f} ms over {ab["n_lat"]:,} escalations (target p99 <= 100 ms).
"""
    if base is not None and ours is not None and naive is not None:
        ratio = ours["p99"] / base["p99"]
        out += f"""
**C. One city ({DOWN}) down**, 5 escalations/s per city for {args.seconds:.0f} s; figures for the nine
other cities, with the same workload and every city up as the baseline (same run). Our engine's
two runs were repeated {len(base["rounds"])} times, interleaved, and each side's latencies pooled; the naive
loop ran once:

| implementation | healthy sent | healthy delivered | p50 latency | p99 latency | each round's p99 |
|---|---|---|---|---|---|
| Green Channel engine, every city up (baseline) | {base["sent"]} | {base["delivered"]} | {base["p50"]:.0f} ms | {base["p99"]:.0f} ms | {rounds_ms(base)} |
| Green Channel engine, {DOWN} down | {ours["sent"]} | {ours["delivered"]} | {ours["p50"]:.0f} ms | {ours["p99"]:.0f} ms | {rounds_ms(ours)} |
| naive kafka-python + HTTP + sleep retries, {DOWN} down | {naive["sent"]} | {naive["delivered"]} | {naive["p50"]:.0f} ms | {naive["p99"]:.0f} ms | |

Healthy cities' p99 with {DOWN} down / with every city up, pooled: **{ratio:.2f}x** (target <= 1.2x).
Connections of the nine ({DOWN} down): {counters_line(ours["conns"])}.
"""
    if d is not None:
        out += (
            f"""
**D. {d["cities"]} simulated cities in one deliverer process** (`gateway.dev.bureaus.stamp_cities`:
{d["cities"] // len(CITIES)} copies of each of the ten, each on its own port with its original's
connector and bureau profile; {d["rate"]:.0f} req/s each, {d["rate"] * d["cities"]:,.0f}/s in total;
{d["total"]:,} escalations, a ~15 s backlog per city; the simulator 3x looser, in its own process;
the median of {len(d_rounds)} round(s) by deliveries/s, every round listed below):

| measure | result | target |
|---|---|---|
| deliveries/s, all cities together, first request of any to last of any | {d["achieved_total"]:,.0f} | |
| deliveries/s sustained: the sum of each city's own rate (its paced requests, after the opening burst) | {d["sustained_total"]:,.0f} | {d["rate"] * d["cities"]:,.0f} |
| achieved/configured, worst city | {d["min_ratio"]:.3f} | >= 0.95 |
| achieved/configured, highest city | {d["max_ratio"]:.3f} | <= 1.0 (+ burst) |
| deliverer CPU per 1,000 deliveries, start-up included | {d["cpu_per_1000"]:.2f} s | |
| deliverer CPU per 1,000 deliveries, steady state | {d["cpu_steady_per_1000"]:.2f} s | <= 0.70 s |
| deliverer peak RSS / threads | {d["rss"]:.0f} MiB / {d["threads"]} | |
| cores used while the backlog drained: deliverer / simulator | {d["cores"]["deliverer"]:.2f} / {d["cores"]["simulator"]:.2f} | (2 shared cores; load average {d["load"]:.1f} at the end) |

Connections: {counters_line(d["conns"])}.

{rounds_table(d_rounds, d)}
<details><summary>every city of D (the median round)</summary>

| city | configured req/s | achieved req/s | achieved/configured | busiest 1 s window |
|---|---|---|---|---|
"""
            + "\n".join(
                f"| {c} | {r:.0f} | {a:.2f} | {q:.3f} | {w} |" for c, r, a, q, w in d["rows"]
            )
            + "\n\n</details>\n"
        )
    return out + targets(ab, base, ours, d, d_rounds)


def targets(
    ab: dict[str, Any] | None,
    base: dict[str, Any] | None,
    ours: dict[str, Any] | None,
    d: dict[str, Any] | None,
    d_rounds: list[dict[str, Any]],
) -> str:
    """The closing note: each delivery target of this run, met or not (D: its median round
    ``d``, and how many of ``d_rounds`` met it)."""

    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = []
    if ab is not None:
        cpu = ab["cpu_steady_per_1000"]
        lines.append(
            f"CPU per delivery <= 0.7 ms: {cpu:.2f} ms in A (steady state), {mark(cpu <= 0.7)}"
        )
        lines.append(
            f"p99 <= 100 ms at 40% of the limits: {ab['p99']:.0f} ms, {mark(ab['p99'] <= 100)}"
        )
        lines.append(
            f"achieved/configured in [0.95, 1.0] (10 cities; 1.01 allowed for timing): {ab['min_ratio']:.3f}-{ab['max_ratio']:.3f}, "
            f"{mark(ab['min_ratio'] >= 0.95 and ab['max_ratio'] <= 1.01)}"
        )
    if base is not None and ours is not None:
        ratio = ours["p99"] / base["p99"]
        lines.append(
            f"one city down changes the healthy cities' p99 by <= 1.2x: {ratio:.2f}x, {mark(ratio <= 1.2)}"
        )
    if d is not None:

        def d_ok(r: dict[str, Any]) -> bool:
            return bool(r["min_ratio"] >= 0.95 and r["max_ratio"] <= 1.01)

        ok = d_ok(d)
        met_rounds = sum(d_ok(r) for r in d_rounds)
        cpu = d["cpu_steady_per_1000"]
        lines.append(
            f"{d['rate'] * d['cities']:,.0f} deliveries/s across {d['cities']} cities in one process, every "
            f"city in [0.95, 1.0] (1.01 allowed for timing), the median round: {d['sustained_total']:,.0f}/s sustained ({d['achieved_total']:,.0f}/s first to last request), cities {d['min_ratio']:.3f}-"
            f"{d['max_ratio']:.3f}, {mark(ok)} ({met_rounds} of {len(d_rounds)} round(s) met it)"
            + (
                ""
                if ok
                else f". The deliverer used {d['cores']['deliverer']:.2f} cores: one Python process "
                f"runs its workers under one interpreter lock, so at {cpu:.2f} ms of CPU per delivery "
                f"it tops out near {1000 / cpu:,.0f}/s; the cost per delivery (decode, connector, "
                "HTTP, receipt, kafka-python's producer) is what stands in the way"
                + (
                    f"; in this run it got only {d['cores']['deliverer']:.2f} cores (load average "
                    f"{d['load']:.1f} on 2 shared cores), so the machine held it back first"
                    if d["cores"]["deliverer"] < 0.9
                    else ""
                )
            )
        )
    return "\n**Targets in this run:**\n\n" + "".join(f"* {line}\n" for line in lines)


if __name__ == "__main__":
    main()
