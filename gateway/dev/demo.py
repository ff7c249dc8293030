"""``make demo``: the whole gateway running locally, with a live per-city view in the terminal.

Starts, in order, and stops in reverse order on exit (duration elapsed, Ctrl-C or SIGTERM):

1. the local Kafka broker (:class:`~gateway.dev.broker.LocalBroker`, ``broker.*`` settings:
   127.0.0.1:19092, data in ``var/kafka``). A Kafka broker already listening there is reused and
   left running; ``--no-broker`` uses ``kafka.bootstrap_servers`` /
   ``GREENCHANNEL_BOOTSTRAP_SERVERS`` instead;
2. every topic (as ``greenchannel topics init``);
3. the bureau simulator, in this process, on the configured city ports (``--port-base`` moves
   them; ``0`` = free ports), with one city flaky (``--flaky``: 30 % 5xx and a connection-refused
   outage, ``--outage-at``/``--outage-for``) and one rejecting a share of cases as outside its
   jurisdiction (``--rejecting``), so retries, an open breaker and dead letters show up;
4. the gateway, as a real ``greenchannel run`` process (own session, logs to
   ``var/demo/gateway.log``), stopped with SIGTERM so its drain is the real one;
5. a sample publisher thread: ``--rate`` complaints per second (15 % major), a few undecodable
   records among them so the router's dead-letter topic is used too.

The live view scrapes the gateway's ``/metrics`` once a second (see
:mod:`gateway.dev.demo_view`); it is redrawn in place on a terminal and reduced to a progress
line every five seconds otherwise. Exit status: 0 when everything started and stopped cleanly
(Ctrl-C included), 1 when something failed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import click
import httpx

from gateway.admin import Admin
from gateway.config import (
    DeliverySettings,
    KafkaSettings,
    RouterSettings,
    Settings,
    TopicSettings,
    load_settings,
)
from gateway.dev.broker import LocalBroker, free_ports, port_in_use
from gateway.dev.bureau_city import Faults
from gateway.dev.bureaus import DEFAULT_ADMIN_PORT, BureauSimulator, default_tls_dir
from gateway.dev.demo_view import Scrape, Screen, Status, Style, frame, parse_metrics, summary_line
from gateway.errors import GreenChannelError
from gateway.topics import Topics

if TYPE_CHECKING:
    from gateway.codec import Codec
    from gateway.kafka import Producer

log = logging.getLogger("gateway.dev.demo")

DEMO_DIR = Path("var/demo")
FLAKY_KNOBS: dict[str, Any] = {"error_5xx_ratio": 0.3}
"""What ``--flaky CITY`` turns on for the whole run (the outage comes on top)."""
REJECT_RATIO = 0.1
"""Share of new cases ``--rejecting CITY`` refuses ("outside jurisdiction": a dead letter)."""
JUNK = b"\x00demo: not an Avro complaint"
GATEWAY_DRAIN_S = 10.0


class DemoError(Exception):
    """Something the demo needs could not be started (the message says what and why)."""


class _Interrupted(BaseException):
    """SIGINT/SIGTERM arrived while things were still starting."""


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float = 60.0
    rate: float = 50.0
    count: int | None = None
    major_share: float = 0.15
    junk_share: float = 0.005
    flaky: str | None = "hefei"
    rejecting: str | None = "wuhu"
    outage_at_s: float = 20.0
    outage_for_s: float = 20.0
    no_broker: bool = False
    port_base: int | None = None
    metrics_port: int | None = None
    seed: int | None = None


# --- parts ---------------------------------------------------------------------------------------


class Publisher:
    """Sample complaints at a steady rate, on a thread, until stopped or ``count`` are sent."""

    def __init__(self, settings: Settings, options: Options) -> None:
        from gateway.dev.samples import Pacer, SampleFactory, utc_now_ms
        from gateway.kafka import Producer

        self.topic = Topics(settings.topics.prefix).complaints
        self.count = options.count
        self.junk_every = round(1 / options.junk_share) if options.junk_share > 0 else 0
        seed = options.seed if options.seed is not None else int(time.time()) % 10_000
        self.factory = SampleFactory(
            seed,
            major_share=options.major_share,
            start_ms=utc_now_ms(),
            interval_ms=max(1, round(1000 / options.rate)),
        )
        self.pacer = Pacer(options.rate)
        self.sent = self.majors = self.junk = 0
        self.error: str | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        from gateway.codec import Codec

        self.codec: Codec = Codec(settings.codec)
        self.producer: Producer = Producer(settings.kafka, linger_ms=20)
        self._thread = threading.Thread(target=self._run, name="demo-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _more(self) -> bool:
        return not self._stop.is_set() and (self.count is None or self.sent < self.count)

    def _run(self) -> None:
        from gateway.dev.samples import MAJOR_HEADER

        futures: list[Any] = []
        try:
            while self._more():
                self.pacer.wait()
                if self.junk_every and (self.sent + 1) % self.junk_every == 0:
                    key = f"junk-{self.junk}".encode()
                    futures.append(self.producer.send(self.topic, JUNK, key=key))
                    self.junk += 1
                else:
                    sample = self.factory.next()
                    value = self.codec.encode("complaint", sample.record, self.topic)
                    futures.append(
                        self.producer.send(
                            self.topic,
                            value,
                            key=sample.record["complaint_id"].encode(),
                            headers=[(MAJOR_HEADER, b"1" if sample.major else b"0")],
                        )
                    )
                    self.majors += sample.major
                self.sent += 1
                if len(futures) >= 200:
                    self._settle(futures)
            self._settle(futures)
        except GreenChannelError as exc:
            self.error = str(exc)
            log.error("publisher stopped: %s", exc)
        finally:
            self.done.set()

    def _settle(self, futures: list[Any]) -> None:
        self.producer.flush(30.0)
        failed = [f for f in futures if f.failed()]
        futures.clear()
        if failed:
            raise GreenChannelError(f"{len(failed)} sends failed, first: {failed[0].exception!r}")

    def stop(self) -> None:
        """Stop sending and close the producer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15.0)
        with suppress(GreenChannelError):
            self.producer.close(5.0)
        self.codec.close()


