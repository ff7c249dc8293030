"""Shared readers for the deploy tests: docs/metrics.md, the Prometheus rule files, tool paths."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs"
METRICS_MD = DOCS / "metrics.md"
OPERATIONS_MD = DOCS / "operations.md"
RULES = DEPLOY / "prometheus" / "rules.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
TOOLS_BIN = (
    Path(os.environ.get("GREENCHANNEL_TOOLS_DIR") or _CACHE / "greenchannel" / "tools") / "bin"
)

_ROW = re.compile(r"^\|\s*`(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)`\s*\|(?P<rest>.*)\|\s*$")
_TICKED = re.compile(r"`([^`]+)`")


def _section(text: str, heading: str) -> str:
    """The text of a ``## heading`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if match is None:
        raise AssertionError(f"{METRICS_MD} has no '## {heading}' section")
    return match.group(1)


def documented_metrics() -> dict[str, dict[str, Any]]:
    """Rows of the Catalogue tables: name -> {type, labels, alerts (cell text)}."""
    out: dict[str, dict[str, Any]] = {}
    for line in _section(METRICS_MD.read_text("utf-8"), "Catalogue").splitlines():
        match = _ROW.match(line.strip())
        if match is None:
            continue
        cells = [c.strip() for c in match.group("rest").split("|")]
        kind, labels, _meaning, alerts = cells[0], cells[1], cells[2], cells[3]
        out[match.group("name")] = {
            "type": kind.split()[0],
            "labels": set(_TICKED.findall(labels)),
            "alerts": alerts,
        }
    return out


def documented_recording_rules() -> set[str]:
    names = set()
    for line in _section(METRICS_MD.read_text("utf-8"), "Recording rules").splitlines():
        match = _ROW.match(line.strip())
        if match is not None:
            names.add(match.group("name"))
    return names


def rule_groups(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text("utf-8"))
    groups = data["groups"]
    assert isinstance(groups, list)
    return groups


def alerting_rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups(ALERTS) for r in g.get("rules") or [] if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups(RULES) for r in g.get("rules") or [] if "record" in r]


def known_series_names() -> set[str]:
    """Every series name a query may use: documented metrics (with histogram and _created
    suffixes), recording rules and Prometheus' own ``up``."""
    names = {"up"} | documented_recording_rules()
    for name, row in documented_metrics().items():
        names.add(name)
        base = name.removesuffix("_total")
        if row["type"] in ("counter", "histogram"):
            names.add(f"{base}_created")
        if row["type"] == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out = set()
    for line in path.read_text("utf-8").splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            out.add(github_anchor(match.group(1)))
    out |= set(re.findall(r'<a (?:id|name)="([^"]+)"', path.read_text("utf-8")))
    return out


def tool(name: str) -> str:
    """Path of a validator installed by ``deploy/check.sh install`` (or on PATH)."""
    local = TOOLS_BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(
            f"{name} is not installed: run `bash deploy/check.sh install` (see docs/operations.md)"
        )
    return found
