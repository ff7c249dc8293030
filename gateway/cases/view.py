"""Reading and presenting case states (``greenchannel cases show | list``, the demo).

The state topic is compacted and keyed by escalation id: reading it to the end and keeping the
last record per key gives every case's current state. Case states carry no personal data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gateway.avro.codec import Codec
from gateway.cases.calendar import WorkingCalendar
from gateway.config import Settings
from gateway.kafka.clients import TopicPartition
from gateway.kafka.reader import read_partitions
from gateway.topics import CASE_PARTITIONS, Topics

CST = timezone(timedelta(hours=8))


def load_states(settings: Settings, codec: Codec, timeout_s: float = 60.0) -> dict[str, Any]:
    topic = Topics(settings.topics.prefix).case_state
    tps = [TopicPartition(topic, p) for p in range(CASE_PARTITIONS)]
    states: dict[str, Any] = {}
    for record in read_partitions(settings.kafka, tps, timeout_s=timeout_s):
        if record.key is None:
            continue
        if not record.value:
            states.pop(record.key.decode(), None)
            continue
        states[record.key.decode()] = codec.decode_as("case_state", record.value)
    return states


@dataclass(frozen=True, slots=True)
class Query:
    city: str | None = None
    state: str | None = None
    overdue: bool = False
    due_within_days: int | None = None
    """Running deadlines due within this many working days."""


def running(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [d for d in state["deadlines"] if d["met_at"] is None]


def select(
    states: Iterable[Mapping[str, Any]], query: Query, now_ms: int, calendar: WorkingCalendar
) -> list[Mapping[str, Any]]:
    horizon = calendar.deadline_ms(now_ms, query.due_within_days) if query.due_within_days else None
    out = []
    for s in states:
        if query.city and s["city"] != query.city:
            continue
        if query.state and s["state"] != query.state.upper():
            continue
        if query.overdue and not any(d["due_at"] < now_ms for d in running(s)):
            continue
        if horizon is not None and not any(now_ms <= d["due_at"] <= horizon for d in running(s)):
            continue
        out.append(s)
    return sorted(out, key=lambda s: (s["city"], s["updated_at"]))


def cst(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, CST).strftime("%Y-%m-%d %H:%M")


def next_due(state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    pending = running(state)
    return min(pending, key=lambda d: d["due_at"]) if pending else None


def row(state: Mapping[str, Any], now_ms: int) -> tuple[str, ...]:
    due = next_due(state)
    flag = ""
    if due is not None:
        flag = "OVERDUE" if due["due_at"] < now_ms else due["limit"].lower()
    return (
        state["escalation_id"],
        state["city"],
        state["state"],
        state["case_number"] or "-",
        cst(due["due_at"]) if due else "-",
        flag or "-",
        cst(state["updated_at"]),
    )


COLUMNS = ("ESCALATION", "CITY", "STATE", "CASE NUMBER", "NEXT DUE (CST)", "DEADLINE", "UPDATED")


def detail(state: Mapping[str, Any], now_ms: int) -> list[str]:
    lines = [
        f"escalation   {state['escalation_id']}",
        f"complaint    {state['complaint_id'] or '-'}",
        f"city         {state['city']}",
        f"case number  {state['case_number'] or '-'}",
        f"state        {state['state']}"
        + (f" ({state['return_reason']})" if state["return_reason"] else "")
        + (f" ({state['closure']})" if state["closure"] else ""),
        f"received     {cst(state['received_at'])}",
        f"ODR deadline {cst(state['handling_deadline'])}",
        "transitions:",
    ]
    lines += [f"  {cst(t['at'])}  {t['state']:<12} {t['source']}" for t in state["transitions"]]
    lines.append("deadlines:")
    for d in state["deadlines"]:
        if d["met_at"] is not None:
            status = "met on time" if d["met_at"] <= d["due_at"] else "met late"
            status += f" {cst(d['met_at'])}"
        else:
            status = "OVERDUE" if d["due_at"] < now_ms else "running"
        lines.append(
            f"  {d['limit'].lower():<12} {d['working_days']:>3} working days  "
            f"from {cst(d['started_at'])}  due {cst(d['due_at'])}  {status}"
        )
    return lines
