"""The short chaos soak: ``bench/soak.py`` for a few minutes, as CI runs it.

A real broker, the bureau simulator and the gateway's router and deliverer as processes, with
complaints flowing while the soak kills, restarts, freezes and cuts them off and turns the
bureaus' fault knobs; then the soak's independent ledger must find nothing lost, nothing
duplicated and nothing stuck. ``GC_SOAK_MINUTES`` sets the length (default 5, the CI version; e.g. 1 locally),
``GC_SOAK_SEED`` the fault schedule (``GC_SOAK_WITHOUT=kind,...`` leaves kinds out, for local
investigation only: CI runs every kind).

The soak runs as its own process (it owns a broker, an nftables table and a cgroup, all removed
when it ends) and reports through its ``--json`` figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import WEIGHTS, schedule
from bench.soak_netcut import unavailable_reason

REPO = Path(__file__).resolve().parents[2]
MINUTES = float(os.environ.get("GC_SOAK_MINUTES", "5"))
SEED = int(os.environ.get("GC_SOAK_SEED", "7"))
DRAIN_S = 240.0
GAP = (3.0, 9.0)
WITHOUT = {k for k in os.environ.get("GC_SOAK_WITHOUT", "").split(",") if k}
"""Local investigation only (leave fault kinds out); CI never sets it."""

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(int(MINUTES * 60 + DRAIN_S + 300))
def test_short_soak_loses_duplicates_and_sticks_nothing(tmp_path: Path) -> None:
    figures_file = tmp_path / "soak.json"
    cmd = [
        sys.executable, "-m", "bench.soak", "--minutes", f"{MINUTES:g}", "--seed", str(SEED),
        "--drain", f"{DRAIN_S:g}", "--gap-min", f"{GAP[0]:g}", "--gap-max", f"{GAP[1]:g}",
        "--no-report", "--json", str(figures_file),
    ]  # fmt: skip
    if WITHOUT:
        cmd += ["--without", ",".join(sorted(WITHOUT))]
    env = os.environ.copy()
    env.pop("GREENCHANNEL_BOOTSTRAP_SERVERS", None)  # the soak always starts its own broker
    proc = subprocess.run(
        cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True,
        timeout=MINUTES * 60 + DRAIN_S + 240,
    )  # fmt: skip
    output = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert figures_file.exists(), f"the soak wrote no figures (exit {proc.returncode}):\n{output}"
    result = json.loads(figures_file.read_text())
    figures = result["figures"]

    assert figures["published_total"] > MINUTES * 60 * 20, output  # complaints really flowed
    assert figures["escalations"] > 0 and figures["bureau_cases"] > 0, output
    plan = schedule(SEED, MINUTES * 60, [k for k in WEIGHTS if k not in WITHOUT], GAP)
    # faults wait behind a slow broker restart, so only the early part of the plan is certain
    early = {f.kind for f in plan if f.at_s < MINUTES * 60 * 0.4}
    injected = result["injected"]
    assert early <= set(injected), f"planned but not injected: {early - set(injected)}\n{output}"
    assert sum(injected.values()) >= min(len(plan), 8), output
    if os.environ.get("CI") or unavailable_reason() is None:
        # In CI the network cut must be injectable (.ci/run installs nftables): never skipped.
        assert "network_cut" not in result["not_injected"], result["not_injected"]
    problems = "\n".join(f"{k}: {v[:5]}" for k, v in result["problems"].items())
    assert figures["lost_total"] == 0, f"lost:\n{problems}\n{output}"
    assert figures["duplicated_total"] == 0, f"duplicated:\n{problems}\n{output}"
    assert figures["stuck_total"] == 0, f"stuck: {figures['stuck']}\n{output}"
    assert proc.returncode == 0, output
