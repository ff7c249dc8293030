"""The terminal view of ``make demo``: parse the gateway's ``/metrics``, draw a per-city table.

:func:`parse_metrics` turns one Prometheus text scrape into a :class:`Scrape` (per-city delivery
figures and router totals); :func:`frame` renders it, with a progress line and recent events,
as lines of text (ANSI colours optional). :class:`Screen` shows successive frames: in a terminal
it redraws in place with plain ANSI escapes (no curses); otherwise it prints a one-line progress
summary every few seconds, so logs and CI output stay readable.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

NS = "greenchannel_"
BREAKER_NAMES = {0.0: "closed", 1.0: "half-open", 2.0: "open"}
DEPARTMENTS = ("consumer-protection", "customer-service", "call-center")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

RESET, BOLD, DIM = "\x1b[0m", "\x1b[1m", "\x1b[2m"
RED, GREEN, YELLOW, CYAN = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[36m"


@dataclass
class CityStats:
    """One city's delivery figures from one scrape (``None``: the gauge is not there yet)."""

    delivered: float = 0.0
    retries: float = 0.0
    dead_letters: float = 0.0
    breaker: str | None = None
    paused: bool | None = None
    rate: float | None = None
    oldest_s: float | None = None


@dataclass
class Scrape:
    """What the live view needs from one ``/metrics`` scrape."""

    cities: dict[str, CityStats] = field(default_factory=dict)
    consumed: float = 0.0
    routed: dict[str, float] = field(default_factory=dict)
    """Complaints routed, by department."""
    router_dead_letters: float = 0.0
    router_lag: float = 0.0

    def city(self, name: str) -> CityStats:
        return self.cities.setdefault(name, CityStats())

    @property
    def delivered(self) -> float:
        return sum(c.delivered for c in self.cities.values())

    @property
    def retries(self) -> float:
        return sum(c.retries for c in self.cities.values())

    @property
    def delivery_dead_letters(self) -> float:
        return sum(c.dead_letters for c in self.cities.values())

    def open_breakers(self) -> list[str]:
        return [n for n, c in self.cities.items() if c.breaker not in (None, "closed")]


def _add(attr: str) -> Callable[[CityStats, float], None]:
    def update(city: CityStats, value: float) -> None:
        setattr(city, attr, getattr(city, attr) + value)

    return update


def _set_breaker(city: CityStats, value: float) -> None:
    city.breaker = BREAKER_NAMES.get(value, f"{value:g}")


def _set_paused(city: CityStats, value: float) -> None:
    city.paused = value >= 1.0


def _set_rate(city: CityStats, value: float) -> None:
    city.rate = value


def _set_oldest(city: CityStats, value: float) -> None:
    city.oldest_s = value


_PER_CITY: dict[str, Callable[[CityStats, float], None]] = {
    "delivered_total": _add("delivered"),
    "delivery_retries_total": _add("retries"),
    "delivery_dead_letters_total": _add("dead_letters"),
    "breaker_state": _set_breaker,
    "city_paused": _set_paused,
    "ratelimit_rate": _set_rate,
    "oldest_undelivered_seconds": _set_oldest,
}


def parse_metrics(text: str) -> Scrape:
    """Read the gateway's Prometheus text exposition into a :class:`Scrape`."""
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removeprefix(NS)
            labels, value = sample.labels, float(sample.value)
            if name in _PER_CITY:
                _PER_CITY[name](scrape.city(labels.get("city", "")), value)
            elif name == "router_consumed_total":
                scrape.consumed += value
            elif name == "router_routed_total":
                dept = labels.get("department", "?")
                scrape.routed[dept] = scrape.routed.get(dept, 0.0) + value
            elif name == "router_dead_letters_total":
                scrape.router_dead_letters += value
            elif name == "consumer_lag" and labels.get("component") == "router":
                scrape.router_lag += value
    return scrape


@dataclass
class Status:
    """Everything the frame shows that does not come from ``/metrics``."""

    elapsed_s: float
    duration_s: float
    """0: until Ctrl-C."""
    published: int
    majors: int
    junk: int
    rate: float
    count: int | None
    bureaus: dict[str, str]
    """City -> what the simulator is doing to it ("ok", "5xx 30%", "OUTAGE", ...)."""
    metrics_url: str
    events: Sequence[str] = ()
    scrape_error: str | None = None
    final: bool = False


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


