"""Test harness: tiers by directory, a real Kafka broker per xdist worker, per-test topics.

Tiers
-----
Every test is marked by its directory (``tests/<dir>/...``, see ``DIR_MARKERS``) and by what it
needs: ``kafka`` when it needs a broker (its directory says so, or it uses ``kafka_bootstrap`` or
a fixture built on it), ``deploy`` for the deployment validators (promtool, prometheus, helm,
hadolint, compose-go from ``deploy/check.sh install``), ``slow`` for the long ones. ``make
test-fast`` runs ``(unit or contract) and not (kafka or deploy)``: no broker, no tools, no
network. A test under ``tests/unit`` or ``tests/contract`` that asks for the broker is a
collection error: move it to a broker tier.

Parallel runs
-------------
Under pytest-xdist every worker is its own pytest session, so the session fixtures below give
each worker its own broker, on its own free ports, with its data under that worker's temp dir.
Nothing in the tests may use a fixed port or a shared path; topics are unique per test.

Fixtures
--------
``kafka_bootstrap`` (session) -> ``str``
    ``host:port`` of the test cluster. ``GREENCHANNEL_BOOTSTRAP_SERVERS`` names an external
    cluster (ignored when ``CI`` is set: CI always runs its own broker); otherwise a
    :class:`~gateway.dev.broker.LocalBroker` is started on a free port pair with its data under
    the pytest temp dir (per xdist worker) and stopped at the end. The Kafka classpath is cached in
    ``~/.cache/greenchannel/kafka`` (or ``GREENCHANNEL_TEST_KAFKA_CACHE``), fetched once.
``local_broker`` (function) -> ``LocalBroker``
    The local broker object, for restarts, SIGKILL and SIGSTOP. Tests using it are marked
    ``local_broker`` automatically and deselected against an external cluster (never in CI).
    After each test the broker is thawed and restarted if the test left it stopped.
``topic_factory`` (function) -> ``TopicFactory``
    A unique prefix per test (``t<uuid8>.``); ``create(...)`` makes topics under it,
    ``create_all()`` makes the gateway's full topic set; all are deleted afterwards.
``settings_factory`` (function) -> ``Callable[..., Settings]``
    ``settings_factory(**overrides)`` builds :class:`~gateway.config.Settings` pointing at the
    test cluster and the test's topic prefix; overrides are nested dicts merged over defaults.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.config import KafkaSettings, Settings, load_settings
from gateway.dev.broker import (
    LEAN_JVM,
    BrokerError,
    BrokerSettings,
    LocalBroker,
    free_ports,
    port_in_use,
)
from gateway.kafka.admin import Admin
from gateway.topics import Topics, TopicSpec

# tests/<dir>/ -> the markers every test there gets: its tier, and what the tier needs.
DIR_MARKERS: dict[str, tuple[str, ...]] = {
    "unit": ("unit",),
    "contract": ("contract",),
    "integration": ("integration", "kafka"),
    "e2e": ("e2e", "kafka"),
    "deploy": ("deploy",),
    "hostile": ("hostile", "kafka"),
    "interop": ("interop", "kafka"),
    "security": ("security", "kafka"),
    "soak": ("soak", "slow"),
}
# Tiers that must run without a broker (``make test-fast``).
_NO_BROKER_TIERS = ("unit", "contract")
# Fixtures that start (or reach) the broker; a test using any of them needs ``kafka``.
_BROKER_FIXTURES = frozenset(
    {"_session_broker", "kafka_bootstrap", "local_broker", "topic_factory", "settings_factory"}
)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI"):
        # CI always tests its own broker: an inherited address must not leak into the gateway
        # settings, CLI invocations or subprocesses the tests start.
        os.environ.pop("GREENCHANNEL_BOOTSTRAP_SERVERS", None)
    # `run` and `route` start one member per core by default (process.members): the tests of a
    # single process (its exit codes, ops answers, log lines) pin one; a test of the supervisor
    # asks for its members with --processes.
    os.environ.setdefault("GREENCHANNEL_PROCESS__MEMBERS", "1")
    config.addinivalue_line(
        "markers",
        "local_broker: needs the LocalBroker object (restart, kill, freeze); "
        "deselected against an external cluster",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI nothing may skip: a missing broker, tool or privilege there is a failure, never a
    silent pass (``.ci/run`` sets ``CI`` and installs everything the tiers need)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every tier must run: {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by directory (``DIR_MARKERS``) and by the fixtures they use.

    A broker fixture adds ``kafka`` (and ``local_broker`` for the LocalBroker object); a test
    in a no-broker tier that uses one is refused. Against an external cluster, ``local_broker``
    tests are deselected (reported as such).
    """
    root = Path(__file__).parent
    misplaced: list[str] = []
    for item in items:
        parts = Path(str(item.path)).relative_to(root).parts
        tier = parts[0] if len(parts) > 1 else ""
        # A tier marker written in the test module wins over its directory's (a pure-Python
        # check under tests/deploy may say it is a unit test); each tier brings its needs.
        tiers = [t for t in DIR_MARKERS if item.get_closest_marker(t) is not None]
        for name in {m for t in tiers or [tier] for m in DIR_MARKERS.get(t, ())}:
            if item.get_closest_marker(name) is None:
                item.add_marker(getattr(pytest.mark, name))
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _BROKER_FIXTURES:
            if item.get_closest_marker("kafka") is None:
                item.add_marker(pytest.mark.kafka)
            if tier in _NO_BROKER_TIERS:
                misplaced.append(item.nodeid)
        if "local_broker" in fixtures:
            item.add_marker(pytest.mark.local_broker)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Under xdist, hand out the slow tests first (the order is the same on every worker):
        # the long ones then run side by side and the short ones fill in, instead of one long
        # test holding up the end of the run.
        items.sort(key=lambda i: i.get_closest_marker("slow") is None)
    if misplaced:
        raise pytest.UsageError(
            "tests in a no-broker tier (tests/unit, tests/contract) use a broker fixture; "
            "move them to tests/integration: " + ", ".join(misplaced)
        )
    if external_bootstrap() is not None:
        dropped = [i for i in items if i.get_closest_marker("local_broker") is not None]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [i for i in items if i.get_closest_marker("local_broker") is None]


