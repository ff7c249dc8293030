"""The demo's orchestration: :class:`Demo` starts Kafka, the topics, the bureau simulator, the
gateway process and the publisher in order, runs the live view until the run ends, and stops them
in reverse order (on a second Ctrl-C without waiting for the gateway's drain)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import FrameType
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from gateway.config import KafkaSettings, Settings, load_settings
from gateway.dev.broker import LocalBroker, free_ports, load_broker_settings, port_in_use
from gateway.dev.bureaus import DEFAULT_ADMIN_PORT, BureauSimulator, default_tls_dir
from gateway.dev.demo_cases import CaseFigures, CaseSide, case_rows, parse_cases
from gateway.dev.demo_faults import FaultPlan, describe_faults
from gateway.dev.demo_gateway import GatewayProcess, gateway_env
from gateway.dev.demo_options import DEMO_DIR, DemoError, Options
from gateway.dev.demo_publisher import Publisher
from gateway.dev.demo_view import (
    BOLD,
    Scrape,
    Screen,
    Status,
    Style,
    frame,
    parse_metrics,
    summary_line,
)
from gateway.errors import GreenChannelError
from gateway.kafka.admin import Admin
from gateway.topics import Topics


class _Interrupted(BaseException):
    """SIGINT/SIGTERM arrived while things were still starting."""


def with_port_base(settings: Settings, base: int) -> Settings:
    """City endpoints moved to ``base+1 ..`` (in config order); scheme and host are kept."""
    cities = {}
    for index, (name, city) in enumerate(settings.cities.items(), start=1):
        parts = urlsplit(city.endpoint)
        endpoint = f"{parts.scheme}://{parts.hostname}:{base + index}"
        cities[name] = city.model_copy(update={"endpoint": endpoint})
    return settings.model_copy(update={"cities": cities})


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
        self.cases: CaseSide | None = None
        self.case_figures = CaseFigures()
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
        self.step("case lifecycle", self._start_cases)
        self.publisher = Publisher(self.settings, self.options)
        self.cleanup.callback(self._stop_publisher)

    # broker -------------------------------------------------------------------------------

    def _start_broker(self) -> str:
        if self.options.no_broker:
            bootstrap = self.settings.kafka.bootstrap_servers
            self._wait_kafka(bootstrap, 30.0)
            return f"using {bootstrap} (--no-broker)"
        broker = LocalBroker(load_broker_settings())
        self._use_bootstrap(broker.bootstrap)
        if port_in_use(broker.settings.port):
            try:
                self._wait_kafka(broker.bootstrap, 10.0)
            except GreenChannelError as exc:
                raise DemoError(
                    f"port {broker.settings.port} is in use, but not by a Kafka broker "
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

    def _start_cases(self) -> str:
        side = CaseSide(
            self.settings,
            self._sim(),
            gateway_env(self.settings, self._sim()),
            DEMO_DIR / "cases.log",
        )
        self.cases = side
        self.cleanup.callback(self._stop_cases, side)
        return side.start(self.stop)

    def _stop_cases(self, side: CaseSide) -> None:
        self.out.write("stopping the case keeper … ")
        self.out.flush()
        self.say(f"exited with {side.stop(self.hurry)}")

    def _frame(self, scrape: Scrape, status: Status) -> list[str]:
        lines = frame(scrape, self.cities, status, self.style)
        if self.cases is None:
            return lines
        table = case_rows(self.case_figures, self.cities)
        return [*lines, "", self.style("case lifecycle", BOLD), *table]

    def _scrape_cases(self, http: httpx.Client) -> None:
        if self.cases is None or not self.cases.metrics_url:
            return
        try:
            response = http.get(self.cases.metrics_url)
            response.raise_for_status()
            self.case_figures = parse_cases(response.text)
        except (httpx.HTTPError, ValueError):
            return

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
            if self.cases is not None:
                self.events += self.cases.tick(elapsed)
            scrape, error = self._scrape(http, scrape)
            self._scrape_cases(http)
            status = self._status(elapsed, error)
            self.screen.show(self._frame(scrape, status), summary_line(scrape, status))
            if self.stop.is_set():
                break
            if self.options.duration_s and elapsed >= self.options.duration_s:
                break
            exit_code = self.gateway.exit_code()
            if exit_code is not None:
                self.screen.final(self._frame(scrape, status))
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
        self._scrape_cases(http)
        status = self._status(elapsed, error, final=True)
        self.screen.final(self._frame(scrape, status))
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
        figures = self.case_figures
        closed = sum(s.get("CLOSED", 0.0) for s in figures.states.values())
        returned = sum(s.get("RETURNED", 0.0) for s in figures.states.values())
        lines.append(
            f"cases: {closed:,.0f} closed, {returned:,.0f} returned, "
            f"{sum(figures.results.values()):,.0f} handling results reported back "
            f"({prefix}cases.state.v1, {prefix}results.receipts.v1); log {DEMO_DIR / 'cases.log'}"
        )
        if pub.error:
            lines.append(f"publisher error: {pub.error}")
        self.say("\n" + "\n".join(lines) + "\n")
