"""The demo's case lifecycle: ``greenchannel cases keep`` as a second child process, each
simulated bureau moving its cases under time-warp, and a handling result reported back for
every case a bureau closes.

:class:`CaseSide` starts it all (:meth:`start`), reports what happened since the last tick
(:meth:`tick`: "result reported ..." events) and stops it. The live view reads the case figures
from the keeper's ``/metrics`` (:func:`parse_cases`, :func:`case_rows`).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.avro.codec import Codec
from gateway.config import Settings, TopicSettings
from gateway.connectors_registry import load_connectors
from gateway.dev.broker import free_ports
from gateway.dev.bureau_lifecycle import BureauLifecycle, LifecyclePlan
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.demo_gateway import GatewayProcess
from gateway.kafka.clients import Producer
from gateway.sdk import CallbackInbound, inbound_kind
from gateway.topics import Topics

CASE_WARP = 50_000.0
"""Bureau seconds per demo second: a case closes ~15 s after it was opened."""
STATES = ("ACCEPTED", "NEGOTIATION", "MEDIATION", "CLOSED", "RETURNED")


@dataclass
class CaseSide:
    settings: Settings
    sim: BureauSimulator
    env: dict[str, str]
    log_path: Path
    warp: float = CASE_WARP
    process: GatewayProcess | None = None
    metrics_url: str = ""
    lifecycles: dict[str, BureauLifecycle] = field(default_factory=dict)
    _reported: set[str] = field(default_factory=set)
    _producer: Producer | None = None

    def start(self, stop: threading.Event) -> str:
        connectors = load_connectors({self.settings.connector_of(c) for c in self.sim.names()})
        env = dict(self.env)
        ports: dict[str, tuple[int, str]] = {}
        for city in self.sim.names():
            connector = connectors[self.settings.connector_of(city)]
            key = f"GREENCHANNEL_CITIES__{city.upper()}__INBOUND__"
            env[key + "POLL_INTERVAL_S"] = "1"
            if inbound_kind(connector) == "callback" and isinstance(connector, CallbackInbound):
                port = free_ports(1)[0]
                env[key + "LISTEN_PORT"] = str(port)
                ports[city] = (port, connector.callback_path)
        prefix = self.settings.topics.prefix
        if prefix != TopicSettings().prefix:  # a demo of its own on a shared cluster
            tag = prefix.strip(".") or "demo"
            for key, value in (
                ("INTAKE_GROUP_ID", self.settings.cases.intake_group_id),
                ("KEEPER_GROUP_ID", self.settings.cases.keeper_group_id),
                ("RESULTS_GROUP_ID", self.settings.cases.results_group_id),
                ("POLLER_TRANSACTIONAL_ID", self.settings.cases.poller_transactional_id),
            ):
                env[f"GREENCHANNEL_CASES__{key}"] = f"{value}-{tag}"
        metrics_port = free_ports(1)[0]
        self.process = GatewayProcess(env, metrics_port, self.log_path, args=("cases", "keep"))
        self.process.start()
        base_url = f"http://127.0.0.1:{metrics_port}"
        self.metrics_url = f"{base_url}/metrics"
        self.process.wait_ready(base_url, 90.0, stop)
        plan = LifecyclePlan(
            time_warp=self.warp, return_ratio=0.1, mediate_ratio=0.25, repeat_ratio=0.2, overlap=1
        )
        for index, city in enumerate(self.sim.names()):
            creds = self.settings.cities[city].credentials
            url = None
            if city in ports:
                port, path = ports[city]
                url = f"http://127.0.0.1:{port}{path}"
            self.lifecycles[city] = BureauLifecycle(
                self.sim.city(city),
                (creds.client_id, creds.resolved_secret()),
                plan,
                callback_url=url,
                seed=index,
            ).start()
        self._producer = Producer(self.settings.kafka, linger_ms=5)
        calling = ", ".join(sorted(ports))
        return (
            f"pid {self.process.proc.pid if self.process.proc else '?'}; callbacks from {calling}"
        )

    def tick(self, elapsed: float) -> list[str]:
        """Report a handling result for each case a bureau closed since the last tick."""
        if self._producer is None:
            return []
        codec = Codec(self.settings.codec)
        topic = Topics(self.settings.topics.prefix).results
        lines: list[str] = []
        now = int(time.time() * 1000)
        for city, lifecycle in self.lifecycles.items():
            for event in lifecycle.events():
                if event.status != "closed" or event.key in self._reported:
                    continue
                self._reported.add(event.key)
                result = {
                    "result_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"result/{event.key}")),
                    "escalation_id": event.key,
                    "complaint_id": None,
                    "city": city,
                    "case_number": event.case_number,
                    "contacted_at": event.at_ms,
                    "method": "PHONE",
                    "settled": event.result == "settled",
                    "refund_fen": 9_900 if event.result == "settled" else None,
                    "compensation_fen": None,
                    "satisfaction": "SATISFIED" if event.result == "settled" else "NEUTRAL",
                    "note": None,
                    "reported_at": now,
                }
                value = codec.encode("handling_result", result)
                self._producer.send(topic, value, key=event.key.encode())
                if len(lines) < 2:
                    lines.append(
                        f"{elapsed:4.0f}s  handling result reported to {city} for case "
                        f"{event.case_number} ({event.result or 'closed'})"
                    )
        self._producer.flush(10)
        return lines

    def stop(self, hurry: threading.Event) -> int | None:
        for lifecycle in self.lifecycles.values():
            lifecycle.stop()
        if self._producer is not None:
            self._producer.close()
        return self.process.stop(hurry) if self.process is not None else None


@dataclass
class CaseFigures:
    states: dict[str, dict[str, float]] = field(default_factory=dict)
    """city -> state -> cases."""
    overdue: dict[str, float] = field(default_factory=dict)
    results: dict[str, float] = field(default_factory=dict)
    refused: dict[str, float] = field(default_factory=dict)
    duplicates: dict[str, float] = field(default_factory=dict)


def parse_cases(text: str) -> CaseFigures:
    out = CaseFigures()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            city, value = sample.labels.get("city", ""), float(sample.value)
            if sample.name == "greenchannel_cases":
                out.states.setdefault(city, {})[sample.labels["state"]] = value
            elif sample.name == "greenchannel_case_deadlines_overdue":
                out.overdue[city] = out.overdue.get(city, 0.0) + value
            elif sample.name == "greenchannel_case_results_total":
                if sample.labels.get("outcome") == "accepted":
                    out.results[city] = out.results.get(city, 0.0) + value
            elif sample.name == "greenchannel_case_updates_total":
                target = {"refused": out.refused, "duplicate": out.duplicates}.get(
                    sample.labels.get("outcome", "")
                )
                if target is not None:
                    target[city] = target.get(city, 0.0) + value
    return out


def case_rows(figures: CaseFigures, cities: list[str]) -> list[str]:
    """The lifecycle table: cases per state, overdue deadlines, results reported back."""
    head = ["city", *[s.lower() for s in STATES], "overdue", "results", "repeats", "refused"]
    widths = [10, 9, 12, 10, 7, 9, 8, 8, 8, 8]
    lines = ["  ".join(f"{h:<{w}}" for h, w in zip(head, widths, strict=True)).rstrip()]
    for city in cities:
        states = figures.states.get(city, {})
        cells = [
            city,
            *[f"{states.get(s, 0):.0f}" for s in STATES],
            f"{figures.overdue.get(city, 0):.0f}",
            f"{figures.results.get(city, 0):.0f}",
            f"{figures.duplicates.get(city, 0):.0f}",
            f"{figures.refused.get(city, 0):.0f}",
        ]
        lines.append("  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)).rstrip())
    return lines
