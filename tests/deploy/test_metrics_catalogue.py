"""docs/metrics.md documents exactly what gateway.ops.metrics exposes, with bounded labels only."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.metrics import Metrics
from gateway.ops.observer import Observer
from tests.deploy.catalogue import (
    METRICS_MD,
    alerting_rules,
    documented_metrics,
    documented_recording_rules,
    recording_rules,
)

pytestmark = pytest.mark.unit

FORBIDDEN_LABELS = {
    "id",
    "uuid",
    "url",
    "uri",
    "endpoint",
    "host",
    "path",
    "error",
    "exception",
    "message",
    "detail",
    "body",
    "response",
    "complaint_id",
    "escalation_id",
    "case_number",
    "order_id",
    "key",
    "offset",
    "partition",
    "nonce",
    "trace_id",
    "phone",
    "name",
    "user",
    "consumer",
}

# One call per Observer event; the test fails when the protocol grows an event not listed here.
EVENTS = {
    "on_consumed": lambda m: m.on_consumed(3),
    "on_routed": lambda m: m.on_routed("call-center", "refunds", "refund-desk"),
    "on_router_dead_lettered": lambda m: m.on_router_dead_lettered("undecodable"),
    "on_transaction": lambda m: (m.on_transaction(0.02, 3, True), m.on_transaction(0.5, 3, False)),
    "on_routed_latencies": lambda m: m.on_routed_latencies([0.3, 0.004, 7200.0]),
    "on_router_stalled": lambda m: m.on_router_stalled("registry_unavailable", True),
    "on_router_bisected": lambda m: m.on_router_bisected(),
    "on_attempt": lambda m: m.on_attempt("wuhu", "accepted"),
    "on_retry": lambda m: m.on_retry("wuhu", "unavailable"),
    "on_delivered": lambda m: m.on_delivered("wuhu", 1.5),
    "on_delivery_dead_lettered": lambda m: m.on_delivery_dead_lettered("wuhu", "rejected"),
    "on_breaker": lambda m: m.on_breaker("wuhu", "open"),
    "on_limiter_wait": lambda m: m.on_limiter_wait("wuhu", 0.05),
    "on_rate_changed": lambda m: m.on_rate_changed("wuhu", 10.0),
    "on_paused": lambda m: m.on_paused("wuhu", True),
    "on_client_certificate": lambda m: m.on_client_certificate("shenzhen", 1.8e9),
    "on_delivery_internal_error": lambda m: m.on_delivery_internal_error("wuhu"),
    "on_outcome_write_failed": lambda m: m.on_outcome_write_failed("wuhu", "receipt"),
    "watch_lag": lambda m: m.watch_lag("router", lambda: {"gc.complaints.v1": 7}),
    "watch_oldest": lambda m: m.watch_oldest(lambda: {"wuhu": 12.0}),
    "watch_heartbeats": lambda m: m.watch_heartbeats(lambda: {"router": 0.1, "deliver": 0.2}),
    "watch_calendar": lambda m: m.watch_calendar(lambda: 29.0),
    "on_case_update": lambda m: m.on_case_update("wuhu", "applied"),
    "on_case_dead_lettered": lambda m: m.on_case_dead_lettered("wuhu", "out_of_order"),
    "on_case_callback": lambda m: m.on_case_callback("wuhu", "replayed"),
    "on_case_poll": lambda m: m.on_case_poll("suzhou", "ok"),
    "on_case_result": lambda m: m.on_case_result("wuhu", "accepted"),
    "watch_cases": lambda m: m.watch_cases(_case_figures),
}


def _case_figures() -> object:
    from collections import Counter

    from gateway.cases.sla import Figures

    return Figures(
        cases=Counter({("wuhu", "NEGOTIATION"): 3}),
        at_risk=Counter({("wuhu", "negotiation"): 1}),
        overdue=Counter({("wuhu", "acceptance"): 1}),
        closed=Counter({("wuhu", "true", "SETTLED"): 2}),
        handling={"wuhu": [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]},
        handling_sum=Counter({"wuhu": 500_000.0}),
    )


def _scrape() -> str:
    metrics = Metrics(CollectorRegistry(), version="9.9.9")
    for call in EVENTS.values():
        call(metrics)
    return generate_latest(metrics.registry).decode()


def _exposed() -> dict[str, tuple[str, set[str]]]:
    """Exposed family name (as stored by Prometheus) -> (type, label names), _created excluded."""
    text = _scrape()
    out: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        out[name] = (family.type, labels)
    typed = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert typed == set(out), "parser and # TYPE lines disagree"
    return out


def _is_created_of(name: str, documented: set[str]) -> bool:
    if not name.endswith("_created"):
        return False
    base = name.removesuffix("_created")
    return base + "_total" in documented or base in documented


def test_every_observer_event_is_exercised() -> None:
    events = {n for n in vars(Observer) if not n.startswith("_") and callable(vars(Observer)[n])}
    assert events == set(EVENTS)


def test_every_exposed_metric_is_documented_and_vice_versa() -> None:
    exposed = _exposed()
    documented = documented_metrics()
    families = {n for n in exposed if not _is_created_of(n, set(documented))}
    assert sorted(families - set(documented)) == [], f"undocumented in {METRICS_MD}"
    assert sorted(set(documented) - families) == [], f"documented but not exposed, in {METRICS_MD}"


@pytest.mark.parametrize("name", sorted(documented_metrics()))
def test_documented_type_and_labels_match(name: str) -> None:
    exposed_type, exposed_labels = _exposed()[name]
    row = documented_metrics()[name]
    assert row["type"] == exposed_type
    assert row["labels"] == exposed_labels


def test_no_label_could_carry_ids_urls_or_error_text() -> None:
    for name, (_kind, labels) in _exposed().items():
        bad = {label for label in labels if label in FORBIDDEN_LABELS or label.endswith("_id")}
        assert not bad, f"{name} has unbounded labels {bad}"


def test_names_follow_prometheus_conventions() -> None:
    for name, (kind, _labels) in _exposed().items():
        assert name.startswith("greenchannel_"), name
        if kind == "counter":
            assert name.endswith("_total"), name
        if name.endswith("_created"):
            continue
        assert not re.search(r"_(ms|milliseconds|minutes|hours|kb|mb)(_|$)", name), name


def test_alert_column_names_exactly_the_alerts_of_alerts_yml() -> None:
    alerts = {r["alert"] for r in alerting_rules()}
    text = METRICS_MD.read_text("utf-8")
    mentioned = set(re.findall(r"\bGreenChannel[A-Za-z]+\b", text))
    assert mentioned == alerts


def test_recording_rules_are_documented() -> None:
    records = {r["record"] for r in recording_rules()}
    documented = documented_recording_rules()
    inputs = {"city:greenchannel_sla_seconds:configured"}
    assert documented == records | inputs