def external_bootstrap() -> str | None:
    """The external cluster to test against, if any (never in CI)."""
    if os.environ.get("CI"):
        return None
    return os.environ.get("GREENCHANNEL_BOOTSTRAP_SERVERS") or None


@pytest.fixture(scope="session")
def _session_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker | None]:
    if external_bootstrap() is not None:
        yield None
        return
    cache = os.environ.get("GREENCHANNEL_TEST_KAFKA_CACHE")
    for attempt in (1, 2):
        # Free now, but another worker (or process) may bind the port before the broker does:
        # then the broker fails to start, and a second pair of ports is tried.
        port, controller_port = free_ports(2)
        settings = BrokerSettings(
            port=port,
            controller_port=controller_port,
            data_dir=tmp_path_factory.mktemp("kafka"),
            jvm=LEAN_JVM,  # half the CPU of the server options; no test needs peak throughput
        )
        if cache:
            settings = settings.model_copy(update={"cache_dir": Path(cache)})
        broker = LocalBroker(settings)
        try:
            broker.start()
        except BrokerError:
            broker.stop()
            if attempt == 2 or not (port_in_use(port) or port_in_use(controller_port)):
                raise
            continue
        break
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_session_broker: LocalBroker | None) -> str:
    """Bootstrap address of the test cluster (external or the session's local broker)."""
    if _session_broker is None:
        external = external_bootstrap()
        assert external is not None
        return external
    return _session_broker.bootstrap


@pytest.fixture
def local_broker(_session_broker: LocalBroker | None) -> Iterator[LocalBroker]:
    """The session's LocalBroker; left running and thawed after the test, whatever it did."""
    if _session_broker is None:
        pytest.fail("local_broker is not available with an external cluster")
    yield _session_broker
    if _session_broker.is_running():
        _session_broker.thaw()
        _session_broker.wait_ready(_session_broker.settings.start_timeout_s)
    else:
        _session_broker.start()


@dataclass
class TopicFactory:
    """Unique topics for one test, all deleted when it ends."""

    bootstrap: str
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}.")

    @property
    def topics(self) -> Topics:
        """Gateway topic names under this test's prefix."""
        return Topics(self.prefix)

    def kafka_settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"

    def create(
        self, *suffixes: str, partitions: int = 3, configs: dict[str, str] | None = None
    ) -> list[str]:
        """Create ``<prefix><suffix>`` topics; returns their full names."""
        retention = int((configs or {}).get("retention.ms", 24 * 3600 * 1000))
        specs = [TopicSpec(self.name(s), partitions, retention, "test") for s in suffixes]
        self.create_specs(specs)
        return [s.name for s in specs]

    def create_specs(self, specs: list[TopicSpec]) -> None:
        with Admin(self.kafka_settings()) as admin:
            admin.create_topics(specs)

    def create_all(self, cities: list[str] | None = None) -> list[TopicSpec]:
        """The gateway's full topic set (as ``topics init``) under this prefix."""
        specs = self.topics.all(
            cities if cities is not None else load_settings().router.green_cities
        )
        self.create_specs(specs)
        return specs

    def cleanup(self) -> None:
        """Delete every topic under the prefix (whoever created it)."""
        with Admin(self.kafka_settings()) as admin:
            admin.wait_ready(30)
            names = [n for n in admin.list_topics() if n.startswith(self.prefix)]
            admin.delete_topics(names)


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    factory = TopicFactory(kafka_bootstrap)
    yield factory
    factory.cleanup()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def settings_factory(kafka_bootstrap: str, topic_factory: TopicFactory) -> Callable[..., Settings]:
    """``settings_factory(**overrides)`` -> Settings on the test cluster and topic prefix."""

    def build(**overrides: Any) -> Settings:
        base = {
            "kafka": {"bootstrap_servers": kafka_bootstrap},
            "topics": {"prefix": topic_factory.prefix},
        }
        settings = load_settings(None, **_merge(base, overrides))
        if settings.kafka.bootstrap_servers != kafka_bootstrap:  # an env override won
            kafka = settings.kafka.model_copy(update={"bootstrap_servers": kafka_bootstrap})
            settings = settings.model_copy(update={"kafka": kafka})
        return settings

    return build
