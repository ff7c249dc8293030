"""Building blocks for delivery tests: settings on the simulator, escalation streams, engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.app import App
from gateway.avro.codec import Codec
from gateway.cities import CITIES, city_key
from gateway.config import Settings
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.samples import SampleFactory
from gateway.kafka.clients import Producer
from gateway.ops.metrics import Metrics
from gateway.routing.escalation import build_escalation
from gateway.topics import Topics
from tests import helpers

_CITY = {c.key: c for c in CITIES}
FAST_CITY: dict[str, Any] = {
    "timeout_s": 1.0,
    "retry": {
        "initial_s": 0.05,
        "max_wait_s": 1.0,
        "jitter_s": 0.05,
        "budget_s": 20.0,
        "retry_after_cap_s": 2.0,
    },
    "breaker": {"failure_threshold": 3, "open_s": 1.0, "max_open_s": 4.0},
}


def sim_city_overrides(sim: BureauSimulator, tls_dir: Path, **extra: Any) -> dict[str, Any]:
    cities: dict[str, Any] = {}
    for name in sim.names():
        cities[name] = {"endpoint": sim.endpoint(name)} | FAST_CITY | extra.get(name, {})
    cities["shenzhen"]["tls"] = {
        "ca_file": str(tls_dir / "ca.pem"),
        "cert_file": str(tls_dir / "client.pem"),
        "key_file": str(tls_dir / "client.key"),
    }
    return cities


def delivery_settings(
    settings_factory: Callable[..., Settings],
    sim: BureauSimulator,
    tls_dir: Path,
    prefix: str,
    **city_extra: Any,
) -> Settings:
    return settings_factory(
        cities=sim_city_overrides(sim, tls_dir, **city_extra),
        delivery={"group_id": f"{prefix}deliver"},
    )


@dataclass
class Sent:
    escalation_id: str
    city: str
    created_ms: int


class EscalationStream:
    """Makes escalations for chosen cities and publishes them to the per-city topics."""

    def __init__(self, settings: Settings, seed: int = 1) -> None:
        self.settings = settings
        self.codec = Codec(settings.codec)
        self.topics = Topics(settings.topics.prefix)
        self.producer = Producer(settings.kafka, linger_ms=1)
        self.factory = SampleFactory(seed=seed, major_share=1.0, green_share=1.0)
        self.sent: list[Sent] = []

    def escalation(self, city: str, *, description: str | None = None) -> dict[str, Any]:
        sample = self.factory.next(major=True, city=_CITY[city]).record
        assert city_key(sample["city_code"]) == city
        if description is not None:
            sample = dict(sample, description=description)
        return build_escalation(
            sample, city=city, rule_id="test", now_ms=int(time.time() * 1000), working_days=10
        )

    def publish(self, city: str, *, description: str | None = None) -> dict[str, Any]:
        esc = self.escalation(city, description=description)
        esc["created_at"] = int(time.time() * 1000)
        value = self.codec.encode("escalation", esc)
        self.producer.send(self.topics.escalations(city), value, key=esc["complaint_id"].encode())
        self.sent.append(Sent(esc["escalation_id"], city, esc["created_at"]))
        return esc

    def publish_many(self, cities: Iterable[str], per_city: int) -> None:
        for _ in range(per_city):
            for city in cities:
                self.publish(city)
        self.producer.flush()

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


class Deliverer:
    """The delivery engine running in this process (real Kafka, real HTTP)."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.app = App(settings, route=False, deliver=True, metrics=Metrics(self.registry))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.exit_code: int | None = None

    def _run(self) -> None:
        self.exit_code = self.app.run(shutdown_timeout_s=10, with_ops=False)

    def __enter__(self) -> Deliverer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.stop.set()
        self.thread.join(30)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def metric_sum(self, name: str) -> float:
        """Sum of a metric over all its label values."""
        return sum(
            s.value for family in self.registry.collect() for s in family.samples if s.name == name
        )


def wait_until(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> bool:
    """:func:`tests.helpers.wait_until`, polling every 0.2 s by default."""
    return helpers.wait_until(predicate, timeout_s, every_s)


def accepted_ids(sim: BureauSimulator, city: str) -> list[str]:
    """Idempotency keys of the cases a city's bureau opened (one per accepted escalation)."""
    return [c.key for c in sim.cases(city)]
