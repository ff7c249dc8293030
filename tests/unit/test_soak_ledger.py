"""The soak's own judgement, offline: the ledger must see every kind of loss and duplicate it
claims to (a ledger that passes everything would make the soak worthless), and the fault
schedule must come from the seed alone."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from bench.soak import CITIES, INFRA, WEIGHTS, schedule
from bench.soak_ledger import Expected, Seen, judge

pytestmark = pytest.mark.unit


def receipt(esc: str, case: str | None = "C1", outcome: str = "ACCEPTED") -> dict[str, Any]:
    return {"escalation_id": esc, "case_number": case, "outcome": outcome}


def clean() -> tuple[dict[str, Expected], Seen, dict[str, list[dict[str, Any]]]]:
    """Three complaints, one escalated and receipted, one poison dead-lettered: all fine."""
    expected = {
        "A": Expected("general", "wuhu"),
        "B": Expected("major-green", "wuhu"),
        "poison-undecodable-1": Expected("poison-undecodable"),
    }
    seen = Seen()
    seen.routed["A"]["customer-service"] += 1
    seen.routed["B"]["consumer-protection"] += 1
    seen.escalations[("wuhu", "B")].append("E-B")
    seen.receipts["E-B"].append(receipt("E-B"))
    seen.dlq_reasons["poison-undecodable-1"].append("undecodable")
    cases = {"wuhu": [{"key": "E-B", "case_number": "C1"}]}
    return expected, seen, cases


def test_a_clean_run_passes_with_its_figures() -> None:
    expected, seen, cases = clean()
    verdict = judge(expected, set(), seen, cases)
    assert verdict.ok, verdict.problems
    f = verdict.figures
    assert (f["routed"], f["dead_lettered"], f["escalations"], f["receipted"]) == (2, 1, 1, 1)
    assert f["bureau_cases"] == 1 and f["dead_lettered_by_reason"] == {"undecodable": 1}


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        (lambda s, c: s.routed.pop("A"), "lost: complaint neither"),
        (lambda s, c: s.dlq_reasons.pop("poison-undecodable-1"), "lost: complaint neither"),
        (lambda s, c: s.routed["A"].update({"desk-refunds": 1}), "duplicated: complaint"),
        (lambda s, c: s.dlq_reasons["A"].append("x"), "duplicated: complaint"),
        (lambda s, c: s.escalations.pop(("wuhu", "B")), "lost: major green-channel"),
        (lambda s, c: s.escalations[("wuhu", "B")].append("E-B"), "duplicated: escalation"),
        (lambda s, c: s.receipts.pop("E-B"), "lost: escalation neither"),
        (lambda s, c: s.receipts["E-B"].append(receipt("E-B", "C2")), "duplicated: receipts"),
        (lambda s, c: c["wuhu"].append({"key": "E-B", "case_number": "C2"}), "duplicated: bureau"),
        (lambda s, c: c["wuhu"].append({"key": "E-X", "case_number": "C9"}), "lost: bureau case"),
    ],
)
def test_every_kind_of_damage_fails_the_verdict(damage: Any, kind: str) -> None:
    expected, seen, cases = clean()
    damage(seen, cases)
    verdict = judge(expected, set(), seen, cases)
    assert not verdict.ok
    assert any(k.startswith(kind) for k in verdict.problems), verdict.problems


def test_repeated_receipts_of_one_case_and_dead_letters_are_outcomes_not_failures() -> None:
    expected, seen, cases = clean()
    seen.receipts["E-B"].append(receipt("E-B"))  # at-least-once: the bureau said "duplicate"
    expected["D"] = Expected("major-green", "hefei")
    seen.routed["D"]["consumer-protection"] += 1
    seen.escalations[("hefei", "D")].append("E-D")
    seen.esc_dlq["E-D"].append("rejected")
    verdict = judge(expected, set(), seen, cases)
    assert verdict.ok, verdict.problems
    assert verdict.figures["receipts_repeated"] == 1
    assert verdict.figures["escalations_dead_lettered_only"] == 1


def test_an_unacknowledged_send_that_arrived_anyway_is_not_unexpected() -> None:
    expected, seen, cases = clean()
    seen.routed["late"]["customer-service"] += 1
    assert judge(expected, {"late"}, seen, cases).figures["unexpected_total"] == 0
    assert judge(expected, set(), seen, cases).figures["unexpected_total"] == 1


def test_the_schedule_comes_from_the_seed_and_covers_every_kind() -> None:
    kinds = list(WEIGHTS)
    plan = schedule(7, 180, kinds, (3, 9))
    assert plan == schedule(7, 180, kinds, (3, 9))
    assert plan != schedule(8, 180, kinds, (3, 9))
    assert Counter(f.kind for f in plan).keys() == set(kinds)
    infra = [f for f in plan if f.kind in INFRA]
    for a, b in itertools.pairwise(infra):  # broker and network faults never overlap
        assert b.at_s >= a.at_s + a.duration_s
    assert all(f.city in CITIES for f in plan if f.kind in ("city_outage", "storm_429"))
