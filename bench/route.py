"""Routing benchmark: the router against the peers a user would pick instead, on one broker.

Contenders (each optional: one whose tool is missing is skipped, and the run says why):

* ``java``: a transactional consume→produce copy on Kafka's own Java client
  (bench/peers/JavaCopy.java, compiled against the broker's jars);
* ``confluent``: the same copy on confluent-kafka (librdkafka), bench/peers/confluent_pipe.py;
* ``quix``: a Quix Streams exactly-once app doing the router's routing (bench/peers/quix_route.py,
  in ``.venv-bench``: ``make bench-venv``);
* ``raw``: the plainest transactional kafka-python copy, bench/raw_pipe.py (a);
* ``pipe``: the same copy through the gateway's own producer, ``--gateway-producer`` (a');
* ``router``: ``greenchannel route``, one process (b).

All use the router's client settings (read_committed, transactions of up to 8,000 records,
linger 500 ms, 256 KiB batches). For each record size (``--sizes``: ~380 B and ~1 KB Avro
single-object complaints) one input topic of ``--count`` complaints (12 partitions) is read by
every contender in interleaved rounds (java, confluent, quix, raw, pipe, router, java, ...: the
machine's load drifts, a ratio is only meaningful between neighbouring runs), each run with a
fresh consumer group. Throughput = records committed after the first commit / time from the
first to the last commit, read from the group's committed offsets every 0.1 s; CPU per 1,000
over the same window (the process and its waited-for children, /proc/<pid>/stat); peak RSS is
VmHWM. Each run's output is read back once with read_committed (bench/outputs.py): a copy's sink
must hold the input count with unique keys; the router's and Quix's outputs must route every
complaint once (department and desk topics: the input count, unique keys), escalate at most once
per complaint, and hold the same count per topic as the router's first run.

Then, with the last router still running, complaints are published at ``--rates`` (1,000/s and
5,000/s) for ``--seconds`` each, ``--latency-rounds`` times (3), and the publish-to-department
latency is measured by a read_committed consumer of the department topics; the rounds of a rate
are pooled, each round's p50 / p99 listed.

    python -m bench.route [--count 200000] [--rounds 5] [--sizes 380B,1KB]
                          [--contenders java,confluent,quix,raw,pipe,router]
                          [--rates 1000,5000] [--seconds 30] [--latency-rounds 3]

Targets (issue #14): router >= 1.5x Quix Streams' throughput and <= 0.7x its CPU per record on
both sizes; p99 <= 100 ms and p50 <= 20 ms at 1,000/s; peak RSS <= 100 MiB. From issue #3:
b/a >= 0.7, >= 10,000 complaints/s per router process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from statistics import median
from typing import Any

import kafka

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
from bench.outputs import mark, written
from bench.peers import (
    Job,
    Prepared,
    Unavailable,
    confluent_pipe,
    java_copy,
    python_module,
    quix_route,
)
from bench.publisher import SENT_HEADER
from gateway.avro.codec import Codec
from gateway.cities import GREEN_CHANNEL
from gateway.config import CodecSettings, KafkaSettings
from gateway.dev.samples import BENCH_DESCRIPTION_BYTES, bench_complaints
from gateway.kafka.admin import Admin
from gateway.kafka.clients import Consumer, Producer
from gateway.topics import Department, Desk, Topics, TopicSpec

SIZES = {"380B": 0, "1KB": BENCH_DESCRIPTION_BYTES}
"""Record sizes by name: the bench complaints' description bytes (0: ~380 B encoded)."""
RUN_TIMEOUT_S = 240

Start = Callable[[Job], subprocess.Popen[bytes]]


def raw_pipe(*, gateway_producer: bool) -> Callable[[Path], Prepared]:
    def prepare(tmp: Path) -> Prepared:
        def start(job: Job) -> subprocess.Popen[bytes]:
            args = ["--bootstrap", job.bootstrap, "--source", job.source, "--sink", job.sink]
            flag = ["--gateway-producer"] if gateway_producer else []
            return python_module(job, "bench.raw_pipe", [*args, "--group", job.group, *flag])

        return Prepared(start, f"kafka-python {kafka.__version__}")

    return prepare


