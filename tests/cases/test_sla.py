"""SLA figures from case states (pure) and their metrics, read from a fresh registry."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.cases.calendar import WorkingCalendar
from gateway.cases.sla import figures
from gateway.ops.metrics import Metrics

pytestmark = pytest.mark.unit

CST = timezone(timedelta(hours=8))
DAY = 86_400_000


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=CST).timestamp() * 1000)  # type: ignore[misc]


def _state(city: str, state: str, deadlines: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "city": city,
        "state": state,
        "deadlines": deadlines,
        "transitions": extra.pop("transitions", []),
        "closure": extra.pop("closure", None),
        "received_at": extra.pop("received_at", None),
    }


def _deadline(limit: str, due: int, met: int | None = None) -> dict[str, Any]:
    return {
        "limit": limit,
        "working_days": 7,
        "started_at": due - 9 * DAY,
        "due_at": due,
        "met_at": met,
    }


@pytest.fixture(scope="module")
def cal() -> WorkingCalendar:
    return WorkingCalendar.build(today=date(2026, 2, 1))


def test_at_risk_is_one_working_day_on_the_official_calendar(cal: WorkingCalendar) -> None:
    # Friday 13 Feb 2026 10:00: the next working day is Saturday 14 (make-up), then Tue 24.
    now = _ms(2026, 2, 13, 10, 0)
    states = [
        _state("wuhu", "ACCEPTED", [_deadline("NEGOTIATION", _ms(2026, 2, 14, 9, 0))]),
        _state("wuhu", "ACCEPTED", [_deadline("NEGOTIATION", _ms(2026, 2, 24, 9, 0))]),
        _state("wuhu", "RECEIVED", [_deadline("ACCEPTANCE", _ms(2026, 2, 12, 9, 0))]),
        _state("wuhu", "ACCEPTED", [_deadline("ACCEPTANCE", _ms(2026, 2, 12, 9, 0), met=1)]),
    ]
    f = figures(states, now, cal)
    assert f.at_risk == {("wuhu", "negotiation"): 1}
    assert f.overdue == {("wuhu", "acceptance"): 1}
    assert f.cases == {("wuhu", "ACCEPTED"): 3, ("wuhu", "RECEIVED"): 1}
    # on Monday 23 Feb (a holiday) the one due on Tuesday 24 is at risk
    f = figures(states[1:2], _ms(2026, 2, 23, 10, 0), cal)
    assert f.at_risk == {("wuhu", "negotiation"): 1}


def test_closure_rates_and_handling_time(cal: WorkingCalendar) -> None:
    received = _ms(2026, 3, 2, 9, 0)
    closed_at = received + 5 * DAY
    on_time = _state(
        "hefei",
        "CLOSED",
        [_deadline("ACCEPTANCE", received + 3 * DAY, met=received + DAY)],
        closure="SETTLED",
        received_at=received,
        transitions=[{"state": "CLOSED", "at": closed_at}],
    )
    late = _state(
        "hefei",
        "CLOSED",
        [_deadline("ACCEPTANCE", received + DAY, met=received + 2 * DAY)],
        closure="NOT_SETTLED",
        received_at=received,
        transitions=[{"state": "CLOSED", "at": closed_at}],
    )
    f = figures([on_time, late], closed_at + DAY, cal)
    assert f.closed == {("hefei", "true", "SETTLED"): 1, ("hefei", "false", "NOT_SETTLED"): 1}
    assert f.handling_sum["hefei"] == 2 * 5 * 86_400
    metrics = Metrics(CollectorRegistry())
    metrics.watch_cases(lambda: f)
    reg = metrics.registry
    assert (
        reg.get_sample_value(
            "greenchannel_cases_closed", {"city": "hefei", "on_time": "true", "closure": "SETTLED"}
        )
        == 1.0
    )
    assert (
        reg.get_sample_value("greenchannel_case_handling_seconds_count", {"city": "hefei"}) == 2.0
    )
    # 5 days: above the 3-day bucket, within the 7-day one
    assert (
        reg.get_sample_value(
            "greenchannel_case_handling_seconds_bucket", {"city": "hefei", "le": "259200.0"}
        )
        == 0.0
    )
    assert (
        reg.get_sample_value(
            "greenchannel_case_handling_seconds_bucket", {"city": "hefei", "le": "604800.0"}
        )
        == 2.0
    )