class Style:
    """ANSI colours and box characters, or none."""

    def __init__(self, color: bool, unicode: bool) -> None:
        self.color, self.unicode = color, unicode

    def __call__(self, text: str, *codes: str) -> str:
        codes = tuple(c for c in codes if c)
        if not self.color or not codes:
            return text
        return "".join(codes) + text + RESET

    def bar(self, share: float, width: int = 24) -> str:
        share = min(1.0, max(0.0, share))
        filled = round(share * width)
        full, empty = ("█", "░") if self.unicode else ("#", "-")
        done, todo = full * filled, empty * (width - filled)
        return (self(done, GREEN) if done else "") + (self(todo, DIM) if todo else "")

    @property
    def dot(self) -> str:
        return " · " if self.unicode else " | "


def progress(status: Status, style: Style) -> str:
    """``01:23 / 02:00 [#####-----] 69%`` or, without a duration, elapsed time and count."""
    if status.duration_s > 0:
        share = status.elapsed_s / status.duration_s
        head = f"{_clock(status.elapsed_s)} / {_clock(status.duration_s)}"
    elif status.count:
        share = status.published / status.count
        head = f"{_clock(status.elapsed_s)}  {status.published:,}/{status.count:,} published"
    else:
        return f"{_clock(status.elapsed_s)} elapsed  (until Ctrl-C)"
    return f"{head}  [{style.bar(share)}] {min(100.0, share * 100):3.0f}%"


_COLUMNS = (
    ("city", 10, "<"),
    ("bureau (simulated)", 18, "<"),
    ("delivered", 9, ">"),
    ("retries", 7, ">"),
    ("dead letters", 12, ">"),
    ("breaker", 9, "<"),
    ("paused", 6, "<"),
    ("rate/s", 6, ">"),
    ("oldest", 7, ">"),
)


def _cells(values: Sequence[tuple[str, str | None]], style: Style) -> str:
    out = []
    for (_, width, align), (text, color) in zip(_COLUMNS, values, strict=True):
        padded = f"{text:{align}{width}}"
        out.append(style(padded, color) if color else padded)
    return "  ".join(out).rstrip()


def city_rows(scrape: Scrape, cities: Sequence[str], status: Status, style: Style) -> list[str]:
    """The per-city table: a header, one row per city, a total row."""
    lines = [style(_cells([(name, None) for name, _, _ in _COLUMNS], Style(False, False)), BOLD)]
    for name in cities:
        c = scrape.cities.get(name, CityStats())
        bureau = status.bureaus.get(name, "")
        bureau_color = None if bureau in ("", "ok") else (RED if "OUTAGE" in bureau else YELLOW)
        breaker = c.breaker or "-"
        breaker_color = {"closed": GREEN, "half-open": YELLOW, "open": RED}.get(breaker)
        paused = "-" if not c.paused else "paused"
        oldest = "-" if c.oldest_s is None else f"{c.oldest_s:.1f}s"
        oldest_color = YELLOW if (c.oldest_s or 0.0) >= 10.0 else None
        lines.append(
            _cells(
                [
                    (name, None),
                    (bureau, bureau_color),
                    (_n(c.delivered), None),
                    (_n(c.retries), YELLOW if c.retries else None),
                    (_n(c.dead_letters), RED if c.dead_letters else None),
                    (breaker, breaker_color),
                    (paused, YELLOW if c.paused else None),
                    ("-" if c.rate is None else f"{c.rate:g}", None),
                    (oldest, oldest_color),
                ],
                style,
            )
        )
    total = [
        ("total", None),
        ("", None),
        (_n(scrape.delivered), None),
        (_n(scrape.retries), None),
        (_n(scrape.delivery_dead_letters), None),
        ("", None),
        ("", None),
        ("", None),
        ("", None),
    ]
    lines.append(style(_cells(total, Style(False, False)), BOLD))
    return lines


def totals(scrape: Scrape, status: Status, style: Style) -> list[str]:
    """Publisher and router lines above the table."""
    per_s = status.published / status.elapsed_s if status.elapsed_s > 0 else 0.0
    junk = f", {status.junk:,} undecodable" if status.junk else ""
    routed = style.dot.join(f"{d} {_n(scrape.routed.get(d, 0.0))}" for d in DEPARTMENTS)
    dlq = scrape.router_dead_letters
    return [
        f"published  {status.published:,} records ({per_s:.0f}/s, {status.majors:,} major{junk})"
        f"{style.dot}router consumed {_n(scrape.consumed)}, lag {_n(scrape.router_lag)}",
        f"routed     {routed}{style.dot}"
        + style(f"dead-lettered complaints {_n(dlq)}", RED if dlq else ""),
    ]