def router(tmp: Path) -> Prepared:
    def start(job: Job) -> subprocess.Popen[bytes]:
        config = write_config(
            job.tmp / f"{job.group}.yaml",
            {
                "kafka": {"bootstrap_servers": job.bootstrap},
                "topics": {"prefix": job.topics.prefix},
                "observability": {"port": 0, "log_format": "text", "log_level": "WARNING"},
                "router": {"group_id": job.group, "transactional_id_prefix": job.group},
            },
        )
        return gateway(["route"], config, job.tmp / f"{job.group}.log")

    return Prepared(
        start, f"greenchannel {version('greenchannel')}, kafka-python {kafka.__version__}"
    )


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    routes: bool
    """Writes the router's output topics (else copies every record to the sink)."""
    prepare: Callable[[Path], Prepared]


CONTENDERS = [
    Contender(
        "java", "Java consume→produce copy, same client settings (Kafka's own client)", False,
        java_copy.prepare,
    ),
    Contender(
        "confluent", "confluent-kafka (librdkafka) raw transactional pipe", False,
        confluent_pipe.prepare,
    ),
    Contender(
        "quix",
        f"Quix Streams exactly-once app doing the same routing (commit every "
        f"{quix_route.COMMIT_EVERY:,} records or {quix_route.COMMIT_INTERVAL_S:g} s)",
        True, quix_route.prepare,
    ),
    Contender(
        "raw", "(a) kafka-python raw transactional pipe (`bench/raw_pipe.py`)", False,
        raw_pipe(gateway_producer=False),
    ),
    Contender(
        "pipe", "(a') kafka-python raw pipe through the gateway's producer (`send_all`)", False,
        raw_pipe(gateway_producer=True),
    ),
    Contender("router", "**(b) router, 1 process**", True, router),
]  # fmt: skip


@dataclass
class Run:
    rate: float
    """complaints per second, first to last commit"""
    cpu_ms_per_1000: float
    """process CPU over the same window"""
    rss_mib: float
    per_topic: dict[str, int]
    problems: list[str] = field(default_factory=list)
    """What the exactly-once check found wrong (none: exactly once)."""
    notes: list[str] = field(default_factory=list)
    """What happened on the way (a first attempt that stopped committing and was repeated)."""


@dataclass(frozen=True)
class Latency:
    rate: float
    achieved: float
    """the rate the publisher achieved (records / publishing time)"""
    expected: int
    seconds: list[float]
    publisher: str = "?"
    """the client that published (bench/publisher.py)"""
    appended: list[float] = field(default_factory=list)
    """per record: send -> the router's append of its output (the output's CreateTime): the
    wait for the router's batch, its fetch and routing; the rest of ``seconds`` is the
    transaction's commit and the read_committed reader's fetch"""
    rounds: list[tuple[float, float]] = field(default_factory=list)
    """(p50, p99) in seconds of each round pooled here (:func:`pooled`)"""


def pooled(runs: list[Latency]) -> Latency:
    """The rounds of one rate as one measurement: every record's latency, each round's own
    p50 / p99 kept in ``rounds``, the slowest publishing rate."""
    first = runs[0]
    return Latency(
        first.rate,
        min(r.achieved for r in runs),
        sum(r.expected for r in runs),
        [x for r in runs for x in r.seconds],
        first.publisher,
        [x for r in runs for x in r.appended],
        [(percentile(r.seconds, 50), percentile(r.seconds, 99)) for r in runs],
    )


@dataclass
class SizeResult:
    name: str
    avg_bytes: float
    runs: dict[str, list[Run]]
    """Runs per contender key, in round order."""


def routed_topics(topics: Topics) -> tuple[list[str], list[str]]:
    """(department and desk topics, escalation topics) the router writes to."""
    departments = [
        topics.department(Department.CONSUMER_PROTECTION),
        topics.department(Department.CUSTOMER_SERVICE),
        *(topics.desk(d) for d in Desk),
    ]
    return departments, [topics.escalations(c.key) for c in GREEN_CHANNEL]


