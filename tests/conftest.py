"""Test harness: a real Kafka broker, per-test topics and settings.

Fixtures
--------
``kafka_bootstrap`` (session) -> ``str``
    ``host:port`` of the test cluster. ``GREENCHANNEL_BOOTSTRAP_SERVERS`` names an external
    cluster (ignored when ``CI`` is set: CI always runs its own broker); otherwise a
    :class:`~gateway.dev.broker.LocalBroker` is started on a free port pair with its data under
    the pytest temp dir and stopped at the end. The Kafka classpath is cached in
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

from gateway.config import BrokerSettings, KafkaSettings, Settings, load_settings
from gateway.dev.broker import LocalBroker, free_ports
from gateway.kafka.admin import Admin
from gateway.topics import Topics, TopicSpec

_TIERS = ("unit", "contract", "integration", "interop", "e2e", "security")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI"):
        # CI always tests its own broker: an inherited address must not leak into the gateway
        # settings, CLI invocations or subprocesses the tests start.
        os.environ.pop("GREENCHANNEL_BOOTSTRAP_SERVERS", None)
    config.addinivalue_line(
        "markers",
        "local_broker: needs the LocalBroker object (restart, kill, freeze); "
        "deselected against an external cluster",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by directory (tests/<tier>/...) and mark users of ``local_broker``.

    Against an external cluster, ``local_broker`` tests are deselected (reported as such).
    """
    root = Path(__file__).parent
    for item in items:
        parts = Path(str(item.path)).relative_to(root).parts
        if parts and parts[0] in _TIERS and item.get_closest_marker(parts[0]) is None:
            item.add_marker(getattr(pytest.mark, parts[0]))
        if "local_broker" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.local_broker)
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
    port, controller_port = free_ports(2)
    cache = os.environ.get("GREENCHANNEL_TEST_KAFKA_CACHE")
    settings = BrokerSettings(
        port=port,
        controller_port=controller_port,
        data_dir=tmp_path_factory.mktemp("kafka"),
        **({"cache_dir": Path(cache)} if cache else {}),
    )
    broker = LocalBroker(settings)
    try:
        broker.start()
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
