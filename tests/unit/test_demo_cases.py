"""The demo's case lifecycle table, from a genuine /metrics exposition."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.cases.sla import Figures
from gateway.dev.demo_cases import case_rows, parse_cases
from gateway.ops.metrics import Metrics

pytestmark = pytest.mark.unit


def test_case_table_from_a_real_scrape() -> None:
    metrics = Metrics(CollectorRegistry())
    figures = Figures(
        cases=Counter(
            {("wuhu", "NEGOTIATION"): 2, ("wuhu", "CLOSED"): 5, ("hefei", "RETURNED"): 1}
        ),
        overdue=Counter({("wuhu", "negotiation"): 1}),
    )
    metrics.watch_cases(lambda: figures)
    metrics.on_case_result("wuhu", "accepted")
    metrics.on_case_result("wuhu", "rejected")
    metrics.on_case_update("wuhu", "duplicate")
    metrics.on_case_update("hefei", "refused")
    parsed = parse_cases(generate_latest(metrics.registry).decode())
    assert parsed.states["wuhu"] == {"NEGOTIATION": 2.0, "CLOSED": 5.0}
    assert parsed.overdue == {"wuhu": 1.0} and parsed.results == {"wuhu": 1.0}
    rows = case_rows(parsed, ["wuhu", "hefei", "beijing"])
    assert rows[0].split() == [
        "city", "accepted", "negotiation", "mediation", "closed", "returned",
        "overdue", "results", "repeats", "refused",
    ]  # fmt: skip
    assert rows[1].split() == ["wuhu", "0", "2", "0", "5", "0", "1", "1", "1", "0"]
    assert rows[2].split() == ["hefei", "0", "0", "0", "0", "1", "0", "0", "0", "1"]
    assert rows[3].split()[1:] == ["0"] * 9
