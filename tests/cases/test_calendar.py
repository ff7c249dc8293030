"""The official working-day calendar and the deadline rule set (pure: no Kafka, no clock)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import chinese_calendar
import pytest
import yaml

from gateway.cases.calendar import (
    WorkingCalendar,
    YearArrangement,
    library_years,
    load_overrides,
    local_date,
    parse_overrides,
)
from gateway.cases.deadlines import DeadlineRule, DeadlineRules, Limit, calendar_from, rules_from
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.routing.escalation import handling_deadline_ms

pytestmark = pytest.mark.unit

CST = timezone(timedelta(hours=8))
TODAY = date(2026, 12, 1)


@pytest.fixture(scope="module")
def cal() -> WorkingCalendar:
    return WorkingCalendar.build(today=TODAY)


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=CST).timestamp() * 1000)  # type: ignore[misc]


def _cst(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=CST)


# Spring Festival 2026: 15-23 February off; Saturday 14 and Saturday 28 February are make-up
# working days (State Council notice on the 2026 holiday arrangements).
@pytest.mark.parametrize(
    ("day", "working"),
    [
        ("2026-02-13", True),  # Friday before
        ("2026-02-14", True),  # Saturday, make-up working day
        ("2026-02-15", False),  # Sunday, first day off
        ("2026-02-16", False),  # Monday, holiday
        ("2026-02-17", False),  # New Year's Day of the lunar calendar
        ("2026-02-23", False),  # Monday, last day off
        ("2026-02-24", True),  # Tuesday, back at work
        ("2026-02-28", True),  # Saturday, make-up working day
        ("2026-03-01", False),  # Sunday, an ordinary weekend
        # National Day + Mid-Autumn 2026: 25-27 September and 1-7 October off; Sunday 20
        # September and Saturday 10 October are make-up working days.
        ("2026-09-20", True),
        ("2026-09-25", False),
        ("2026-09-30", True),
        ("2026-10-01", False),
        ("2026-10-05", False),  # Monday inside the holiday
        ("2026-10-07", False),
        ("2026-10-08", True),
        ("2026-10-10", True),  # Saturday, make-up working day
        ("2026-10-11", False),
        # New Year 2026: 1-3 January off, Sunday 4 January worked
        ("2026-01-02", False),
        ("2026-01-04", True),
    ],
)
def test_known_2026_boundaries(cal: WorkingCalendar, day: str, working: bool) -> None:
    assert cal.is_working_day(date.fromisoformat(day)) is working


@pytest.mark.parametrize(
    ("received", "days", "due"),
    [
        # received Friday before Spring Festival: 1 -> the make-up Saturday, 2 -> after it
        ((2026, 2, 13, 10, 0), 1, (2026, 2, 14, 10, 0)),
        ((2026, 2, 13, 10, 0), 2, (2026, 2, 24, 10, 0)),
        # acceptance (7): 14, 24, 25, 26, 27, 28 (make-up Saturday), 2 March
        ((2026, 2, 13, 10, 0), 7, (2026, 3, 2, 10, 0)),
        # ODR negotiation (10): ... 3, 4, 5 March (the weekday rule said 27 February)
        ((2026, 2, 13, 10, 0), 10, (2026, 3, 5, 10, 0)),
        # received during the holiday: counted from the next working day
        ((2026, 2, 17, 9, 30), 1, (2026, 2, 24, 9, 30)),
        # received the last day before National Day: 8, 9, 10 (Saturday) October, 12
        ((2026, 9, 30, 16, 0), 1, (2026, 10, 8, 16, 0)),
        ((2026, 9, 30, 16, 0), 3, (2026, 10, 10, 16, 0)),
        ((2026, 9, 30, 16, 0), 4, (2026, 10, 12, 16, 0)),
        # received Saturday 19 September: the make-up Sunday is the first working day
        ((2026, 9, 19, 11, 0), 1, (2026, 9, 20, 11, 0)),
        # one minute before CST midnight still counts from that day
        ((2026, 9, 30, 23, 59), 1, (2026, 10, 8, 23, 59)),
    ],
)
def test_deadlines_across_the_2026_holidays(
    cal: WorkingCalendar, received: tuple[int, ...], days: int, due: tuple[int, ...]
) -> None:
    assert _cst(cal.deadline_ms(_ms(*received), days)) == datetime(*due, tzinfo=CST)  # type: ignore[misc]
    assert handling_deadline_ms(_ms(*received), days, cal) == _ms(*due)


def test_the_router_helper_uses_the_official_calendar_by_default() -> None:
    # The old weekday arithmetic put this at Friday 27 February, inside nobody's working week.
    received = _ms(2026, 2, 13, 10, 0)
    assert _cst(handling_deadline_ms(received, 10)) == datetime(2026, 3, 5, 10, 0, tzinfo=CST)


def test_table_matches_a_walk_over_the_library(cal: WorkingCalendar) -> None:
    rnd = random.Random(13)
    for _ in range(3000):
        start = date(2004, 1, 1) + timedelta(days=rnd.randrange(0, 8300))
        n = rnd.choice((1, 2, 5, 7, 10, 15, 45, 60))
        day, left = start, n
        while left:
            day += timedelta(days=1)
            if day.year > 2026:
                left -= day.weekday() < 5
            else:
                left -= chinese_calendar.is_workday(day)
        assert cal.add_working_days(start, n) == day, (start, n)


def test_utc_and_cst_dates_differ_around_midnight(cal: WorkingCalendar) -> None:
    # 23:30 CST on 13 Feb is 15:30 UTC the same day, 00:30 CST on 14 Feb is 16:30 UTC 13 Feb
    late = _ms(2026, 2, 13, 23, 30)
    early = _ms(2026, 2, 14, 0, 30)
    assert local_date(late) == date(2026, 2, 13)
    assert local_date(early) == date(2026, 2, 14)
    assert _cst(cal.deadline_ms(early, 1)).date() == date(2026, 2, 24)
    assert datetime.fromtimestamp(early / 1000, tz=UTC).date() == date(2026, 2, 13)


def test_unknown_years_fall_back_to_weekdays_and_are_counted(cal: WorkingCalendar) -> None:
    assert not cal.is_known(date(2027, 1, 1))
    assert cal.is_known(date(2026, 12, 31))
    # 1 December + 60 days reaches 29 January 2027: 29 unknown days
    assert cal.unknown_days(TODAY, 60) == 29
    assert cal.unknown_days(date(2026, 6, 1), 60) == 0
    assert cal.known_until() == date(2026, 12, 31)
    # Friday 31 December 2027 -> Monday 3 January 2028, weekday rule
    assert cal.add_working_days(date(2027, 12, 31), 1) == date(2028, 1, 3)
    # beyond the table too
    assert cal.add_working_days(date(2090, 6, 2), 5) == date(2090, 6, 9)


def test_an_override_year_is_used_and_counted_as_known(tmp_path: Path) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "years": {
                    2027: {
                        "source": "test arrangement",
                        "holidays": ["2027-01-01", "2027-02-08..2027-02-12"],
                        "workdays": ["2027-02-06"],
                    }
                }
            }
        ),
        encoding="utf-8",
    )
    cal = WorkingCalendar.build(load_overrides(path), today=TODAY)
    assert cal.unknown_days(TODAY, 60) == 0
    assert cal.known_until() == date(2027, 12, 31)
    assert not cal.is_working_day(date(2027, 1, 1))
    assert cal.is_working_day(date(2027, 2, 6))  # a Saturday made a working day
    # Friday 5 Feb 2027 -> Saturday 6 (make-up), then Monday 15
    assert cal.add_working_days(date(2027, 2, 5), 1) == date(2027, 2, 6)
    assert cal.add_working_days(date(2027, 2, 5), 2) == date(2027, 2, 15)


def test_an_override_replaces_a_library_year() -> None:
    library = library_years()
    custom = {2026: YearArrangement(2026, frozenset({date(2026, 3, 2)}), frozenset(), "test")}
    cal = WorkingCalendar.build(custom, today=TODAY, library=library)
    assert not cal.is_working_day(date(2026, 3, 2))
    assert cal.is_working_day(date(2026, 2, 16))  # the library's holiday is gone


@pytest.mark.parametrize(
    ("years", "message"),
    [
        ({2027: {"holidays": ["2027-01-01"]}}, "needs 'source'"),
        ({2027: {"source": "x", "holidays": ["2028-01-01"]}}, "another year"),
        ({2027: {"source": "x", "holidays": ["2027-13-01"]}}, "not a date"),
        ({2027: {"source": "x", "holidays": ["2027-02-09..2027-02-01"]}}, "ends before"),
        (
            {2027: {"source": "x", "holidays": ["2027-01-01"], "workdays": ["2027-01-01"]}},
            "both a holiday",
        ),
        ({2027: {"source": "x", "workdays": ["2027-01-02"]}}, "no holidays"),
    ],
)
def test_override_file_mistakes_are_refused(years: dict[int, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_overrides({"years": years}, "overrides.yaml")


def test_the_shipped_override_file_parses() -> None:
    settings = load_settings()
    cal = calendar_from(settings.cases, today=TODAY)
    assert cal.is_known(date(2026, 10, 1))


def test_default_rules_are_the_issues_limits() -> None:
    cases = load_settings().cases
    rules = rules_from(cases, WorkingCalendar.build(today=TODAY))
    on = date(2026, 3, 1)
    assert [rules.rule(lim, on).working_days for lim in Limit] == [7, 10, 45]  # type: ignore[union-attr]
    assert rules.rule(Limit.ACCEPTANCE, date(2019, 12, 31)) is None


def test_a_later_rule_applies_to_steps_started_after_its_effective_date(
    cal: WorkingCalendar,
) -> None:
    rules = DeadlineRules(
        [
            DeadlineRule(Limit.MEDIATION, 45, date(2020, 1, 1), "Order 20"),
            DeadlineRule(Limit.MEDIATION, 60, date(2026, 7, 1), "a later order"),
        ],
        cal,
    )
    before = _ms(2026, 6, 30, 10, 0)
    after = _ms(2026, 7, 1, 10, 0)
    assert rules.due_ms(Limit.MEDIATION, before) == cal.deadline_ms(before, 45)
    assert rules.due_ms(Limit.MEDIATION, after) == cal.deadline_ms(after, 60)
    assert rules.due_ms(Limit.ACCEPTANCE, after) is None


def test_rules_come_from_configuration_with_effective_dates(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "cases:\n  deadlines:\n"
        "    - {limit: mediation, working_days: 45, effective_from: 2020-01-01}\n"
        "    - {limit: mediation, working_days: 60, effective_from: 2026-07-01, source: x}\n",
        encoding="utf-8",
    )
    cases = load_settings(cfg).cases
    rules = rules_from(cases, WorkingCalendar.build(today=TODAY))
    assert rules.rule(Limit.MEDIATION, date(2026, 8, 1)).working_days == 60  # type: ignore[union-attr]
    dup = tmp_path / "d.yaml"
    dup.write_text(
        "cases:\n  deadlines:\n"
        "    - {limit: mediation, working_days: 45, effective_from: 2020-01-01}\n"
        "    - {limit: mediation, working_days: 60, effective_from: 2020-01-01}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="two mediation rules"):
        rules_from(load_settings(dup).cases, WorkingCalendar.build(today=TODAY))


def test_unknown_days_reach_the_metric() -> None:
    from prometheus_client import CollectorRegistry

    from gateway.ops.metrics import Metrics

    metrics = Metrics(CollectorRegistry())
    cal = WorkingCalendar.build(today=TODAY)
    metrics.watch_calendar(lambda: float(cal.unknown_days(TODAY, 60)))
    assert metrics.registry.get_sample_value("greenchannel_calendar_unknown_days") == 29.0
