"""Working days on China's official calendar (the State Council's holiday arrangements).

A day is a working day when it is a Monday-Friday that is not a statutory holiday, or a
weekend day the State Council made a make-up working day (调休). The arrangements of each year
come from the ``chinese_calendar`` library (pinned in ``pyproject.toml``; it raises for the
years it does not know) and from an **override file** for years the library does not cover
yet (``gateway/defaults/calendar.yaml`` ships with the package; ``cases.calendar.override_file``
adds a deployment's own). A year in an override file replaces the library's year entirely.

A year neither source knows is **unknown**: its days fall back to Monday-Friday (the best
guess, and what the gateway did before), and :meth:`WorkingCalendar.unknown_days` counts them
in the coming window so ``greenchannel_calendar_unknown_days`` and its alert tell operators to
add the year (docs/operations.md, "The working-day calendar").

Everything is precomputed into two integer tables when the calendar is built, so the router's
hot path pays two array reads per escalation (no loops, no date objects):

* ``_rank[i]``: working days among table days ``0..i`` (inclusive),
* ``_work[k]``: the table index of the ``k``-th working day (0-based).

"``n`` working days after day ``d``" is then ``_work[_rank[d] + n - 1]``. Days outside the
table (before 2004, or beyond the horizon) use the weekday rule, as unknown years do.
"""

from __future__ import annotations

import functools
import threading
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigError

SHANGHAI_OFFSET_MS = 8 * 3_600_000
"""China Standard Time is UTC+8 all year (no daylight saving time)."""
DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)
HORIZON_YEARS = 10
"""The table reaches this many years past the current one (weekday rule beyond)."""


@dataclass(frozen=True, slots=True)
class YearArrangement:
    """One year's statutory holidays and make-up working days, and where they come from."""

    year: int
    holidays: frozenset[date]
    workdays: frozenset[date]
    source: str

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays


def library_years() -> dict[int, YearArrangement]:
    """Every year ``chinese_calendar`` knows, as arrangements."""
    import chinese_calendar

    holidays: dict[int, set[date]] = {}
    workdays: dict[int, set[date]] = {}
    for day in chinese_calendar.holidays:
        holidays.setdefault(day.year, set()).add(day)
    for day in chinese_calendar.workdays:
        workdays.setdefault(day.year, set()).add(day)
    version = getattr(chinese_calendar, "__version__", "?")
    return {
        year: YearArrangement(
            year,
            frozenset(days),
            frozenset(workdays.get(year, ())),
            f"chinese_calendar {version}",
        )
        for year, days in holidays.items()
    }


def _dates(values: Iterable[Any], where: str) -> set[date]:
    out: set[date] = set()
    for value in values:
        if isinstance(value, date):
            out.add(value)
            continue
        text = str(value)
        first, sep, last = text.partition("..")
        try:
            start = date.fromisoformat(first.strip())
            end = date.fromisoformat(last.strip()) if sep else start
        except ValueError as exc:
            raise ConfigError(f"{where}: {text!r} is not a date or a date..date range") from exc
        if end < start:
            raise ConfigError(f"{where}: range {text!r} ends before it starts")
        out.update(start + timedelta(days=i) for i in range((end - start).days + 1))
    return out


def parse_overrides(data: Any, where: str) -> dict[int, YearArrangement]:
    """The years of an override file (format: ``gateway/defaults/calendar.yaml``)."""
    if data is None:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("years") or {}, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'years' mapping")
    years: dict[int, YearArrangement] = {}
    for key, block in (data.get("years") or {}).items():
        year = int(key)
        if not isinstance(block, dict) or not block.get("source"):
            raise ConfigError(f"{where}: year {year} needs 'source' (the State Council notice)")
        holidays = _dates(block.get("holidays") or [], f"{where}: {year}.holidays")
        workdays = _dates(block.get("workdays") or [], f"{where}: {year}.workdays")
        stray = sorted(d for d in holidays | workdays if d.year != year)
        if stray:
            raise ConfigError(f"{where}: year {year} lists days of another year: {stray[0]}")
        both = sorted(holidays & workdays)
        if both:
            raise ConfigError(f"{where}: {both[0]} is both a holiday and a make-up working day")
        if not holidays:
            raise ConfigError(f"{where}: year {year} lists no holidays")
        years[year] = YearArrangement(
            year, frozenset(holidays), frozenset(workdays), str(block["source"])
        )
    return years


def load_overrides(path: Path) -> dict[int, YearArrangement]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read calendar override file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"calendar override file {path} is not valid YAML") from exc
    return parse_overrides(data, str(path))


def shipped_overrides() -> dict[int, YearArrangement]:
    text = resources.files("gateway").joinpath("defaults/calendar.yaml").read_text("utf-8")
    return parse_overrides(yaml.safe_load(text), "gateway/defaults/calendar.yaml")


