"""Wiring for ``greenchannel run`` / ``route`` / ``deliver``: config -> cores -> ops endpoint.

One process runs the router and/or the delivery engine on their own threads, an ops HTTP
endpoint and the watchdog. SIGTERM/SIGINT drain: the loops stop fetching, in-flight
deliveries finish their current attempt or are handed back uncommitted, final offsets are
committed, clients close — all within ``shutdown_timeout_s``; otherwise the process exits
non-zero and the broker's session timeout hands the partitions to another member.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType

from gateway.avro.codec import Codec
from gateway.avro.store import SchemaStore
from gateway.cases import calendar as official_calendar
from gateway.cases.deadlines import calendar_from, rules_from
from gateway.cases.intake import CaseIntake
from gateway.cases.keeper import CaseKeeper
from gateway.cases.poller import CasePoller
from gateway.cases.receiver import CallbackReceivers
from gateway.cases.results import ResultSplitter, result_connectors, results_flow
from gateway.config import Settings
from gateway.connectors_registry import load_connectors
from gateway.delivery.engine import DeliveryEngine
from gateway.errors import ConfigError, FatalError, GreenChannelError
from gateway.http import preflight
from gateway.kafka.follow import TopicFollower
from gateway.ops.health import OpsServer
from gateway.ops.liveness import Liveness
from gateway.ops.metrics import Metrics
from gateway.ops.watchdog import Watchdog
from gateway.routing.router import RecordRouter, Router
from gateway.routing.rules import load_rules
from gateway.sdk import CallbackInbound, Connector, PollInbound, ResultOutbound, inbound_kind
from gateway.topics import Topics

CaseLoop = CaseIntake | CaseKeeper | CallbackReceivers | CasePoller | ResultSplitter

log = logging.getLogger(__name__)
EXIT_OK, EXIT_FATAL, EXIT_DRAIN_TIMEOUT = 0, 1, 4
EXIT_UNAVAILABLE = 5
"""Start-up could not reach a dependency (Kafka, the registry): not a configuration error."""
"""Exit codes (docs/errors.md): 0 drained, 1 a loop ended on a fatal error, 2 start-up refused
(configuration, ``gateway.cli``), 3 a blocking call outlived the watchdog
(``gateway.ops.watchdog.EXIT_STUCK``), 4 SIGTERM drain did not finish in time."""


GC_THRESHOLDS = (50_000, 20, 100)
"""CPython's cyclic GC thresholds for the gateway's processes (default: 700, 10, 10)."""


def tune_gc() -> None:
    """Make the cyclic garbage collector run ~70x less often.

    The loops allocate a dozen short-lived containers per record (decoded complaints, kafka-python
    records and futures) and hold a whole batch while its transaction is open; almost none of it
    is cyclic, reference counting frees it. With the default gen-0 threshold of 700 the collector
    ran every ~60 records and took ~7 % of the router's CPU. Start-up objects (modules, schemas,
    settings, compiled rules) are frozen first: later full collections never scan them.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


GIL_SWITCH_INTERVAL_S = 0.001
"""How long a thread may hold the interpreter lock while another waits for it (CPython's
default: 5 ms)."""


def tune_interpreter() -> None:
    """Let a thread that was woken take the interpreter lock within 1 ms instead of 5.

    A router transaction is a chain of hand-offs between the routing thread and kafka-python's
    sender and IO threads (AddPartitionsToTxn, produce, AddOffsetsToTxn, TxnOffsetCommit,
    EndTxn: each answer wakes a thread that must get the lock first). While another thread is
    busy, each hand-off waited up to the 5 ms default. At 1,000 complaints/s (1 KB, 2 shared
    cores) 1 ms brought ``send_offsets_to_transaction`` from 15.5-21.6 to 11.4-14.2 ms and
    ``commit_transaction`` from 14.9-19.3 to 11.6-12.3 ms (medians, 2 runs each).

    Delivery too: its pool threads hand the producer's per-partition locks to each other and
    to the sender thread, and a thread woken with a lock must get the interpreter lock before
    it can let go of it (``bench.deliver --sections D``: 346-389 -> 552-663 deliveries/s).
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ALLOCATOR_TUNING = {
    "MALLOC_ARENA_MAX": (_M_ARENA_MAX, 2),
    "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, 8 * 1024 * 1024),
}
"""glibc's allocator settings for a gateway process, each unless its environment variable is
set (then glibc has read it already).