class GatewayProcess:
    """``greenchannel run`` as a child process in its own session (Ctrl-C reaches only us)."""

    def __init__(self, env: dict[str, str], metrics_port: int, log_path: Path) -> None:
        script = Path(sys.executable).with_name("greenchannel")
        base = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
        self.command = [
            *base, "run", "--metrics-port", str(metrics_port),
            "--shutdown-timeout", f"{GATEWAY_DRAIN_S:g}",
        ]  # fmt: skip
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True,
            )  # fmt: skip
        return self.proc.pid

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, base_url: str, timeout_s: float, stop: threading.Event) -> None:
        """Until ``/readyz`` answers 200 (router and deliverer have their partitions)."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline and not stop.is_set():
                code = self.exit_code()
                if code is not None:
                    raise DemoError(f"the gateway exited with {code}:\n{self.log_tail()}")
                with suppress(httpx.HTTPError):
                    if http.get(f"{base_url}/readyz").status_code == 200:
                        return
                stop.wait(0.3)
        if not stop.is_set():
            raise DemoError(f"the gateway is not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, hurry: threading.Event) -> int | None:
        """SIGTERM and wait for the drain; SIGKILL after the drain timeout or on ``hurry``."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + GATEWAY_DRAIN_S + 10.0
            while proc.poll() is None and time.monotonic() < deadline and not hurry.is_set():
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(0.2)
            if proc.poll() is None:
                proc.kill()
        return proc.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no gateway log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class FaultPlan:
    """The simulator's misbehaviour over the run: a flaky city, a strict one, one outage."""

    flaky: str | None
    rejecting: str | None
    outage_at_s: float
    outage_for_s: float
    stage: int = 0
    """0 before the outage, 1 during, 2 after."""

    def apply_baseline(self, sim: BureauSimulator) -> list[str]:
        notes = []
        if self.flaky:
            sim.city(self.flaky).set_faults(**FLAKY_KNOBS)
            note = f"{self.flaky} is flaky: {FLAKY_KNOBS['error_5xx_ratio']:.0%} 5xx"
            if self.outage_for_s > 0:
                end = self.outage_at_s + self.outage_for_s
                note += f", and refuses connections from {self.outage_at_s:g}s to {end:g}s"
            notes.append(note)
        if self.rejecting:
            sim.city(self.rejecting).set_faults(reject_ratio=REJECT_RATIO)
            notes.append(
                f"{self.rejecting} refuses {REJECT_RATIO:.0%} of new cases "
                "(outside jurisdiction): dead letters"
            )
        return notes

    def tick(self, sim: BureauSimulator, elapsed_s: float) -> list[str]:
        """Start or end the outage when it is time; returns what happened."""
        if not self.flaky or self.outage_for_s <= 0:
            return []
        stamp = f"{elapsed_s:4.0f}s"
        if self.stage == 0 and elapsed_s >= self.outage_at_s:
            self.stage = 1
            sim.city(self.flaky).set_faults(outage=True, outage_mode="refuse")
            return [f"{stamp}  {self.flaky}: outage begins (connection refused)"]
        if self.stage == 1 and elapsed_s >= self.outage_at_s + self.outage_for_s:
            self.stage = 2
            sim.city(self.flaky).set_faults(outage=False)
            return [f"{stamp}  {self.flaky}: back up (the breaker recovers at its next probe)"]
        return []


