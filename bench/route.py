"""Routing benchmark: the router against a raw transactional kafka-python pipe, same broker.

(a) bench/raw_pipe.py and (b) `greenchannel route` each consume the same N (>= 200,000) ~1 KB
complaints from one input topic with their own consumer group and the same transactional
settings, in interleaved rounds (a, a', b, a, a', b, ...: the machine's load drifts). (a') is the
raw pipe producing through the gateway's own producer (`Producer.send_all`, the router's produce
path): b/a' is the cost of the router's own work, b/a the issue's ratio against plain
kafka-python. Throughput =
records committed after the first commit / time from the first to the last commit, read from
the groups' committed offsets every 0.1 s; CPU per 1,000 over the same window. Then, with
the last router still running, complaints are published at 1,000/s and the
publish-to-department latency is measured by a read_committed consumer of the department
topics. Router peak RSS is its VmHWM.

    python -m bench.route [--count 200000] [--rounds 5] [--rate 1000] [--seconds 30]

Targets (issue #3): b/a >= 0.7, >= 10,000 complaints/s per router process,
p99 <= 250 ms at 1,000/s, RSS <= 150 MB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from bench.common import (
    REPO,
    broker,
    gateway,
    peak_rss_mb,
    percentile,
    wait_committed,
    write_config,
    write_section,
)
from gateway.avro.codec import Codec
from gateway.cities import GREEN_CHANNEL
from gateway.config import CodecSettings, KafkaSettings
from gateway.dev.samples import Pacer, bench_complaints
from gateway.kafka.admin import Admin
from gateway.kafka.clients import Consumer, Producer
from gateway.topics import Department, Desk, Topics, TopicSpec

SENT_HEADER = "bench-sent-at"


def fill(bootstrap: str, topic: str, count: int) -> float:
    codec = Codec(CodecSettings())
    producer = Producer(KafkaSettings(bootstrap_servers=bootstrap), linger_ms=20)
    size = 0
    for i, record in enumerate(bench_complaints(count, seed=3)):
        value = codec.encode("complaint", record)
        size += len(value)
        producer.send(topic, value, key=record["complaint_id"].encode())
        if i % 20_000 == 0:
            producer.flush()
    producer.flush()
    producer.close()
    return size / count


def measure_latency(bootstrap: str, topics: Topics, rate: float, seconds: float) -> list[float]:
    """Publish at ``rate``/s for ``seconds``; latency (s) from send to read_committed receipt."""
    dept = [
        topics.department(Department.CONSUMER_PROTECTION),
        topics.department(Department.CUSTOMER_SERVICE),
        *(topics.desk(d) for d in Desk),
    ]
    reader = Consumer(
        KafkaSettings(bootstrap_servers=bootstrap),
        group_id=f"lat-{uuid.uuid4().hex[:6]}",
        topics=dept,
        max_poll_records=2000,
    )
    deadline = time.monotonic() + 60
    while not reader.assignment() and time.monotonic() < deadline:  # join before publishing
        reader.poll(200)
    assigned = reader.assignment()
    for tp, end in reader.end_offsets(assigned).items():
        reader.seek(tp, end)
    latencies: list[float] = []
    total = int(rate * seconds)
    done = threading.Event()

    def publish() -> None:
        codec = Codec(CodecSettings())
        producer = Producer(KafkaSettings(bootstrap_servers=bootstrap), linger_ms=0)
        pacer = Pacer(rate)
        for record in bench_complaints(total, seed=9):
            pacer.wait()
            producer.send(
                topics.complaints,
                codec.encode("complaint", record),
                key=record["complaint_id"].encode(),
                headers=[(SENT_HEADER, repr(time.time()).encode())],
            )
        producer.flush()
        producer.close()
        done.set()

    threading.Thread(target=publish, daemon=True).start()
    deadline = time.monotonic() + seconds + 60
    while len(latencies) < total and time.monotonic() < deadline:
        for r in reader.poll(100):
            sent = r.header(SENT_HEADER)
            if sent is not None:
                latencies.append(time.time() - float(sent))
    reader.close()
    return latencies


@dataclass(frozen=True)
class Run:
    rate: float
    """complaints per second, first to last commit"""
    cpu_ms_per_1000: float
    """process CPU over the same window"""
    rss_mib: float


def run_raw(
    bootstrap: str, topics: Topics, sink: str, group: str, count: int, *, gateway_producer: bool
) -> Run:
    raw = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench" / "raw_pipe.py"),
            "--bootstrap",
            bootstrap,
            "--source",
            topics.complaints,
            "--sink",
            sink,
            "--group",
            group,
            *(["--gateway-producer"] if gateway_producer else []),
        ],
        cwd=REPO,
    )
    try:
        progress = wait_committed(bootstrap, group, topics.complaints, count, 900, raw)
        run = Run(progress.rate, progress.cpu_ms_per_1000, peak_rss_mb(raw.pid))
    finally:
        raw.terminate()
        raw.wait(30)
    return run


def start_router(bootstrap: str, prefix: str, name: str, tmp: Path) -> subprocess.Popen[bytes]:
    config = write_config(
        tmp / f"{name}.yaml",
        {
            "kafka": {"bootstrap_servers": bootstrap},
            "topics": {"prefix": prefix},
            "observability": {"port": 0, "log_format": "text", "log_level": "WARNING"},
            "router": {"group_id": f"{prefix}{name}", "transactional_id_prefix": f"{prefix}{name}"},
        },
    )
    return gateway(["route"], config, tmp / f"{name}.log")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    raws: list[Run] = []
    pipes: list[Run] = []
    routers: list[Run] = []
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="gc-bench-route-") as tmpdir:
        tmp = Path(tmpdir)
        prefix = f"b{uuid.uuid4().hex[:6]}."
        topics = Topics(prefix)
        cities = [c.key for c in GREEN_CHANNEL]
        sink = f"{prefix}raw-out"
        with Admin(KafkaSettings(bootstrap_servers=bootstrap)) as admin:
            admin.wait_ready(60)
            admin.create_topics([*topics.all(cities), TopicSpec(sink, 6, 86_400_000, "bench")])
        print(f"filling {topics.complaints} with {args.count:,} complaints ...", flush=True)
        avg_size = fill(bootstrap, topics.complaints, args.count)
        print(f"average encoded complaint: {avg_size:.0f} bytes", flush=True)
        router = None
        try:
            # Interleaved rounds over the same input (each with fresh consumer groups): the
            # machine's load drifts, a ratio is only meaningful between neighbouring runs.
            for i in range(args.rounds):
                raw = run_raw(
                    bootstrap, topics, sink, f"{prefix}raw{i}", args.count, gateway_producer=False
                )
                raws.append(raw)
                print(f"round {i + 1} (a) raw pipe: {raw.rate:,.0f} msg/s", flush=True)
                pipe = run_raw(
                    bootstrap, topics, sink, f"{prefix}pipe{i}", args.count, gateway_producer=True
                )
                pipes.append(pipe)
                print(f"round {i + 1} (a') raw pipe, gateway producer: {pipe.rate:,.0f} msg/s")
                if router is not None:
                    router.terminate()
                    router.wait(30)
                router = start_router(bootstrap, prefix, f"router{i}", tmp)
                progress = wait_committed(
                    bootstrap, f"{prefix}router{i}", topics.complaints, args.count, 900, router
                )
                routers.append(
                    Run(progress.rate, progress.cpu_ms_per_1000, peak_rss_mb(router.pid))
                )
                print(
                    f"round {i + 1} (b) router: {routers[-1].rate:,.0f} msg/s, "
                    f"b/a {routers[-1].rate / raw.rate:.2f}, b/a' {routers[-1].rate / pipe.rate:.2f}",
                    flush=True,
                )
            assert router is not None
            print(f"latency: publishing {args.rate:.0f}/s for {args.seconds:.0f} s ...", flush=True)
            lat = measure_latency(bootstrap, topics, args.rate, args.seconds)
            rss = peak_rss_mb(router.pid)
        finally:
            if router is not None:
                router.terminate()
                router.wait(30)
    report(args, avg_size, raws, pipes, routers, lat, max(rss, *(r.rss_mib for r in routers)))


def report(
    args: argparse.Namespace,
    avg_size: float,
    raws: list[Run],
    pipes: list[Run],
    routers: list[Run],
    lat: list[float],
    rss: float,
) -> None:
    ratios = [b.rate / a.rate for a, b in zip(raws, routers, strict=True)]
    own = [b.rate / a.rate for a, b in zip(pipes, routers, strict=True)]
    p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
    expected = int(args.rate * args.seconds)
    rounds = (
        "| round | (a) raw pipe | (a') raw pipe, gateway producer | (b) router | b/a | b/a' "
        "| CPU per 1,000: a / a' / b |\n|---|---|---|---|---|---|---|\n"
    )
    for i, (a, a2, b) in enumerate(zip(raws, pipes, routers, strict=True), 1):
        rounds += (
            f"| {i} | {a.rate:,.0f} msg/s | {a2.rate:,.0f} msg/s | {b.rate:,.0f} msg/s "
            f"| {ratios[i - 1]:.2f} | {own[i - 1]:.2f} | {a.cpu_ms_per_1000:.0f} / "
            f"{a2.cpu_ms_per_1000:.0f} / {b.cpu_ms_per_1000:.0f} ms |\n"
        )
    rows = [
        (
            "(a) raw kafka-python transactional pipe, median",
            f"{median(a.rate for a in raws):,.0f} msg/s",
            "",
        ),
        (
            "(b) router (decode, validate, classify, escalate), median",
            f"{median(b.rate for b in routers):,.0f} msg/s",
            ">= 10,000 msg/s",
        ),
        ("ratio b/a, median of the rounds", f"{median(ratios):.2f}", ">= 0.7"),
        (
            "(a') raw pipe through the gateway's producer (`send_all`), median",
            f"{median(a.rate for a in pipes):,.0f} msg/s",
            "",
        ),
        ("ratio b/a' (the router's own work), median of the rounds", f"{median(own):.2f}", ""),
        (f"publish-to-department p50 at {args.rate:,.0f}/s", f"{p50:.1f} ms", ""),
        (f"publish-to-department p99 at {args.rate:,.0f}/s", f"{p99:.1f} ms", "<= 250 ms"),
        ("records measured for latency", f"{len(lat):,} of {expected:,}", ""),
        ("router peak RSS (VmHWM), highest of the rounds", f"{rss:.0f} MiB", "<= 150 MB"),
    ]
    table = "| measure | result | target |\n|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} |" for a, b, c in rows
    )
    body = (
        f"### Routing (`python -m bench.route --count {args.count} --rounds {args.rounds}`)\n\n"
        f"{args.count:,} complaints of {avg_size:.0f} bytes (Avro single-object), 12 input "
        f"partitions, one process each; {args.rounds} interleaved rounds (a, a', b, a, a', b, ...) over "
        f"the same input, each with fresh consumer groups.\n\n{rounds}\n{table}\n"
    )
    print(rounds)
    print(table)
    write_section("route", body)


if __name__ == "__main__":
    main()