def check(keys: dict[str, list[bytes]], count: int, routes: bool, topics: Topics) -> list[str]:
    """What is wrong with a run's output of ``count`` input records (nothing: exactly once)."""
    problems = []
    departments, escalations = routed_topics(topics) if routes else ([*keys], [])
    primary = [k for t in departments for k in keys[t]]
    if len(primary) != count or len(set(primary)) != count:
        problems.append(f"{len(primary):,} records, {len(set(primary)):,} distinct keys")
    for topic in escalations:
        if len(keys[topic]) != len(set(keys[topic])):
            problems.append(f"{topic}: {len(keys[topic]) - len(set(keys[topic]))} duplicates")
    return problems


@contextlib.contextmanager
def running(start: Start, job: Job) -> Iterator[subprocess.Popen[bytes]]:
    proc = start(job)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def measure(
    start: Start,
    job: Job,
    count: int,
    routes: bool,
    while_running: Callable[[Job], None] | None = None,
) -> Run:
    """One run: start, wait until ``count`` records are committed, (run ``while_running``),
    stop, check the output."""
    outputs = [t for group in routed_topics(job.topics) for t in group] if routes else [job.sink]
    notes: list[str] = []
    for attempt in range(2):
        since = mark(job.bootstrap, outputs)
        try:
            return _measured(start, job, count, routes, outputs, since, while_running, notes)
        except TimeoutError as exc:  # a client that stopped committing (a stuck peer): once more
            if attempt:
                raise
            print(f"  {exc}: stopped; the run is repeated with a fresh group", flush=True)
            notes.append(f"first attempt stopped committing ({exc}), repeated")
            job = dataclasses.replace(job, group=f"{job.group}-again")
    raise AssertionError("unreachable")


def _measured(
    start: Start,
    job: Job,
    count: int,
    routes: bool,
    outputs: list[str],
    since: Any,
    while_running: Callable[[Job], None] | None,
    notes: list[str],
) -> Run:
    with running(start, job) as proc:
        progress = wait_committed(job.bootstrap, job.group, job.source, count, RUN_TIMEOUT_S, proc)
        rss = peak_rss_mb(proc.pid)
        until = mark(job.bootstrap, outputs)
        if while_running is not None:
            while_running(job)
            rss = max(rss, peak_rss_mb(proc.pid))
    keys = written(job.bootstrap, since, until)
    per_topic = {t: len(k) for t, k in keys.items()}
    problems = check(keys, count, routes, job.topics)
    return Run(progress.rate, progress.cpu_ms_per_1000, rss, per_topic, problems, notes)


def fill(bootstrap: str, topic: str, count: int, description_bytes: int) -> float:
    codec = Codec(CodecSettings())
    producer = Producer(KafkaSettings(bootstrap_servers=bootstrap), linger_ms=20)
    size = 0
    complaints = bench_complaints(count, seed=3, description_bytes=description_bytes)
    for i, record in enumerate(complaints):
        value = codec.encode("complaint", record)
        size += len(value)
        producer.send(topic, value, key=record["complaint_id"].encode())
        if i % 20_000 == 0:
            producer.flush()
    producer.flush()
    producer.close()
    return size / count


def measure_latency(
    bootstrap: str, topics: Topics, rate: float, seconds: float, description_bytes: int, seed: int
) -> Latency:
    """Publish at ``rate``/s for ``seconds``; latency (s) from send to read_committed receipt."""
    reader = Consumer(
        KafkaSettings(bootstrap_servers=bootstrap),
        group_id=f"lat-{uuid.uuid4().hex[:6]}",
        topics=routed_topics(topics)[0],
        max_poll_records=2000,
    )
    deadline = time.monotonic() + 60
    while not reader.assignment() and time.monotonic() < deadline:  # join before publishing
        reader.poll(200)
    assigned = reader.assignment()
    for tp, end in reader.end_offsets(assigned).items():
        reader.seek(tp, end)
    latencies: list[float] = []
    appended: list[float] = []
    total = int(rate * seconds)
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.publisher",
            *("--bootstrap", bootstrap, "--topic", topics.complaints, "--rate", str(rate)),
            *("--count", str(total), "--description-bytes", str(description_bytes)),
            *("--seed", str(seed)),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    deadline = time.monotonic() + seconds + 90
    while len(latencies) < total and time.monotonic() < deadline:
        for r in reader.poll(100):
            sent = r.header(SENT_HEADER)
            if sent is not None:
                latencies.append(time.time() - float(sent))
                appended.append(r.timestamp_ms / 1000 - float(sent))
    reader.close()
    out, _ = publisher.communicate(timeout=60)
    lines = out.decode().strip().splitlines()
    published = json.loads(lines[-1]) if publisher.returncode == 0 and lines else None
    achieved = total / published["seconds"] if published else float("nan")
    client = str(published["client"]) if published else "?"
    return Latency(rate, achieved, total, latencies, client, appended)