def describe_faults(faults: Faults) -> str:
    """A short description of a simulated bureau's knobs for the table."""
    parts = []
    if faults.outage:
        parts.append("OUTAGE")
    if faults.hang:
        parts.append("hanging")
    if faults.error_5xx_ratio:
        parts.append(f"5xx {faults.error_5xx_ratio:.0%}")
    if faults.reject_ratio:
        parts.append(f"rejects {faults.reject_ratio:.0%}")
    if faults.busy_ratio:
        parts.append(f"busy {faults.busy_ratio:.0%}")
    if faults.latency_ms and not parts:
        parts.append(f"+{faults.latency_ms:g} ms")
    return ", ".join(parts) or "ok"


def with_port_base(settings: Settings, base: int) -> Settings:
    """City endpoints moved to ``base+1 ..`` (in config order); scheme and host are kept."""
    cities = {}
    for index, (name, city) in enumerate(settings.cities.items(), start=1):
        parts = urlsplit(city.endpoint)
        endpoint = f"{parts.scheme}://{parts.hostname}:{base + index}"
        cities[name] = city.model_copy(update={"endpoint": endpoint})
    return settings.model_copy(update={"cities": cities})


def gateway_env(settings: Settings, sim: BureauSimulator) -> dict[str, str]:
    """The gateway's environment: ours, plus the broker, the simulator's real endpoints and,
    under a non-default topic prefix, consumer groups and transactional ids of its own (so a
    demo on a shared cluster never joins, or fences, somebody else's gateway)."""
    env = dict(os.environ)
    env["GREENCHANNEL_BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers
    env["PYTHONUNBUFFERED"] = "1"
    for name in sim.names():
        env[f"GREENCHANNEL_CITIES__{name.upper()}__ENDPOINT"] = sim.endpoint(name)
    prefix = settings.topics.prefix
    if prefix != TopicSettings().prefix:
        tag = prefix.strip(".") or "demo"
        router, delivery = RouterSettings(), DeliverySettings()
        defaults = {
            "ROUTER__GROUP_ID": (settings.router.group_id, router.group_id),
            "ROUTER__TRANSACTIONAL_ID_PREFIX": (
                settings.router.transactional_id_prefix,
                router.transactional_id_prefix,
            ),
            "DELIVERY__GROUP_ID": (settings.delivery.group_id, delivery.group_id),
        }
        for key, (current, default) in defaults.items():
            if current == default:
                env[f"GREENCHANNEL_{key}"] = f"{default}-{tag}"
    return env


# --- the demo ------------------------------------------------------------------------------------


@dataclass
class Demo:
    options: Options
    out: TextIO = field(default_factory=lambda: sys.stdout)
    tty: bool = False

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self.phase = "starting"
        self.stopped_by: str | None = None
        self.failed = False
        self.cleanup = ExitStack()
        self.style = Style(self.tty, (self.out.encoding or "").lower().replace("-", "") == "utf8")
        self.screen = Screen(self.out, tty=self.tty)
        self.events: list[str] = []
        self.settings: Settings = load_settings()
        self.cities = list(self.settings.router.green_cities)
        self.sim: BureauSimulator | None = None
        self.gateway: GatewayProcess | None = None
        self.publisher: Publisher | None = None
        self.metrics_url = ""
        self.started_at = 0.0
        self.plan = FaultPlan(
            self.options.flaky,
            self.options.rejecting,
            self.options.outage_at_s,
            self.options.outage_for_s,
        )

    # --- output ----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.screen.message(text)

    def step(self, what: str, action: Callable[[], str]) -> None:
        """``what … result`` on one line once ``action`` finished."""
        self.out.write(f"{what} … ")
        self.out.flush()
        try:
            result = action()
        except BaseException:
            self.out.write("\n")
            raise
        self.say(result)

    # --- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.phase == "stopping":
            self.hurry.set()  # a second Ctrl-C: stop waiting for the drain
            return
        self.stopped_by = signal.Signals(signum).name
        self.stop.set()
        if self.phase == "starting":
            raise _Interrupted(self.stopped_by)

    # --- run -------------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        code = 0
        try:
            self._start()
            self.phase = "running"
            code = self._live()
        except _Interrupted:
            self.say(f"\n{self.stopped_by} during start-up: stopping what was started")
        except (DemoError, GreenChannelError) as exc:
            self.say(f"\nerror: {exc}")
            code = 1
        finally:
            self.phase = "stopping"
            self.screen.show_cursor()
            try:
                self.cleanup.close()
            except Exception as exc:  # the other parts were stopped: report it
                self.say(f"error while stopping: {exc}")
                self.failed = True
            finally:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if self.hurry.is_set() or self.failed:
            code = code or 1
        self.say("demo stopped" + ("" if code == 0 else f" (exit {code})"))
        return code

    def _start(self) -> None:
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        self.step("Kafka", self._start_broker)
        self.step("topics", self._create_topics)
        self.step("bureau simulator", self._start_simulator)
        for note in self.plan.apply_baseline(self._sim()):
            self.say(f"  {note}")
        self._start_gateway()
        self.publisher = Publisher(self.settings, self.options)
        self.cleanup.callback(self._stop_publisher)

    # broker -------------------------------------------------------------------------------

    def _start_broker(self) -> str:
        if self.options.no_broker:
            bootstrap = self.settings.kafka.bootstrap_servers
            self._wait_kafka(bootstrap, 30.0)
            return f"using {bootstrap} (--no-broker)"
        broker = LocalBroker(self.settings.broker)
        self._use_bootstrap(broker.bootstrap)
        if port_in_use(self.settings.broker.port):
            try:
                self._wait_kafka(broker.bootstrap, 10.0)
            except GreenChannelError as exc:
                raise DemoError(
                    f"port {self.settings.broker.port} is in use, but not by a Kafka broker "
                    f"({exc}); stop it, or use --no-broker with GREENCHANNEL_BOOTSTRAP_SERVERS"
                ) from exc
            return f"reusing the broker already running at {broker.bootstrap} (left running)"
        first = not (broker.libs_dir / f"kafka_2.13-{broker.settings.kafka_version}.jar").exists()
        if first:
            self.out.write("(first run: assembling Kafka from Maven Central, about a minute) ")
            self.out.flush()
        self.cleanup.callback(self._stop_broker, broker)
        broker.start()
        return f"started at {broker.bootstrap} (data {broker.data_dir}, log {broker.log_file})"

    def _stop_broker(self, broker: LocalBroker) -> None:
        self.out.write(f"stopping Kafka at {broker.bootstrap} … ")
        self.out.flush()
        stopped = broker.stop(timeout_s=5.0 if self.hurry.is_set() else 60.0)
        self.say("stopped" if stopped else "was not running")

    def _use_bootstrap(self, bootstrap: str) -> None:
        kafka = self.settings.kafka.model_copy(update={"bootstrap_servers": bootstrap})
        self.settings = self.settings.model_copy(update={"kafka": kafka})

    @staticmethod
    def _wait_kafka(bootstrap: str, timeout_s: float) -> None:
        with Admin(KafkaSettings(bootstrap_servers=bootstrap)) as admin:
            admin.wait_ready(timeout_s)

    def _create_topics(self) -> str:
        prefix = self.settings.topics.prefix
        specs = Topics(prefix).all(self.settings.router.green_cities)
        with Admin(self.settings.kafka) as admin:
            admin.wait_ready(30.0)
            report = admin.create_topics(specs, self.settings.topics.replication_factor)
        return (
            f"{len(report.created)} created, {len(report.existing)} already there "
            f"(prefix {prefix!r})"
        )

    # simulator ----------------------------------------------------------------------------

    def _sim(self) -> BureauSimulator:
        assert self.sim is not None
        return self.sim

    def _start_simulator(self) -> str:
        base = self.options.port_base
        settings = self.settings if not base else with_port_base(self.settings, base)
        admin_port = DEFAULT_ADMIN_PORT if base is None else base
        ephemeral = base == 0
        if not ephemeral:
            wanted = [urlsplit(c.endpoint).port or 80 for c in settings.cities.values()]
            busy = [p for p in [admin_port, *wanted] if port_in_use(p)]
            if busy:
                self.out.write(f"(ports {', '.join(map(str, busy))} are busy: using free ports) ")
                ephemeral, admin_port = True, 0
        tls_dir = default_tls_dir(settings)
        sim = BureauSimulator(settings, tls_dir, ephemeral_ports=ephemeral, admin_port=admin_port)
        self.cleanup.callback(self._stop_simulator, sim)
        self.sim = sim.start()
        return f"{len(sim.names())} cities, admin {sim.admin_url} (TLS files in {tls_dir})"

    def _stop_simulator(self, sim: BureauSimulator) -> None:
        sim.stop()
        self.say("bureau simulator stopped")

    # gateway ------------------------------------------------------------------------------

    def _start_gateway(self) -> None:
        obs = self.settings.observability
        port = self.options.metrics_port
        if port is None:
            port = obs.port
        if port == 0 or port_in_use(port):
            if port:
                self.say(f"  metrics port {port} is busy: using a free one")
            port = free_ports(1)[0]
        host = "127.0.0.1" if obs.host in ("0.0.0.0", "", "::") else obs.host
        base_url = f"http://{host}:{port}"
        self.metrics_url = f"{base_url}/metrics"
        gateway = GatewayProcess(
            gateway_env(self.settings, self._sim()), port, DEMO_DIR / "gateway.log"
        )
        self.gateway = gateway
        self.cleanup.callback(self._stop_gateway, gateway)
        pid = gateway.start()
        self.say(f"gateway   pid {pid}: {' '.join(gateway.command[-6:])}  (log {gateway.log_path})")
        self.step("gateway ready", lambda: self._wait_gateway(gateway, base_url))

    def _wait_gateway(self, gateway: GatewayProcess, base_url: str) -> str:
        started = time.monotonic()
        gateway.wait_ready(base_url, 90.0, self.stop)
        return f"after {time.monotonic() - started:.1f} s; metrics at {self.metrics_url}"

    def _stop_gateway(self, gateway: GatewayProcess) -> None:
        self.out.write("stopping the gateway (SIGTERM, draining) … ")
        self.out.flush()
        code = gateway.stop(self.hurry)
        self.say(f"exited with {code}")
        if code:
            self.failed = True

    # publisher ----------------------------------------------------------------------------

    def _stop_publisher(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()

    # --- live view -------------------------------------------------------------------------

    def _live(self) -> int:
        assert self.publisher is not None and self.gateway is not None
        self.say(
            f"publishing {self.options.rate:g} complaints/s "
            f"({self.options.major_share:.0%} major) for "
            + (f"{self.options.duration_s:g} s" if self.options.duration_s else "ever")
            + "\n"
        )
        self.started_at = time.monotonic()
        self.publisher.start()
        self.screen.hide_cursor()
        http = httpx.Client(timeout=2.0)
        self.cleanup.callback(http.close)
        code, settled, scrape = 0, 0, Scrape()
        error: str | None = None
        while True:
            elapsed = time.monotonic() - self.started_at
            self.events += self.plan.tick(self._sim(), elapsed)
            scrape, error = self._scrape(http, scrape)
            status = self._status(elapsed, error)
            self.screen.show(
                frame(scrape, self.cities, status, self.style), summary_line(scrape, status)
            )
            if self.stop.is_set():
                break
            if self.options.duration_s and elapsed >= self.options.duration_s:
                break
            exit_code = self.gateway.exit_code()
            if exit_code is not None:
                self.screen.final(frame(scrape, self.cities, status, self.style))
                self.say(f"the gateway exited with {exit_code}:\n{self.gateway.log_tail()}")
                return 1
            if self.publisher.error and not any("publisher" in e for e in self.events):
                self.events.append(f"{elapsed:4.0f}s  publisher stopped: {self.publisher.error}")
            settled = settled + 1 if self._settled(scrape) else 0
            if not self.options.duration_s and settled >= 3:
                break
            self.stop.wait(max(0.05, 1.0 - (time.monotonic() - self.started_at - elapsed)))
        self.publisher.stop()
        elapsed = time.monotonic() - self.started_at
        scrape, error = self._scrape(http, scrape)
        status = self._status(elapsed, error, final=True)
        self.screen.final(frame(scrape, self.cities, status, self.style))
        self._summary(scrape, elapsed)
        return code

    def _scrape(self, http: httpx.Client, last: Scrape) -> tuple[Scrape, str | None]:
        try:
            response = http.get(self.metrics_url)
            response.raise_for_status()
            return parse_metrics(response.text), None
        except (httpx.HTTPError, ValueError) as exc:
            return last, f"{type(exc).__name__}: {exc}"

    def _settled(self, scrape: Scrape) -> bool:
        """``--count`` without ``--duration``: everything published has gone all the way."""
        pub = self.publisher
        if pub is None or self.options.count is None or not pub.done.is_set():
            return False
        idle = all((c.oldest_s or 0.0) == 0.0 for c in scrape.cities.values())
        return scrape.consumed >= pub.sent and scrape.router_lag == 0 and idle

    def _status(self, elapsed: float, error: str | None, *, final: bool = False) -> Status:
        pub = self.publisher
        sim = self._sim()
        return Status(
            elapsed_s=elapsed,
            duration_s=self.options.duration_s,
            published=pub.sent if pub else 0,
            majors=pub.majors if pub else 0,
            junk=pub.junk if pub else 0,
            rate=self.options.rate,
            count=self.options.count,
            bureaus={n: describe_faults(sim.city(n).faults()) for n in sim.names()},
            metrics_url=self.metrics_url,
            events=self.events,
            scrape_error=error,
            final=final,
        )

    def _summary(self, scrape: Scrape, elapsed: float) -> None:
        pub = self.publisher
        assert pub is not None
        why = f"stopped by {self.stopped_by}" if self.stopped_by else "finished"
        routed = sum(scrape.routed.values())
        prefix = self.settings.topics.prefix
        lines = [
            f"{why} after {elapsed:.0f} s: published {pub.sent:,} records "
            f"({pub.majors:,} major complaints, {pub.junk:,} undecodable)",
            f"routed {routed:,.0f} complaints, dead-lettered {scrape.router_dead_letters:,.0f} "
            f"({prefix}dlq.complaints.v1)",
            f"delivered {scrape.delivered:,.0f} escalations to the bureaus with "
            f"{scrape.retries:,.0f} retries; {scrape.delivery_dead_letters:,.0f} dead letters "
            f"({prefix}dlq.escalations.v1)",
            f"/metrics was served at {self.metrics_url} (the gateway stops now); "
            f"gateway log {DEMO_DIR / 'gateway.log'}",
        ]
        if pub.error:
            lines.append(f"publisher error: {pub.error}")
        self.say("\n" + "\n".join(lines) + "\n")


# --- command line --------------------------------------------------------------------------------


def _setup_logging() -> None:
    """Our own and the Kafka client's log lines go to a file: the terminal is the view's."""
    from gateway.logs import MaskingTextFormatter

    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(DEMO_DIR / "demo.log", mode="w", encoding="utf-8")
    handler.setFormatter(MaskingTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _city(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value.lower() in ("", "none", "-"):
        return None
    try:
        cities = load_settings().cities
    except GreenChannelError as exc:
        raise click.UsageError(str(exc)) from exc
    if value not in cities:
        raise click.BadParameter(f"{value!r} is not a configured city ({', '.join(cities)})")
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to publish and watch; 0 = until Ctrl-C (or until --count settled).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    help="Sample complaints per second.",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Stop publishing after this many."
)
@click.option(
    "--major-share",
    type=click.FloatRange(0, 1),
    default=0.15,
    show_default=True,
    help="Share of major complaints (escalated for green-channel cities).",
)
@click.option(
    "--junk-share",
    type=click.FloatRange(0, 1),
    default=0.005,
    show_default=True,
    help="Share of undecodable records (the router dead-letters them).",
)
@click.option(
    "--flaky",
    default="hefei",
    show_default=True,
    callback=_city,
    metavar="CITY",
    help="City answering 30% 5xx, with an outage; 'none' for none.",
)
@click.option(
    "--rejecting",
    default="wuhu",
    show_default=True,
    callback=_city,
    metavar="CITY",
    help=f"City refusing {REJECT_RATIO:.0%} of new cases (dead letters); 'none' for none.",
)
@click.option(
    "--outage-at",
    "outage_at_s",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Seconds into the run when the flaky city's outage begins.",
)
@click.option(
    "--outage-for",
    "outage_for_s",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Seconds the flaky city refuses connections (0: no outage).",
)
@click.option(
    "--no-broker",
    is_flag=True,
    help="Do not start Kafka: use kafka.bootstrap_servers / GREENCHANNEL_BOOTSTRAP_SERVERS.",
)
@click.option(
    "--port-base",
    type=click.IntRange(min=0, max=65_000),
    default=None,
    help="Simulator admin API on BASE, cities on BASE+1.. (0: any free ports). "
    "Default: the configured endpoints and 18100.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65_535),
    default=None,
    help="Gateway /metrics port (default: observability.port; 0 or busy: a free port).",
)
@click.option("--seed", type=int, default=None, help="Sample generator seed (default: time).")
def main(**kwargs: Any) -> None:
    """Local Kafka + bureau simulator + gateway + sample publisher, with a live per-city view."""
    _setup_logging()
    try:
        demo = Demo(Options(**kwargs), sys.stdout, tty=sys.stdout.isatty())
    except GreenChannelError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sys.exit(demo.run())


if __name__ == "__main__":
    main()
