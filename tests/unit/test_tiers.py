"""The test tiers select by need: the fast tier (the Makefile's FAST expression) holds no test
that needs a broker or the deploy validators, and every broker-tier test is marked ``kafka``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

from tests.conftest import DIR_MARKERS

# one worker runs them all, so the suite is collected once (the module fixture) under xdist
pytestmark = [pytest.mark.unit, pytest.mark.xdist_group("tiers")]
ROOT = Path(__file__).resolve().parents[2]


def _makefile_var(name: str) -> str:
    match = re.search(rf"^{name}\s*:=\s*(.+)$", (ROOT / "Makefile").read_text("utf-8"), re.M)
    assert match, name
    return match.group(1).strip()


_PLUGIN = """
import json, os

def pytest_collection_finish(session):
    marks = {i.nodeid: sorted({m.name for m in i.iter_markers()}) for i in session.items}
    with open(os.environ["GC_TIERS_OUT"], "w", encoding="utf-8") as out:
        json.dump(marks, out)
"""


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Every collected test's markers, from one ``--collect-only`` run of the real suite."""
    where = tmp_path_factory.mktemp("tiers")
    (where / "gc_tiers_plugin.py").write_text(_PLUGIN, "utf-8")
    out = where / "markers.json"
    env = {**os.environ, "GC_TIERS_OUT": str(out), "PYTHONPATH": str(where)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "gc_tiers_plugin",
         "--collect-only", "-q", "tests"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return {k: set(v) for k, v in json.loads(out.read_text("utf-8")).items()}


def _selected(markers: dict[str, set[str]], expression: str) -> set[str]:
    """The node ids ``-m expression`` selects."""
    compiled = Expression.compile(expression)
    return {n for n, names in markers.items() if compiled.evaluate(names.__contains__)}


def _in(nodeids: set[str], *dirs: str) -> set[str]:
    return {n for n in nodeids if n.split("/")[1] in dirs}


def test_the_fast_tier_needs_no_broker_and_no_deploy_tools(markers: dict[str, set[str]]) -> None:
    fast = _selected(markers, _makefile_var("FAST"))
    assert _in(fast, "unit") and _in(fast, "contract")
    # No test in a broker tier's directory (or the soak's) is in the fast tier, whatever its
    # module says: an offline test belongs in tests/unit. Only tests/deploy holds pure checks
    # that say ``unit`` (CONTRIBUTING.md).
    slow_dirs = [d for d, markers in DIR_MARKERS.items() if {"kafka", "slow"} & set(markers)]
    stray = _in(fast, *slow_dirs)
    assert not stray, f"broker-tier or soak tests in the fast tier: {sorted(stray)[:5]}"
    assert not (fast & _selected(markers, "kafka or deploy"))


def test_broker_tiers_and_deploy_tests_are_marked_by_need(markers: dict[str, set[str]]) -> None:
    everything = set(markers)
    kafka = _selected(markers, "kafka")
    assert _in(everything, "integration", "e2e") <= kafka
    assert all("local_broker" not in m or "kafka" in m for m in markers.values())
    deploy = _selected(markers, "deploy")
    # the tests that run deploy/check.sh, promtool or a live Prometheus
    for module in ("test_deploy.py", "test_promtool.py", "test_prometheus_live.py"):
        assert {n for n in everything if f"/{module}::" in n} <= deploy, module
    assert "tests/deploy/test_dashboard.py::test_queries_are_valid_promql" in deploy


def test_new_test_directories_have_their_markers() -> None:
    for name in ("hostile", "interop", "security"):
        assert DIR_MARKERS[name] == (name, "kafka")
    assert set(DIR_MARKERS["soak"]) >= {"soak", "slow"}
    assert "not soak" in _makefile_var("KAFKA")
