"""The Prometheus rules are valid, unit-tested by promtool, and every alert is fully described.

promtool comes from Debian's `prometheus` package (`bash deploy/check.sh install promtool`);
these tests fail, never skip, when it is missing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.catalogue import (
    ALERTS,
    DEPLOY,
    OPERATIONS_MD,
    RULES,
    alerting_rules,
    anchors,
    github_anchor,
    known_series_names,
    recording_rules,
    tool,
)

pytestmark = pytest.mark.deploy  # the validators of `deploy/check.sh install`

PROM = DEPLOY / "prometheus"
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_BASE = "https://greenchannel.example.com/docs/operations.md#"


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_promtool_check_rules() -> None:
    result = _promtool("check", "rules", RULES, ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    result = _promtool("check", "config", PROM / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert TEST_FILES
    result = _promtool("test", "rules", *TEST_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text("utf-8"))["tests"]:
            for check in case.get("alert_rule_test") or []:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in alerting_rules()}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested not firing"


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_summary_description_and_runbook(rule: dict[str, object]) -> None:
    labels = rule["labels"]
    annotations = rule["annotations"]
    assert isinstance(labels, dict) and isinstance(annotations, dict)
    assert labels["severity"] in SEVERITIES
    assert annotations["summary"] and annotations["description"]
    assert annotations["runbook_url"] == RUNBOOK_BASE + github_anchor(str(rule["alert"]))
    assert github_anchor(str(rule["alert"])) in anchors(OPERATIONS_MD), "no runbook section"


def _series(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return {
        t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", without_strings) if "greenchannel" in t
    }


@pytest.mark.parametrize(
    "rule", alerting_rules() + recording_rules(), ids=lambda r: r.get("alert") or r["record"]
)
def test_rules_use_documented_series_only(rule: dict[str, str]) -> None:
    unknown = _series(rule["expr"]) - known_series_names()
    assert not unknown, f"not in docs/metrics.md: {unknown}"


def test_alert_names_are_unique() -> None:
    names = [r["alert"] for r in alerting_rules()]
    assert len(names) == len(set(names))