@dataclass
class Entrants:
    """The contenders of this run: those ready, and those skipped with the reason."""

    ready: dict[str, Prepared]
    skipped: dict[str, str]


def prepare_all(keys: list[str], tmp: Path) -> Entrants:
    entrants = Entrants({}, {})
    for c in CONTENDERS:
        if c.key not in keys:
            continue
        try:
            entrants.ready[c.key] = c.prepare(tmp)
        except Unavailable as exc:
            entrants.skipped[c.key] = str(exc)
            print(f"skipped: {c.label}: {exc}", flush=True)
    return entrants


def bench_size(
    bootstrap: str,
    tmp: Path,
    name: str,
    args: argparse.Namespace,
    starts: dict[str, Prepared],
    while_last_router: Callable[[Job], None] | None,
) -> SizeResult:
    """Every contender over one input topic of ``name``-sized complaints, in rounds."""
    topics = Topics(f"b{uuid.uuid4().hex[:6]}-{name.lower()}.")
    sink = f"{topics.prefix}copy-out"
    with Admin(KafkaSettings(bootstrap_servers=bootstrap)) as admin:
        admin.wait_ready(60)
        cities = [c.key for c in GREEN_CHANNEL]
        admin.create_topics([*topics.all(cities), TopicSpec(sink, 6, 86_400_000, "bench")])
    print(f"[{name}] filling {topics.complaints} with {args.count:,} complaints ...", flush=True)
    avg = fill(bootstrap, topics.complaints, args.count, SIZES[name])
    print(f"[{name}] average encoded complaint: {avg:.0f} bytes", flush=True)
    result = SizeResult(name, avg, {key: [] for key in starts})
    routes = {c.key: c.routes for c in CONTENDERS}
    for i in range(args.rounds):
        for key, (start, _) in starts.items():
            job = Job(bootstrap, topics, sink, f"{topics.prefix}{key}{i}", tmp)
            last = key == "router" and i == args.rounds - 1
            run = measure(start, job, args.count, routes[key], while_last_router if last else None)
            result.runs[key].append(run)
            verdict = "exactly once" if not run.problems else "; ".join(run.problems)
            verdict += "".join(f" ({note})" for note in run.notes)
            print(
                f"[{name}] round {i + 1} {key}: {run.rate:,.0f} msg/s, "
                f"{run.cpu_ms_per_1000:.1f} ms CPU per 1,000, {run.rss_mib:.0f} MiB, {verdict}",
                flush=True,
            )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", default=",".join(SIZES), help="of " + ", ".join(SIZES))
    ap.add_argument("--contenders", default=",".join(c.key for c in CONTENDERS))
    ap.add_argument("--rates", default="1000,5000", help="latency publish rates, per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="latency: seconds per rate")
    ap.add_argument(
        "--latency-rounds",
        type=int,
        default=3,
        help="latency: rounds per rate, pooled (each round's p50/p99 listed too)",
    )
    args = ap.parse_args()
    load = os.getloadavg()[0]
    sizes = args.sizes.split(",")
    if unknown := set(sizes) - set(SIZES):
        ap.error(f"unknown size(s) {', '.join(sorted(unknown))}; known: {', '.join(SIZES)}")
    rates = [float(r) for r in args.rates.split(",") if r]
    if args.count % quix_route.COMMIT_EVERY:
        print(
            f"note: --count is not a multiple of {quix_route.COMMIT_EVERY:,}: Quix Streams commits "
            f"its last records after its {quix_route.COMMIT_INTERVAL_S:g} s commit interval, "
            "which its throughput then includes",
            flush=True,
        )
    latencies: list[Latency] = []
    results: list[SizeResult] = []
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="gc-bench-route-") as tmpdir:
        tmp = Path(tmpdir)
        entrants = prepare_all(args.contenders.split(","), tmp)

        def latency(job: Job) -> None:  # with the last router of the last size running
            for n, rate in enumerate(rates):
                runs = []
                for k in range(max(1, args.latency_rounds)):
                    print(
                        f"latency: publishing {rate:,.0f}/s for {args.seconds:.0f} s, round "
                        f"{k + 1} ...",
                        flush=True,
                    )
                    runs.append(
                        measure_latency(
                            job.bootstrap,
                            job.topics,
                            rate,
                            args.seconds,
                            SIZES[sizes[-1]],
                            9 + n + 10 * k,
                        )
                    )
                latencies.append(pooled(runs))

        for n, name in enumerate(sizes):
            hook = latency if n == len(sizes) - 1 else None
            results.append(bench_size(bootstrap, tmp, name, args, entrants.ready, hook))
    report(args, entrants, results, latencies, load)