By default glibc gives each of the process's eight threads its own arena (up to 8 per core)
and raises its mmap threshold after every large free, so the fetch responses and produce
batches (hundreds of KiB each, freed every transaction) end up in arenas that keep their pages:
the router (1 KB complaints, 8,000-record transactions) peaked at 130 MiB. Two arenas bound
that. The mmap threshold is fixed at 1 MiB and the heap keeps up to 8 MiB free at its top:
with a 128 KiB threshold every produce batch (256 KiB), every partition's fetched records and
every fetch response was a fresh mapping, zeroed and faulted in page by page by the kernel and
unmapped when freed; ``perf`` on the router at 1 KB put 49% of its CPU in the kernel (21% in
``clear_page``, 8% in page faults). With 1 MiB / 8 MiB: 13% in the kernel (the fetch response,
~3 MiB, is still mapped) and peak RSS 97 MiB; 2 MiB / 8 MiB: 8% and 108 MiB, 32 MiB / 64 MiB: 6%
and 111 MiB (one run each, same session)."""


def tune_allocator(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Apply :data:`ALLOCATOR_TUNING` with ``mallopt`` before the clients start their threads;
    returns what was set. Does nothing where there is no glibc (musl, macOS)."""
    env = os.environ if environ is None else environ
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    applied: dict[str, int] = {}
    for name, (param, value) in ALLOCATOR_TUNING.items():
        if name not in env and mallopt(param, value) == 1:
            applied[name] = value
    return applied


def open_schema_store(settings: Settings, codec: Codec) -> SchemaStore:
    """The schema store of ``codec`` with the configured directory loaded (a file the gateway
    cannot accept is a :class:`ConfigError`); see :mod:`gateway.avro.store`."""
    conf = settings.codec.schema_store
    store = SchemaStore(codec, wait_s=conf.wait_s)
    if conf.directory is not None:
        store.load_directory(conf.directory)
    return store


def follow_schema_store(settings: Settings, store: SchemaStore) -> TopicFollower | None:
    """Read the store topic to its end, then follow it (None when off or missing)."""
    conf = settings.codec.schema_store
    if not conf.follow_topic:
        return None
    topic = Topics(settings.topics.prefix).schemas
    follower = TopicFollower(settings.kafka, topic, store.on_record)
    if not follower.start(conf.start_timeout_s):
        log.warning("schema store topic %s does not exist (greenchannel topics init)", topic)
        return None
    store.catch_up = follower.catch_up
    return follower


