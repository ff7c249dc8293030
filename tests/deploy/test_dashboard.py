"""The Grafana dashboard is well-formed and queries only documented metrics, in valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.catalogue import DEPLOY, documented_metrics, known_series_names, tool

pytestmark = pytest.mark.unit  # except the PromQL check, which needs promtool

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "greenchannel-dashboard.json"
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana substitutes before sending a query (for the syntax check).
VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$city": ".*", "$instance": ".*"}


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text("utf-8"))
    assert isinstance(data, dict)
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])


def _exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets") or []
    ]


def _series(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return {
        t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", without_strings) if "greenchannel" in t
    }


def test_dashboard_basics() -> None:
    dash = _dashboard()
    assert dash["uid"] == "greenchannel"
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["title"]
    ids = [p["id"] for p in _panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in _panels(dash["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == DS_REF, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"] == DS_REF for t in panel["targets"]), panel["title"]


def test_datasource_and_city_variables() -> None:
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    city = variables["city"]
    assert city["type"] == "query" and city["multi"] and city["includeAll"]
    match = re.fullmatch(r"label_values\((\w+), city\)", city["definition"])
    assert match and match.group(1) in documented_metrics()
    assert city["query"]["query"] == city["definition"]


@pytest.mark.parametrize(("title", "expr"), _exprs(), ids=[t for t, _ in _exprs()])
def test_queries_use_documented_metrics_only(title: str, expr: str) -> None:
    series = _series(expr)
    assert series, f"{title}: queries no greenchannel metric"
    unknown = series - known_series_names()
    assert not unknown, f"{title}: not in docs/metrics.md: {unknown}"


def test_every_documented_metric_is_on_the_dashboard() -> None:
    used = set().union(*(_series(e) for _, e in _exprs()))
    used_bases = {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in used} | used
    missing = [
        name
        for name in documented_metrics()
        if name not in used_bases and name.removesuffix("_total") not in used_bases
    ]
    assert missing == []


def test_city_panels_filter_by_the_city_variable() -> None:
    for title, expr in _exprs():
        if "city" in expr and "greenchannel_" in expr and "sum by (instance)" not in expr:
            assert 'city=~"$city"' in expr, f"{title}: ignores $city"


@pytest.mark.deploy
def test_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for n, (_title, expr) in enumerate(_exprs()):
        query = expr
        for var, value in VARIABLES.items():
            query = query.replace(var, value)
        assert "$" not in query, f"unknown variable in {query}"
        rules.append({"record": f"dashboard:query_{n}", "expr": query})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), "utf-8")
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_at_the_dashboard() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/greenchannel.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = (DEPLOY / "docker-compose.yml").read_text("utf-8")
    assert f"greenchannel-dashboard.json:{provider['options']['path']}/" in compose