def _ratio(results: SizeResult, key: str, of: str, value: Callable[[Run], float]) -> str:
    """Median over the rounds of value(key's run) / value(of's run) in the same round."""
    a, b = results.runs.get(key), results.runs.get(of)
    if not a or not b:
        return "n/a (not run)"
    return f"{median(value(x) / value(y) for x, y in zip(a, b, strict=True)):.2f}"


def _verdict(result: SizeResult, key: str, routes: bool) -> str:
    runs = result.runs[key]
    problems = [p for run in runs for p in run.problems]
    reference = result.runs.get("router", [])
    if routes and reference:
        problems += [
            "per-topic counts differ from the router's"
            for run in runs
            if run.per_topic != reference[0].per_topic
        ]
    if problems:
        return "**FAILED**: " + "; ".join(sorted(set(problems)))
    repeated = sum(1 for run in runs if run.notes)
    return (
        f"exactly once ({len(runs)} of {len(runs)})"
        + (", same topics and counts as the router" if routes and key != "router" else "")
        + (f"; {repeated} run(s) repeated after the client stopped committing" if repeated else "")
    )


def size_section(result: SizeResult) -> str:
    rows = ["| contender | msg/s (median) | CPU ms per 1,000 (median) | peak RSS | output |"]
    rows.append("|---|---|---|---|---|")
    for c in CONTENDERS:
        if c.key not in result.runs:
            continue
        runs = result.runs[c.key]
        rows.append(
            f"| {c.label} | {median(r.rate for r in runs):,.0f} "
            f"| {median(r.cpu_ms_per_1000 for r in runs):.1f} "
            f"| {max(r.rss_mib for r in runs):.0f} MiB | {_verdict(result, c.key, c.routes)} |"
        )
    keys = [c.key for c in CONTENDERS if c.key in result.runs]
    rounds = [f"| round | {' | '.join(keys)} |", f"|---|{'---|' * len(keys)}"]
    for i in range(len(result.runs[keys[0]])):
        rounds.append(
            f"| {i + 1} | " + " | ".join(f"{result.runs[k][i].rate:,.0f}" for k in keys) + " |"
        )
    rate, cpu = (lambda r: r.rate), (lambda r: r.cpu_ms_per_1000)
    ratios = [
        "| ratio (median of the rounds) | result | target |",
        "|---|---|---|",
        f"| router / Quix Streams, throughput | {_ratio(result, 'router', 'quix', rate)} | >= 1.5 |",
        f"| router / Quix Streams, CPU per record | {_ratio(result, 'router', 'quix', cpu)} | <= 0.7 |",
        f"| router / kafka-python raw pipe (b/a), throughput | {_ratio(result, 'router', 'raw', rate)} | >= 0.7 |",
        f"| router / raw pipe through the gateway's producer (b/a'), the router's own work | {_ratio(result, 'router', 'pipe', rate)} | |",
        f"| router / Java copy, throughput | {_ratio(result, 'router', 'java', rate)} | |",
        f"| router / confluent-kafka pipe, throughput | {_ratio(result, 'router', 'confluent', rate)} | |",
    ]  # fmt: skip
    return (
        f"#### {result.avg_bytes:.0f}-byte complaints ({result.name})\n\n"
        + "\n".join(rows)
        + "\n\nmsg/s per round:\n\n"
        + "\n".join(rounds)
        + "\n\n"
        + "\n".join(ratios)
        + "\n"
    )