def frame(scrape: Scrape, cities: Sequence[str], status: Status, style: Style) -> list[str]:
    """One complete screen of the live view."""
    title = "Green Channel demo" + (" — finished" if status.final else "")
    lines = [f"{style(title, BOLD, CYAN)}  {progress(status, style)}", ""]
    lines += totals(scrape, status, style)
    lines.append("")
    lines += city_rows(scrape, cities, status, style)
    lines.append("")
    if status.scrape_error:
        lines.append(style(f"(last scrape failed: {status.scrape_error})", YELLOW))
    for event in status.events[-4:]:
        lines.append(style(event, DIM))
    lines.append(f"metrics    {status.metrics_url}")
    if not status.final:
        lines.append(style("Ctrl-C stops the demo and everything it started", DIM))
    return lines


def summary_line(scrape: Scrape, status: Status) -> str:
    """The one-line progress report of the non-terminal output."""
    breakers = ", ".join(scrape.open_breakers()) or "none"
    elapsed = f"{status.elapsed_s:4.0f}s"
    if status.duration_s > 0:
        elapsed += f"/{status.duration_s:.0f}s"
    return (
        f"[{elapsed}] published {status.published:,} · routed {_n(sum(scrape.routed.values()))}"
        f" · delivered {_n(scrape.delivered)} · retries {_n(scrape.retries)}"
        f" · dead letters {_n(scrape.delivery_dead_letters + scrape.router_dead_letters)}"
        f" · breakers not closed: {breakers}"
    )


def visible_len(text: str) -> int:
    return len(_ANSI.sub("", text))


def fit(text: str, width: int) -> str:
    """Cut a line to ``width`` visible characters, keeping (and then closing) ANSI escapes."""
    if visible_len(text) <= width:
        return text
    out, shown, pos = [], 0, 0
    for match in _ANSI.finditer(text):
        chunk = text[pos : match.start()]
        take = chunk[: max(0, width - shown)]
        out.append(take)
        shown += len(take)
        out.append(match.group())
        pos = match.end()
    out.append(text[pos:][: max(0, width - shown)])
    return "".join(out) + RESET


class Screen:
    """Shows frames: redrawn in place on a terminal, a progress line every few seconds otherwise."""

    def __init__(self, out: TextIO, *, tty: bool, every_s: float = 5.0) -> None:
        self.out, self.tty, self.every_s = out, tty, every_s
        self._drawn = 0
        self._last_line: float | None = None

    def show(self, lines: list[str], line: str) -> None:
        """A live frame (terminal) or, at most every ``every_s`` seconds, ``line``."""
        now = time.monotonic()
        if self.tty:
            self._redraw(lines)
        elif self._last_line is None:
            self._last_line = now  # the first line after every_s: at 0 s there is nothing yet
        elif now - self._last_line >= self.every_s:
            self._last_line = now
            self.out.write(line + "\n")
            self.out.flush()

    def final(self, lines: list[str]) -> None:
        """The last frame, left on screen (printed in full without a terminal)."""
        if self.tty:
            self._redraw(lines)
            self._drawn = 0
        else:
            self.out.write("\n" + "\n".join(lines) + "\n")
            self.out.flush()

    def message(self, text: str) -> None:
        """A line below the live frame (the next frame starts below it)."""
        self._drawn = 0
        self.out.write(text + "\n")
        self.out.flush()

    def _redraw(self, lines: list[str]) -> None:
        width = max(20, shutil.get_terminal_size((120, 40)).columns - 1)
        parts = []
        if self._drawn:
            parts.append(f"\x1b[{self._drawn}F")  # to the first line of the previous frame
        parts += [fit(line, width) + "\x1b[K\n" for line in lines]
        parts.append("\x1b[J")  # clear whatever the previous frame left below
        self.out.write("".join(parts))
        self.out.flush()
        self._drawn = len(lines)

    def hide_cursor(self) -> None:
        if self.tty:
            self.out.write("\x1b[?25l")
            self.out.flush()

    def show_cursor(self) -> None:
        if self.tty:
            self.out.write("\x1b[?25h")
            self.out.flush()