@functools.cache
def _weekday_days_after(weekday: int, n: int) -> int:
    """Calendar days from a ``weekday`` (0 = Monday) until ``n`` Monday-Fridays passed."""
    days = 0
    while n > 0:
        days += 1
        if (weekday + days) % 7 < 5:
            n -= 1
    return days


class WorkingCalendar:
    """Working days per the official arrangements; O(1) per query once built."""

    def __init__(self, years: Mapping[int, YearArrangement], *, first: date, last: date) -> None:
        self.years = dict(years)
        self.first = first
        self.last = last
        self._base = (first - EPOCH).days
        size = (last - first).days + 1
        rank = array("q", bytes(8 * size))
        work = array("q")
        count = 0
        day = first
        for i in range(size):
            if self._is_working(day):
                work.append(i)
                count += 1
            rank[i] = count
            day += timedelta(days=1)
        self._rank = rank
        self._work = work

    @classmethod
    def build(
        cls,
        overrides: Mapping[int, YearArrangement] | None = None,
        *,
        today: date | None = None,
        library: Mapping[int, YearArrangement] | None = None,
    ) -> WorkingCalendar:
        """Library years, then the shipped overrides, then ``overrides`` (later ones win)."""
        years = dict(library_years() if library is None else library)
        years.update(shipped_overrides())
        years.update(overrides or {})
        this_year = (today or date.today()).year
        first = date(min([*years, this_year]), 1, 1)
        last = date(max([*years, this_year]) + HORIZON_YEARS, 12, 31)
        return cls(years, first=first, last=last)

    def _is_working(self, day: date) -> bool:
        arrangement = self.years.get(day.year)
        if arrangement is None:
            return day.weekday() < 5
        return arrangement.is_working_day(day)

    # queries -------------------------------------------------------------------------------
    def is_known(self, day: date) -> bool:
        """True when the official arrangement of ``day``'s year is known."""
        return day.year in self.years

    def is_working_day(self, day: date) -> bool:
        i = (day - EPOCH).days - self._base
        if 0 <= i < len(self._rank):
            return self._rank[i] != (self._rank[i - 1] if i else 0)
        return day.weekday() < 5

    def add_working_days_ord(self, epoch_day: int, n: int) -> int:
        """The ``n``-th working day after ``epoch_day`` (days since 1970-01-01), n >= 1."""
        i = epoch_day - self._base
        if 0 <= i < len(self._rank):
            k = self._rank[i] + n - 1
            if k < len(self._work):
                return self._work[k] + self._base
        return epoch_day + _weekday_days_after((epoch_day + 3) % 7, n)

    def add_working_days(self, day: date, n: int) -> date:
        return EPOCH + timedelta(days=self.add_working_days_ord((day - EPOCH).days, n))

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after ``start`` up to and including ``end`` (negative if end < start)."""
        if end < start:
            return -self.working_days_between(end, start)
        return sum(
            1 for i in range(1, (end - start).days + 1) if self.is_working_day(start + timedelta(i))
        )

    def unknown_days(self, today: date, window_days: int = 60) -> int:
        """Days of the coming window (today included) whose year's arrangement is unknown."""
        return sum(1 for i in range(window_days) if not self.is_known(today + timedelta(days=i)))

    def known_until(self) -> date | None:
        """The last day of the last consecutive known year from the first known one."""
        if not self.years:
            return None
        year = min(self.years)
        while year + 1 in self.years:
            year += 1
        return date(year, 12, 31)

    # milliseconds (the schemas' timestamp-millis) -------------------------------------------
    def deadline_ms(self, start_ms: int, working_days: int) -> int:
        """``working_days`` working days after ``start_ms`` (China Standard Time), at the same
        time of day; counting starts with the next day, so a case received on a holiday or a
        weekend is due ``n`` working days after it, like one received on the day before."""
        local_day = (start_ms + SHANGHAI_OFFSET_MS) // DAY_MS
        return start_ms + (self.add_working_days_ord(local_day, working_days) - local_day) * DAY_MS


def local_date(ms: int) -> date:
    """The China Standard Time date of a timestamp in milliseconds."""
    return EPOCH + timedelta(days=(ms + SHANGHAI_OFFSET_MS) // DAY_MS)


_installed: WorkingCalendar | None = None
_lock = threading.Lock()


def install(calendar: WorkingCalendar) -> None:
    """Make ``calendar`` the process's calendar (``gateway.app`` does this from settings)."""
    global _installed  # noqa: PLW0603 - one official calendar per process, set at start-up
    with _lock:
        _installed = calendar


def current() -> WorkingCalendar:
    """The installed calendar, or the library + shipped overrides, built once."""
    global _installed  # noqa: PLW0603
    calendar = _installed
    if calendar is not None:  # the hot path: no lock once built
        return calendar
    with _lock:
        if _installed is None:
            _installed = WorkingCalendar.build()
        return _installed