def latency_section(latencies: list[Latency], rss: float) -> str:
    rows = ["| measure | result | target |", "|---|---|---|"]
    for lat in latencies:
        first = lat.rate == latencies[0].rate
        p50, p99 = percentile(lat.seconds, 50) * 1000, percentile(lat.seconds, 99) * 1000
        rows += [
            f"| publish-to-department p50 at {lat.rate:,.0f}/s | {p50:.1f} ms | {'<= 20 ms' if first else ''} |",
            f"| publish-to-department p99 at {lat.rate:,.0f}/s | {p99:.1f} ms | {'<= 100 ms' if first else ''} |",
            f"| each round's p50 / p99 at {lat.rate:,.0f}/s | {', '.join(f'{a * 1000:.1f} / {b * 1000:.1f}' for a, b in lat.rounds)} ms | |",
            f"| of which publish-to-router-append p50 / p99 (the rest: commit and read) | {percentile(lat.appended, 50) * 1000:.1f} / {percentile(lat.appended, 99) * 1000:.1f} ms | |",
            f"| records measured at {lat.rate:,.0f}/s (published at {lat.achieved:,.0f}/s by {lat.publisher}, its own process) | {len(lat.seconds):,} of {lat.expected:,} | |",
        ]  # fmt: skip
    rows.append(f"| router peak RSS (VmHWM), highest of all runs | {rss:.0f} MiB | <= 100 MiB |")
    return "\n".join(rows) + "\n"


def contenders_section(entrants: Entrants) -> str:
    lines = []
    for c in CONTENDERS:
        if c.key in entrants.ready:
            lines.append(f"* {c.label}: {entrants.ready[c.key].version}")
        elif c.key in entrants.skipped:
            lines.append(f"* skipped: {c.label}: {entrants.skipped[c.key]}")
    return "\n".join(lines) + "\n"


def report(
    args: argparse.Namespace,
    entrants: Entrants,
    results: list[SizeResult],
    latencies: list[Latency],
    load: float,
) -> None:
    routers = [r for result in results for r in result.runs.get("router", [])]
    order = ", ".join(k for k in results[0].runs) if results else ""
    default = ",".join(c.key for c in CONTENDERS)
    only = f" --contenders {args.contenders}" if args.contenders != default else ""
    body = (
        f"### Routing (`python -m bench.route --count {args.count} --rounds {args.rounds} "
        f"--sizes {args.sizes}{only}`)\n\n"
        f"{args.count:,} complaints per size (Avro single-object), 12 input partitions, one "
        f"process each, the router's client settings (read_committed, up to 8,000 records per "
        f"transaction, linger 500 ms, 256 KiB batches); {args.rounds} interleaved round(s) "
        f"({order}, ...) over the same input, each run with a fresh consumer group; every run's "
        "output read back once with read_committed. CPU is the process's (children included), "
        f"from the first to the last commit. Load average at the start: {load:.1f}.\n\n"
        + contenders_section(entrants)
        + "\n"
        + "\n".join(size_section(r) for r in results)
    )
    if latencies and routers:
        body += (
            f"\n#### Latency and memory (router, {results[-1].avg_bytes:.0f}-byte complaints, "
            f"{args.seconds:.0f} s per rate, {args.latency_rounds} round(s) each, pooled)\n\n"
            + latency_section(latencies, max(r.rss_mib for r in routers))
        )
    print(body)
    write_section("route", body)


if __name__ == "__main__":
    main()
