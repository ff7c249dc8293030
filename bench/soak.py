"""Chaos soak: complaints flowing for N minutes while faults are injected at random (seeded).

Runs a real broker (:class:`~gateway.dev.broker.LocalBroker`, its own data dir and ports), the
bureau simulator (``greenchannel bureaus``, its own process, knobs turned over its admin API),
the gateway (``greenchannel route`` + ``greenchannel deliver``, or ``run``) as separate
processes under a supervisor that restarts whatever exits, and a publisher at a steady rate
(major complaints for the ten green-channel cities, general complaints, consultations, and
poison records). The fault schedule is drawn from the seed up front (every kind once, in a
shuffled order, then weighted at random):

=====================  =========================================================================
router/deliverer       SIGKILL, or SIGTERM (a drain over 60 s is SIGKILLed and reported)
broker                 clean restart, SIGKILL + start, SIGSTOP for 3-40 s then SIGCONT
network_cut            the gateway's packets to the broker dropped for 5-25 s (nftables,
                       ``meta skuid``: see :mod:`bench.soak_netcut`); the ledger's are not
city_outage            a city refuses connections or answers 503 for 10-40 s
storm_429              a city's own limit drops to 0.5 req/s: 429 + Retry-After for 10-30 s
slow_answers           a city answers after 1.5-4 s (the gateway's timeout is 2 s) for 10-30 s
poison_*               undecodable bytes, a ~1 MB record, a 1 MB header on a valid complaint,
                       a major complaint dated in the year 10000
=====================  =========================================================================

Then the faults stop, a drain period follows, and the independent ledger
(:mod:`bench.soak_ledger`) judges. A fault that cannot be injected on this machine is named
loudly in the output and in the figures, never skipped in silence.

    python -m bench.soak --minutes 30 [--seed 1] [--rate 40] [--without poison_oversized]

Exit status: 0 when nothing was lost, duplicated or stuck; 1 otherwise; 2 on a harness error.
Figures are printed, written to ``docs/benchmarks.md`` (section ``soak``; ``--no-report`` to
skip) and, with ``--json FILE``, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import write_config, write_section
from bench.soak_ledger import Ledger, Verdict, wait_quiet
from bench.soak_netcut import NetCut, unavailable_reason
from bench.soak_parts import GatewayProc, Publisher, wait_until
from bench.soak_report import report
from gateway.cities import GREEN_CHANNEL
from gateway.config import KafkaSettings, load_settings
from gateway.dev.broker import LEAN_JVM, BrokerSettings, LocalBroker, free_ports
from gateway.dev.bureaus import RemoteBureaus
from gateway.kafka.admin import Admin
from gateway.kafka.clients import Consumer, TopicPartition
from gateway.topics import Topics
from tests.integration.delivery_kit import FAST_CITY

CITIES = [c.key for c in GREEN_CHANNEL]
PREFIX = "soak."
WEIGHTS: dict[str, float] = {
    "router_sigkill": 3, "router_sigterm": 2, "deliverer_sigkill": 3, "deliverer_sigterm": 2,
    "broker_restart": 1, "broker_sigkill": 1, "broker_freeze": 1.5, "network_cut": 2,
    "city_outage": 3, "storm_429": 2, "slow_answers": 2,
    "poison_undecodable": 2, "poison_oversized": 0.5, "poison_big_header": 0.5,
    "poison_far_future": 0.5,
}  # fmt: skip
INFRA = {"broker_restart", "broker_sigkill", "broker_freeze", "network_cut"}
CITY = {"city_outage", "storm_429", "slow_answers"}
SIGTERM_GRACE_S = 60.0
MIN_GAP_S = 2.0
INFRA_REST_S = 20.0
"""Faults held back (behind a broker restart) are injected this far apart, not in a burst."""
UNCAUGHT = re.compile(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b")


@dataclass
class Fault:
    at_s: float
    kind: str
    duration_s: float = 0.0
    city: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def schedule(seed: int, seconds: float, kinds: list[str], gap: tuple[float, float]) -> list[Fault]:
    """The run's faults, from the seed alone: each kind once (shuffled), then weighted picks;
    broker and network faults never overlap, and a city has one fault at a time."""
    rng = random.Random(seed)
    first = list(kinds)
    rng.shuffle(first)
    out: list[Fault] = []
    t, infra_free, city_free = 10.0, 0.0, dict.fromkeys(CITIES, 0.0)
    while True:
        t += rng.uniform(*gap)
        kind = first.pop(0) if first else rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
        fault = Fault(t, kind)
        if kind in INFRA:
            fault.at_s = t = max(t, infra_free + 2.0)
            fault.duration_s = {
                "broker_freeze": rng.uniform(3, 40),
                "network_cut": rng.uniform(5, 25),
            }.get(kind, 0.0)
        elif kind in CITY:
            free = [c for c in CITIES if city_free[c] <= t] or CITIES
            fault.city = rng.choice(free)
            fault.duration_s = rng.uniform(10, 40 if kind == "city_outage" else 30)
            if kind == "city_outage":
                fault.detail = {"outage": True, "outage_mode": rng.choice(["refuse", "503"])}
            elif kind == "storm_429":
                fault.detail = {"rate_per_s": 0.5, "burst": 1}
            else:
                fault.detail = {"latency_ms": round(rng.uniform(1500, 4000))}
            city_free[fault.city] = t + fault.duration_s + 1.0
        if t >= seconds:
            return out
        if kind in INFRA:
            infra_free = t + fault.duration_s + (30.0 if "restart" in kind else 5.0)
        out.append(fault)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="gc-soak-"))
        self.tmp.chmod(0o755)
        self.injected: Counter[str] = Counter()
        self.not_injected: dict[str, str] = {}
        self.findings: list[str] = []
        self.events: list[str] = []
        self.t0 = time.monotonic()
        self.netcut: NetCut | None = None
        self.infra: threading.Thread | None = None
        self.infra_ended = 0.0
        self.city_until: dict[str, float] = {}
        self.term_sent: dict[str, float] = {}
        self.stopping = False

    # --- set-up ----------------------------------------------------------------------------

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {text}"
        self.events.append(line)
        print(line, flush=True)

    def setup(self) -> None:
        port, cport = free_ports(2)
        self.broker = LocalBroker(
            BrokerSettings(
                port=port,
                controller_port=cport,
                data_dir=self.tmp / "kafka",
                start_timeout_s=300.0,  # a shared, loaded machine: a restart can take minutes
                heap="-Xms256m -Xmx768m",
                jvm=LEAN_JVM,  # 40 complaints/s need no optimising JIT; restarts cost half the CPU
            )
        )
        self.broker.start()
        self.kafka = KafkaSettings(bootstrap_servers=self.broker.bootstrap)
        self.topics = Topics(PREFIX)
        with Admin(self.kafka) as admin:
            admin.wait_ready(60)
            admin.create_topics(self.topics.all(CITIES))
        self._setup_netcut(port)
        self._setup_bureaus()
        self._setup_gateway()

    def _setup_netcut(self, port: int) -> None:
        reason = unavailable_reason()
        if reason is None:
            try:
                self.netcut = NetCut(port).open()
            except Exception as exc:
                reason = f"nft failed: {exc}"
        if reason is not None:
            self.not_injected["network_cut"] = reason
            print(f"\n!!! NETWORK CUT CANNOT BE INJECTED HERE: {reason} !!!\n", flush=True)
        self.join = self.netcut.join if self.netcut is not None else None

    def _setup_bureaus(self) -> None:
        ports = free_ports(11)
        cities: dict[str, Any] = {}
        defaults = load_settings()
        for city, p in zip(CITIES, ports[:10], strict=True):
            scheme = "https" if city == "shenzhen" else "http"
            cities[city] = FAST_CITY | {
                "endpoint": f"{scheme}://127.0.0.1:{p}",
                "rate_per_s": defaults.city(city).rate_per_s,
                "timeout_s": 2.0,
            }
        tls = self.tmp / "tls"
        cities["shenzhen"]["tls"] = {
            "ca_file": str(tls / "ca.pem"),
            "cert_file": str(tls / "client.pem"),
            "key_file": str(tls / "client.key"),
        }
        self.city_conf = cities
        sim_cfg = write_config(
            self.tmp / "bureaus.yaml",
            {"kafka": {"bootstrap_servers": self.kafka.bootstrap_servers}, "cities": cities},
        )
        args = ["bureaus", "--admin-port", str(ports[10]), "--tls-dir", str(tls)]
        self.sim_proc = GatewayProc("bureaus", args, sim_cfg, self.tmp / "bureaus.log")
        self.sim_proc.start()
        self.sim = RemoteBureaus(f"http://127.0.0.1:{ports[10]}")
        if not wait_until(lambda: bool(self.sim.cities()), 60):
            raise RuntimeError("the bureau simulator did not start (see bureaus.log)")

    def _setup_gateway(self) -> None:
        conf = {
            "kafka": {"bootstrap_servers": self.kafka.bootstrap_servers},
            "topics": {"prefix": PREFIX},
            "router": {"group_id": "soak-router", "transactional_id_prefix": "soak-tx"},
            "delivery": {"group_id": "soak-deliver"},
            "observability": {"port": 0, "log_format": "json", "log_level": "INFO"},
            "cities": self.city_conf,
        }
        cfg = write_config(self.tmp / "gateway.yaml", conf)
        cfg.chmod(0o644)
        self.settings = load_settings(cfg)
        drain = ["--shutdown-timeout", "20"]
        if self.args.mode == "run":
            self.procs = {"gateway": GatewayProc("gateway", ["run", *drain], cfg, self._l("gateway"), self.join)}  # fmt: skip
        else:
            self.procs = {
                "router": GatewayProc(
                    "router",
                    ["route", "--instance", "0", *drain],
                    cfg,
                    self._l("router"),
                    self.join,
                ),
                "deliverer": GatewayProc(
                    "deliverer", ["deliver", *drain], cfg, self._l("deliverer"), self.join
                ),
            }
        for proc in self.procs.values():
            proc.start()

    def _l(self, name: str) -> Path:
        path = self.tmp / f"{name}.log"
        path.touch()
        return path

    def target(self, role: str) -> GatewayProc:
        return self.procs["gateway"] if "gateway" in self.procs else self.procs[role]

    # --- the run ---------------------------------------------------------------------------

    def supervise(self) -> None:
        now = time.monotonic()
        for name, proc in self.procs.items():
            if (
                name in self.term_sent
                and proc.alive()
                and now - self.term_sent[name] > SIGTERM_GRACE_S
            ):
                self.findings.append(f"{name} did not exit {SIGTERM_GRACE_S:.0f} s after SIGTERM")
                proc.signal(signal.SIGKILL)
            code = proc.reap()
            if code is not None:
                self.term_sent.pop(name, None)
                self.log(f"{name} exited with {code}")
            down = proc.down_since
            if not proc.alive() and down is not None and now - down >= 1.0 and not self.stopping:
                proc.start()  # as a supervisor would, after a second

    def run(self) -> Verdict:
        seconds = self.args.minutes * 60
        kinds = [k for k in WEIGHTS if k not in self.args.without and k not in self.not_injected]
        plan = schedule(self.args.seed, seconds, kinds, (self.args.gap_min, self.args.gap_max))
        self.log(
            f"{len(plan)} faults planned over {seconds:.0f} s (seed {self.args.seed}); tmp {self.tmp}"
        )
        self.ledger = Ledger(self.kafka, self.topics, CITIES).start()
        self.publisher = Publisher(
            self.settings, self.ledger, self.args.rate, self.args.seed
        ).start()
        start, last = time.monotonic(), -MIN_GAP_S
        told = 0
        while (elapsed := time.monotonic() - start) < seconds:
            self.supervise()
            for finding in self.publisher.findings[told:]:
                self.log(f"!!! {finding}")
                told += 1
            for line in self.publisher.diagnostics:
                self.log(f"    {line}")
            self.publisher.diagnostics.clear()
            self._end_city_faults()
            due = plan and elapsed >= plan[0].at_s and elapsed - last >= MIN_GAP_S
            if due and not (plan[0].kind in INFRA and self._infra_busy()):
                self.inject(plan.pop(0))  # a fault held back by a long one waits its turn
                last = elapsed
            time.sleep(0.25)
        self.log(f"faults stop; publisher stops after {self.publisher.sent} records")
        self.publisher.stop()
        self.findings += self.publisher.findings
        self._end_all_faults()
        return self.drain()

    def _infra_busy(self) -> bool:
        """A broker or network fault is on, or ended less than ``INFRA_REST_S`` ago (a broker
        restart can take a minute here: without a rest they would follow each other with the
        broker never up in between)."""
        running = self.infra is not None and self.infra.is_alive()
        return running or time.monotonic() - self.infra_ended < INFRA_REST_S

    def inject(self, fault: Fault) -> None:
        k = fault.kind
        self.injected[k] += 1
        where = f" {fault.city}" if fault.city else ""
        more = f" for {fault.duration_s:.0f} s" if fault.duration_s else ""
        self.log(f"FAULT {k}{where}{more} {fault.detail or ''}")
        if k.startswith("poison_"):
            self.publisher.poison(k.removeprefix("poison_").replace("_", "-"))
        elif k.endswith(("_sigkill", "_sigterm")) and not k.startswith("broker"):
            role = k.split("_")[0]
            proc, sig = (
                self.target(role),
                signal.SIGKILL if k.endswith("sigkill") else signal.SIGTERM,
            )
            if proc.signal(sig) and sig == signal.SIGTERM:
                self.term_sent[proc.name] = time.monotonic()
        elif k in CITY:
            assert fault.city is not None
            self.sim.city(fault.city).set_faults(**fault.detail)
            self.city_until[fault.city] = time.monotonic() + fault.duration_s
        elif k in INFRA:
            self.infra = threading.Thread(target=self._infra, args=(fault,), daemon=True)
            self.infra.start()

    def _infra(self, fault: Fault) -> None:
        try:
            if fault.kind == "broker_restart":
                self.broker.restart()
            elif fault.kind == "broker_sigkill":
                self.broker.kill()
                self.broker.start()
            elif fault.kind == "broker_freeze":
                self.broker.freeze()
                try:
                    self._sleep(fault.duration_s)
                finally:
                    self.broker.thaw()
            elif fault.kind == "network_cut":
                assert self.netcut is not None
                self.netcut.cut()
                try:
                    self._sleep(fault.duration_s)
                finally:
                    self.netcut.heal()
            self.log(f"  {fault.kind} over")
        except Exception as exc:
            self.findings.append(f"harness: {fault.kind} failed: {str(exc)[:300]!r}")
            self.log(f"  {fault.kind} FAILED: {exc!r}")
        finally:
            self.infra_ended = time.monotonic()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(0.2)

    def _end_city_faults(self, force: bool = False) -> None:
        now = time.monotonic()
        for city, until in list(self.city_until.items()):
            if force or now >= until:
                self.sim.city(city).reset_faults()
                del self.city_until[city]

    def _end_all_faults(self) -> None:
        if self.infra is not None:
            self.infra.join(180)
        if self.netcut is not None:
            self.netcut.heal()
        self._end_city_faults(force=True)
        if self.broker.is_running():
            with suppress(Exception):
                self.broker.thaw()
        else:
            self.broker.start()

    # --- the end ---------------------------------------------------------------------------

    def drain(self) -> Verdict:
        """Until the ledger is satisfied and every group is at lag 0, or the drain time is up."""
        deadline = time.monotonic() + self.args.drain
        verdict, lags = self._judge()
        while time.monotonic() < deadline and not (verdict.ok and not lags):
            end = time.monotonic() + 10
            while time.monotonic() < end:
                self.supervise()
                time.sleep(0.5)
            verdict, lags = self._judge()
            self.log(
                f"drain: lost {verdict.count('lost')}, duplicated {verdict.count('duplicated')}, "
                f"lag {sum(lags.values())}"
            )
        wait_quiet(self.ledger, idle_s=5, timeout_s=30)  # late duplicates would show now
        verdict, lags = self._judge()
        verdict.figures["stuck"] = lags
        verdict.figures["stuck_total"] = sum(lags.values())
        verdict.figures["lag_control_records_only"] = self.marker_lag
        if any(self.marker_lag.values()):
            self.findings.append(
                f"committed offsets short of the end on transactional input by "
                f"{self.marker_lag} records a read_committed reader never sees (markers, aborted "
                "transactions; nothing unprocessed): the group commits one past its last record "
                "instead of its position, so its lag never reaches 0"
            )
        return verdict

    def _judge(self) -> tuple[Verdict, dict[str, int]]:
        cases = {}
        for city in CITIES:
            try:
                cases[city] = self.sim.city(city).cases()
            except Exception as exc:
                self.findings.append(f"harness: cases of {city} unreadable: {exc!r}")
                cases[city] = []
        return self.ledger.verdict(cases), self.lags()

    def lags(self) -> dict[str, int]:
        """Data records behind each group's committed offset, per group.

        End offsets are read read_committed. The escalation topics are written in transactions:
        past a partition's last committed record there can be records a read_committed reader
        never sees (commit and abort markers, records of aborted transactions). A group that
        commits one past its last record, not its position, stays that far behind forever.
        What lies beyond the last record the ledger read there is counted apart, in
        ``self.marker_lag``, not as stuck.
        """
        groups = {
            "soak-router": [self.topics.complaints],
            "soak-deliver": [self.topics.escalations(c) for c in CITIES],
        }
        out: dict[str, int] = {}
        self.marker_lag: dict[str, int] = {}
        try:
            with Admin(self.kafka) as admin:
                info = {
                    t.name: t.partitions
                    for t in admin.describe_topics([t for ts in groups.values() for t in ts])
                }
                consumer = Consumer(
                    self.kafka, group_id=f"soak-lag-{os.getpid()}", topics=[self.topics.complaints]
                )
                try:
                    for group, topics in groups.items():
                        tps = [TopicPartition(t, p) for t in topics for p in range(info[t])]
                        ends = consumer.end_offsets(tps)
                        committed = admin.group_offsets(group)
                        behind = markers = 0
                        for tp in tps:
                            done = committed.get((tp.topic, tp.partition), 0)
                            data_end = (
                                self.ledger.data_end(tp)
                                if tp.topic in self.ledger.escalation_topics
                                else ends[tp]
                            )
                            behind += max(0, data_end - done)
                            markers += max(0, ends[tp] - max(done, data_end))
                        if behind:
                            out[group] = behind
                        if markers:
                            self.marker_lag[group] = markers
                finally:
                    consumer.close(2000)
        except Exception as exc:
            out["unreadable"] = 1
            self.findings.append(f"harness: lag unreadable: {exc!r}")
        return out

    def teardown(self) -> None:
        self.stopping = True
        for proc in self.procs.values() if hasattr(self, "procs") else ():
            if (early := proc.reap()) is not None:
                self.log(f"{proc.name} exited with {early}")
                continue
            code, took = proc.stop(30)
            if code not in (None, 0):
                self.findings.append(
                    f"{proc.name}: exit {code} on the final SIGTERM ({took:.1f} s)"
                )
        with suppress(Exception):
            self.ledger.stop()
        if hasattr(self, "sim_proc"):
            self.sim.close()
            self.sim_proc.stop(10)
        if self.netcut is not None:
            self.netcut.close()
        if hasattr(self, "broker"):
            self.broker.stop()

    def gateway_errors(self) -> dict[str, Counter[str]]:
        """Per process: the gateway's own error lines and uncaught exceptions, counted (the
        kafka client's connection noise during broker faults is left out)."""
        out: dict[str, Counter[str]] = {}
        for name in self.procs:
            bad: Counter[str] = Counter()
            for line in self._l(name).read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with suppress(ValueError):
                        entry = json.loads(line)
                        if entry.get("level") in ("error", "critical") and str(
                            entry.get("logger", "")
                        ).startswith("gateway"):
                            bad[f"{entry['logger']}: {str(entry.get('message'))[:200]}"] += 1
                elif UNCAUGHT.match(line):
                    bad[f"uncaught {line[:200]}"] += 1
            if bad:
                out[name] = bad
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("GC_SOAK_MINUTES", "30")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=40.0, help="complaints per second")
    ap.add_argument(
        "--mode",
        choices=("split", "run"),
        default="split",
        help="route + deliver, or one run process",
    )
    ap.add_argument(
        "--drain", type=float, default=240.0, help="max seconds to drain after the faults"
    )
    ap.add_argument("--gap-min", type=float, default=3.0)
    ap.add_argument("--gap-max", type=float, default=9.0)
    ap.add_argument("--without", type=lambda s: {x for x in s.split(",") if x}, default=set(),
                    help=f"fault kinds to leave out (comma-separated): {', '.join(WEIGHTS)}")  # fmt: skip
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--no-report", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) even on success")
    args = ap.parse_args(argv)
    unknown = args.without - set(WEIGHTS)
    if unknown:
        ap.error(f"unknown fault kinds: {sorted(unknown)}")
    soak = Soak(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    started = time.monotonic()
    try:
        soak.setup()
        verdict = soak.run()
        gateway_errors = soak.gateway_errors()
    finally:
        soak.teardown()
    body = report(soak, verdict, args, time.monotonic() - started, gateway_errors)
    print("\n" + body, flush=True)
    failed = not verdict.ok or verdict.figures["stuck_total"] > 0
    for name, lines in gateway_errors.items():
        print(f"\n{name}: gateway error lines (count x line):")
        for line, n in lines.most_common(12):
            print(f"  {n:5d} x {line}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "figures": verdict.figures,
                    "problems": verdict.problems,
                    "injected": soak.injected,
                    "not_injected": soak.not_injected,
                    "findings": soak.findings,
                    "exits": {n: dict(p.exits) for n, p in soak.procs.items()},
                    "failed": failed,
                    "tmp": str(soak.tmp),
                },
                indent=2,
                default=str,
            )
        )
    if not args.no_report:
        write_section("soak", body)
    if failed or args.keep:
        print(f"\nlogs kept in {soak.tmp}")
    else:
        shutil.rmtree(soak.tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
