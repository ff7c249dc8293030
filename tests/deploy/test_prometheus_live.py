"""A real Prometheus scrapes a real ops endpoint and evaluates the rules; the dashboard's
queries run against it.

Catches what promtool's unit tests cannot: runtime errors of rules and queries on the series the
gateway really exposes (many-to-many matching, wrong label sets). Everything on loopback; the
prometheus binary comes with promtool (`bash deploy/check.sh install`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.ops.health import OpsServer
from gateway.ops.metrics import Metrics
from tests.deploy.catalogue import ALERTS, RULES, alerting_rules, recording_rules, tool
from tests.deploy.test_dashboard import VARIABLES, _exprs
from tests.deploy.test_metrics_catalogue import EVENTS

# the validators of `deploy/check.sh install`; one Prometheus for the module (one xdist worker)
pytestmark = [pytest.mark.deploy, pytest.mark.xdist_group("prometheus")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    metrics = Metrics(CollectorRegistry())
    for call in EVENTS.values():
        call(metrics)
    ops = OpsServer(
        "127.0.0.1", 0, metrics.registry, lambda: {"router": 0.1}, lambda: {"router": True}
    )
    ops.start()
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES), str(ALERTS)],
        "scrape_configs": [
            {"job_name": "greenchannel", "static_configs": [{"targets": [f"127.0.0.1:{ops.port}"]}]}
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config), "utf-8")
    port = _free_port()
    log = (work / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # whichever test runs first, Prometheus is listening
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        ops.stop()


def _rules_evaluated(base: str) -> list[dict[str, Any]]:
    rules = [r for g in _get(base, "/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    ok = rules and all(not r["lastEvaluation"].startswith("0001") for r in rules)
    return rules if ok else []


@pytest.mark.timeout(120)
def test_rules_evaluate_without_errors_on_real_series(prometheus: str) -> None:
    deadline = time.monotonic() + 60
    rules: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not rules:
        time.sleep(1)
        try:
            up = _get(prometheus, "/api/v1/query", query="up")["data"]["result"]
            rules = _rules_evaluated(prometheus) if up and up[0]["value"][1] == "1" else []
        except OSError:
            continue
    assert rules, "Prometheus did not scrape the ops endpoint and evaluate the rules in time"
    # until every rule was evaluated again, on more than one scrape's worth of samples
    first = {(r["name"], r.get("query")): r["lastEvaluation"] for r in rules}
    while time.monotonic() < deadline:
        rules = _rules_evaluated(prometheus)
        if rules and all(r["lastEvaluation"] != first[(r["name"], r.get("query"))] for r in rules):
            break
        time.sleep(0.5)
    assert len(rules) == len(alerting_rules()) + len(recording_rules())
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert bad == {}


@pytest.mark.timeout(120)
def test_dashboard_queries_run(prometheus: str) -> None:
    errors = {}
    for title, expr in _exprs():
        query = expr
        for var, value in VARIABLES.items():
            query = query.replace(var, value)
        try:
            result = _get(prometheus, "/api/v1/query", query=query)
        except urllib.error.HTTPError as exc:
            errors[title] = exc.read().decode()[:300]
            continue
        if result["status"] != "success":
            errors[title] = result
    assert errors == {}


@pytest.mark.timeout(120)
def test_first_dead_letters_fire_their_alerts(prometheus: str) -> None:
    deadline = time.monotonic() + 60
    firing: set[str] = set()
    wanted = {"GreenChannelRouterDeadLetters", "GreenChannelDeliveryDeadLetters"}
    while time.monotonic() < deadline and not wanted <= firing:
        try:  # this test may run first, while Prometheus is still starting
            alerts = _get(prometheus, "/api/v1/alerts")["data"]["alerts"]
        except urllib.error.URLError:
            alerts = []
        firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
        time.sleep(1)
    assert wanted <= firing
