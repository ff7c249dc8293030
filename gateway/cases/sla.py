"""SLA figures of the cases a keeper holds (pure): computed at scrape time from the states.

* cases per city and state;
* running deadlines **at risk** (due within one working day from now, not yet overdue) and
  **overdue** (past due, not met), per city and limit;
* closed cases per city, whether every deadline of the case was met on time, and how it closed
  (on-time closure rate = on time / all closed; settlement rate = SETTLED / all closed);
* handling time of closed cases (platform receipt to closure), as a histogram.

A keeper holds the states of its assigned partitions only; every case is in exactly one
keeper, so Prometheus sums the figures of all keepers (``sum by (city)``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.cases.calendar import WorkingCalendar
from gateway.ops.metrics import CASE_HANDLING_BUCKETS as HANDLING_BUCKETS


@dataclass
class Figures:
    cases: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(city, state) -> cases."""
    at_risk: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(city, limit) -> running deadlines due within one working day."""
    overdue: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(city, limit) -> running deadlines past due."""
    closed: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(city, on_time "true"/"false", closure) -> closed cases."""
    handling: dict[str, list[int]] = field(default_factory=dict)
    """city -> closed cases per handling-time bucket (last: +Inf)."""
    handling_sum: Counter[str] = field(default_factory=Counter)


def figures(states: Iterable[dict[str, Any]], now_ms: int, calendar: WorkingCalendar) -> Figures:
    out = Figures()
    horizon = calendar.deadline_ms(now_ms, 1)
    for state in states:
        city = state["city"]
        out.cases[(city, state["state"] or "UNKNOWN")] += 1
        for deadline in state["deadlines"]:
            if deadline["met_at"] is not None:
                continue
            key = (city, deadline["limit"].lower())
            if deadline["due_at"] < now_ms:
                out.overdue[key] += 1
            elif deadline["due_at"] <= horizon:
                out.at_risk[key] += 1
        if state["state"] == "CLOSED":
            _closed(out, state, city)
    return out


def _closed(out: Figures, state: dict[str, Any], city: str) -> None:
    on_time = all(
        d["met_at"] is not None and d["met_at"] <= d["due_at"] for d in state["deadlines"]
    )
    out.closed[(city, "true" if on_time else "false", state["closure"] or "OTHER")] += 1
    closed_at = max((t["at"] for t in state["transitions"] if t["state"] == "CLOSED"), default=0)
    started = state["received_at"]
    if started and closed_at >= started:
        seconds = (closed_at - started) / 1000
        buckets = out.handling.setdefault(city, [0] * (len(HANDLING_BUCKETS) + 1))
        buckets[bisect_left(HANDLING_BUCKETS, seconds)] += 1
        out.handling_sum[city] += seconds