@dataclass
class App:
    settings: Settings
    route: bool = True
    deliver: bool = True
    cities: list[str] | None = None
    instance_id: str = "0"
    keep_cases: bool = False
    """Also run the case intake and the case keeper (``greenchannel cases keep``)."""
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    liveness: Liveness = field(default_factory=Liveness)
    """Progress of every loop (``/healthz``): the router and the deliverer (loop, workers,
    commit points) register in it."""

    def __post_init__(self) -> None:
        s = self.settings
        self.stop = threading.Event()
        self.watchdog = Watchdog(s.router.watchdog_s)
        # builds its registry client from codec.registry_url
        self.codec = Codec(s.codec, kind_topics={"receipt": Topics(s.topics.prefix).receipts})
        self.schema_store = open_schema_store(s, self.codec)
        self.schema_follower: TopicFollower | None = None  # started by run(), before the loops
        self.router: Router | None = None
        self.engine: DeliveryEngine | None = None
        self.result_engine: DeliveryEngine | None = None
        """Handling results to the bureaus (with ``keep_cases``)."""
        self.errors: list[BaseException] = []
        self._install_calendar()
        if self.deliver:  # refuse a configuration that cannot deliver before touching Kafka
            cities = self.cities or [c for c, cs in s.cities.items() if cs.enabled]
            unknown = [c for c in cities if c not in s.cities]
            if unknown:
                raise ConfigError(f"--city names unknown cities: {', '.join(unknown)}")
            connectors = load_connectors({s.connector_of(c) for c in cities})
            self._check_delivery(connectors, cities)
        if self.route:
            classifier = load_rules(s.router.rules_file)
            rr = RecordRouter(s, classifier, self.codec, lambda: int(self.clock() * 1000))
            self.router = Router(
                s,
                rr,
                self.metrics,
                self.watchdog,
                instance_id=self.instance_id,
                liveness=self.liveness,
            )
        if self.deliver:
            self.engine = DeliveryEngine(
                s,
                connectors,
                self.codec,
                self.metrics,
                self.watchdog,
                cities=cities,
                liveness=self.liveness,
            )
        self.case_loops: list[CaseLoop] = []
        self.receivers: CallbackReceivers | None = None
        if self.keep_cases:
            self.case_loops = [
                *self._inbound_loops(),
                CaseIntake(
                    s, self.codec, self.metrics, self.watchdog, instance_id=self.instance_id
                ),
                CaseKeeper(
                    s,
                    self.codec,
                    self.deadlines,
                    self.metrics,
                    self.watchdog,
                    instance_id=self.instance_id,
                ),
            ]
        self.metrics.watch_heartbeats(self.watchdog.heartbeat_ages)

    def _check_delivery(self, connectors: dict[str, Connector], cities: list[str]) -> None:
        """Transport policy, secret and TLS files, before anything is consumed (ConfigError)."""
        now = self.clock()
        certs, _ = preflight(self.settings, connectors, cities, now)
        warn_s = self.settings.delivery.certificate_warn_days * 86_400
        for cert in certs:
            self.metrics.on_client_certificate(cert.city, cert.not_after_s)
            if cert.not_after_s - now < warn_s:
                log.warning(
                    "cities.%s.tls.cert_file expires in %.1f days: rotate it",
                    cert.city,
                    (cert.not_after_s - now) / 86_400,
                )

    def _inbound_loops(self) -> list[CaseLoop]:
        """The callback receivers and the poller of the enabled cities' connectors."""
        s = self.settings
        cities = [c for c, cs in s.cities.items() if cs.enabled and cs.inbound.enabled]
        connectors = load_connectors({s.connector_of(c) for c in cities})
        by_city = {c: connectors[s.connector_of(c)] for c in cities}
        callbacks = {
            c: k
            for c, k in by_city.items()
            if isinstance(k, CallbackInbound) and inbound_kind(k) == "callback"
        }
        polls = {
            c: k
            for c, k in by_city.items()
            if isinstance(k, PollInbound) and inbound_kind(k) == "poll"
        }
        loops: list[CaseLoop] = []
        if callbacks:
            self.receivers = CallbackReceivers(s, callbacks, self.codec, self.metrics)
            loops.append(self.receivers)
        if polls:
            loops.append(
                CasePoller(
                    s, polls, self.codec, self.metrics, self.watchdog, instance_id=self.instance_id
                )
            )
        reporting = [c for c, k in by_city.items() if isinstance(k, ResultOutbound)]
        if reporting:
            loops.append(
                ResultSplitter(
                    s,
                    reporting,
                    self.codec,
                    self.metrics,
                    self.watchdog,
                    instance_id=self.instance_id,
                )
            )
            self.result_engine = DeliveryEngine(
                s,
                result_connectors(connectors),
                self.codec,
                self.metrics,
                self.watchdog,
                cities=reporting,
                liveness=self.liveness,
                flow=results_flow(s),
            )
        return loops

    def _install_calendar(self) -> None:
        """The official working-day calendar for every deadline of this process (the router's
        escalation builder reads the installed one), and its unknown-days gauge."""
        cases = self.settings.cases
        today = official_calendar.local_date(int(self.clock() * 1000))
        self.calendar = calendar_from(cases, today=today)
        self.deadlines = rules_from(cases, self.calendar)
        official_calendar.install(self.calendar)
        window = cases.calendar.lookahead_days

        def unknown_days() -> float:
            now = official_calendar.local_date(int(self.clock() * 1000))
            return float(self.calendar.unknown_days(now, window))

        self.metrics.watch_calendar(unknown_days)

    def ready(self) -> dict[str, bool]:
        parts: dict[str, bool] = {}
        if self.router is not None:
            parts["router"] = self.router.is_ready()
        if self.engine is not None:
            parts["deliver"] = self.engine.ready.is_set()
        if self.result_engine is not None:
            parts["results"] = self.result_engine.ready.is_set()
        for loop in self.case_loops:
            parts[_loop_name(loop)] = loop.ready.is_set()
        return parts

    def _guarded(self, name: str, target: Callable[[threading.Event], None]) -> threading.Thread:
        def run() -> None:
            try:
                target(self.stop)
            except BaseException as exc:
                log.critical(
                    "%s stopped: %s", name, exc, exc_info=not isinstance(exc, GreenChannelError)
                )
                self.errors.append(exc)
                self.stop.set()

        return threading.Thread(target=run, name=name, daemon=True)

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: draining", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self, shutdown_timeout_s: float = 20.0, with_ops: bool = True) -> int:
        obs = self.settings.observability
        # the writer schemas the store holds now, before the first record is decoded (here, not
        # in __init__: a SIGTERM while it reads finds the signal handlers installed)
        self.schema_follower = follow_schema_store(self.settings, self.schema_store)
        ops = None
        if with_ops:
            ops = OpsServer(
                obs.host,
                obs.port,
                self.metrics.registry,
                self.watchdog.heartbeat_ages,
                self.ready,
                max_connections=obs.max_connections,
                request_timeout_s=obs.request_timeout_s,
                progress=self.liveness,
            )
            ops.start()
            log.info("ops endpoint on http://%s:%d (/metrics /healthz /readyz)", obs.host, ops.port)
        self.watchdog.start()
        threads = []
        if self.router is not None:
            threads.append(self._guarded("router", self.router.run))
        for engine in (self.engine, self.result_engine):
            if engine is not None:
                threads.append(
                    self._guarded(engine.flow.name, _draining(engine, shutdown_timeout_s))
                )
        threads += [self._guarded(_loop_name(loop), loop.run) for loop in self.case_loops]
        for t in threads:
            t.start()
        while not self.stop.wait(0.2):
            pass
        deadline = time.monotonic() + shutdown_timeout_s + 5
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self.schema_follower is not None:
            self.schema_follower.stop()
        if ops is not None:
            ops.stop()
        gave_up = any(e is not None and not e.drained for e in (self.engine, self.result_engine))
        if gave_up or any(t.is_alive() for t in threads):
            log.error("drain did not finish within %gs", shutdown_timeout_s)
            return EXIT_DRAIN_TIMEOUT
        if any(isinstance(e, FatalError | Exception) for e in self.errors):
            return EXIT_FATAL
        return EXIT_OK


def _draining(engine: DeliveryEngine, timeout_s: float) -> Callable[[threading.Event], None]:
    return lambda stop: engine.run(stop, timeout_s)


def _loop_name(loop: CaseLoop) -> str:
    return "cases-callbacks" if isinstance(loop, CallbackReceivers) else loop.name
