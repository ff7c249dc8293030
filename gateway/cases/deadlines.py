"""Which statutory limit applies to a case step, from which date (configuration, not code).

Each rule says: limit ``L`` is ``n`` working days for steps that *start* on or after
``effective_from``. For a step started on day ``d`` the rule in force is the one with the latest
``effective_from <= d``, so a new regulation applies to cases started after it took effect and
never moves the deadline of a case already running. The defaults (``gateway.config``,
``cases.deadlines``) are the issue's: SAMR Order 20 Art. 14 (accept or refuse within 7 working
days of receipt), the ODR negotiation limit (10 working days), mediation (Order 20 Art. 21:
45 working days). A later rule (Order 121, reportedly 60 working days for mediation) is one
more entry with its effective date (docs/cases.md).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from gateway.cases.calendar import WorkingCalendar, load_overrides, local_date
from gateway.config import CasesSettings
from gateway.errors import ConfigError


class Limit(StrEnum):
    ACCEPTANCE = "acceptance"
    """The bureau decides to accept or return the case (from receipt)."""
    NEGOTIATION = "negotiation"
    """The enterprise negotiates with the consumer (from the bureau's hand-over)."""
    MEDIATION = "mediation"
    """The bureau mediates (from the start of mediation)."""


@dataclass(frozen=True, slots=True)
class DeadlineRule:
    limit: Limit
    working_days: int
    effective_from: date
    source: str


class DeadlineRules:
    """The rule set; ``due_ms`` is O(log rules) plus the calendar's O(1)."""

    def __init__(self, rules: Iterable[DeadlineRule], calendar: WorkingCalendar) -> None:
        self.calendar = calendar
        self._by_limit: dict[Limit, list[DeadlineRule]] = {}
        for rule in sorted(rules, key=lambda r: r.effective_from):
            if rule.working_days < 1:
                raise ConfigError(f"cases.deadlines: {rule.limit} needs at least 1 working day")
            same = self._by_limit.setdefault(rule.limit, [])
            if same and same[-1].effective_from == rule.effective_from:
                raise ConfigError(
                    f"cases.deadlines: two {rule.limit} rules from {rule.effective_from}"
                )
            same.append(rule)
        self._starts = {k: [r.effective_from for r in v] for k, v in self._by_limit.items()}

    def rule(self, limit: Limit, started: date) -> DeadlineRule | None:
        """The rule in force for a step started on ``started`` (None: no limit then)."""
        starts = self._starts.get(limit)
        if not starts:
            return None
        i = bisect_right(starts, started)
        return self._by_limit[limit][i - 1] if i else None

    def due_ms(self, limit: Limit, started_ms: int) -> int | None:
        rule = self.rule(limit, local_date(started_ms))
        if rule is None:
            return None
        return self.calendar.deadline_ms(started_ms, rule.working_days)


def calendar_from(settings: CasesSettings, today: date | None = None) -> WorkingCalendar:
    """The library's years, the shipped overrides, then the deployment's override file."""
    path = settings.calendar.override_file
    return WorkingCalendar.build(load_overrides(path) if path else None, today=today)


def rules_from(settings: CasesSettings, calendar: WorkingCalendar) -> DeadlineRules:
    return DeadlineRules(
        (
            DeadlineRule(Limit(r.limit), r.working_days, r.effective_from, r.source)
            for r in settings.deadlines
        ),
        calendar,
    )
