"""The case state machine (pure): allowed, repeated, out-of-order and impossible transitions."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.cases.calendar import WorkingCalendar
from gateway.cases.deadlines import DeadlineRule, DeadlineRules, Limit
from gateway.cases.machine import ALLOWED, Applied, Duplicate, Refused, Status, apply
from gateway.cases.updates import bureau_update, from_escalation, from_receipt, update_id

pytestmark = pytest.mark.unit

CST = timezone(timedelta(hours=8))
EID = "5b0c1d8e-0000-5000-8000-000000000001"
T0 = int(datetime(2026, 2, 10, 9, 0, tzinfo=CST).timestamp() * 1000)
HOUR = 3_600_000


@pytest.fixture(scope="module")
def rules() -> DeadlineRules:
    cal = WorkingCalendar.build(today=date(2026, 2, 1))
    start = date(2020, 1, 1)
    return DeadlineRules(
        [
            DeadlineRule(Limit.ACCEPTANCE, 7, start, "Order 20 Art. 14"),
            DeadlineRule(Limit.NEGOTIATION, 10, start, "ODR"),
            DeadlineRule(Limit.MEDIATION, 45, start, "Order 20 Art. 21"),
        ],
        cal,
    )


def escalation() -> dict[str, Any]:
    return {
        "escalation_id": EID,
        "complaint_id": "c-1",
        "city": "wuhu",
        "created_at": T0,
        "received_at": T0 - HOUR,
        "handling_deadline": T0 + 14 * 24 * HOUR,
    }


def receipt(number: str = "WH-1") -> dict[str, Any]:
    return {
        "escalation_id": EID,
        "complaint_id": "c-1",
        "city": "wuhu",
        "outcome": "ACCEPTED",
        "case_number": number,
        "completed_at": T0 + HOUR,
    }


def bureau(state: str, hours: int, **extra: Any) -> dict[str, Any]:
    return bureau_update(
        escalation_id=EID,
        city="wuhu",
        state=state,
        occurred_at_ms=T0 + hours * HOUR,
        observed_at_ms=T0 + hours * HOUR,
        source="CALLBACK",
        **extra,
    )


def run(rules: DeadlineRules, updates: list[dict[str, Any]]) -> tuple[Any, list[Any]]:
    state = None
    verdicts = []
    for i, update in enumerate(updates):
        verdict = apply(state, update, rules, T0 + 1000 * i)
        verdicts.append(verdict)
        if isinstance(verdict, Applied):
            state = verdict.state
    return state, verdicts


def _cst(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=CST)


def test_the_full_lifecycle_with_deadlines(rules: DeadlineRules) -> None:
    state, verdicts = run(
        rules,
        [
            from_escalation(escalation(), T0),
            from_receipt(receipt(), T0),  # type: ignore[list-item]
            bureau("ACCEPTED", 24),
            bureau("NEGOTIATION", 25),
            bureau("MEDIATION", 24 * 20),
            bureau("CLOSED", 24 * 30, closure="SETTLED"),
        ],
    )
    assert all(isinstance(v, Applied) for v in verdicts)
    assert state["state"] == "CLOSED" and state["closure"] == "SETTLED"
    assert state["case_number"] == "WH-1" and state["complaint_id"] == "c-1"
    assert [t["state"] for t in state["transitions"]] == [
        "ESCALATED",
        "RECEIVED",
        "ACCEPTED",
        "NEGOTIATION",
        "MEDIATION",
        "CLOSED",
    ]
    assert state["version"] == 6
    limits = {d["limit"]: d for d in state["deadlines"]}
    # acceptance: 7 working days from Tue 10 Feb 2026 10:00 (receipt) across Spring Festival
    # (14 Feb a make-up Saturday, 15-23 Feb off): 11, 12, 13, 14, 24, 25, 26 Feb
    assert _cst(limits["ACCEPTANCE"]["due_at"]) == datetime(2026, 2, 26, 10, 0, tzinfo=CST)
    assert limits["ACCEPTANCE"]["met_at"] == T0 + 24 * HOUR
    assert limits["NEGOTIATION"]["working_days"] == 10
    assert limits["NEGOTIATION"]["met_at"] == T0 + 24 * 20 * HOUR
    assert limits["MEDIATION"]["met_at"] == T0 + 24 * 30 * HOUR


def test_a_repeated_callback_is_a_duplicate_and_changes_nothing(rules: DeadlineRules) -> None:
    state, verdicts = run(
        rules,
        [from_escalation(escalation(), T0), bureau("ACCEPTED", 2), bureau("ACCEPTED", 3)],
    )
    assert isinstance(verdicts[2], Duplicate)
    assert state["version"] == 2
    assert bureau("ACCEPTED", 2)["update_id"] == bureau("ACCEPTED", 9)["update_id"]
    assert update_id(EID, "ACCEPTED") != update_id(EID, "NEGOTIATION")


@pytest.mark.parametrize(
    ("updates", "reason"),
    [
        # negotiation before its acceptance arrived
        (["ACCEPTED?skip", "NEGOTIATION"], "out_of_order"),
        # returned once accepted, or after closure
        (["ACCEPTED", "RETURNED"], "impossible_transition"),
        (["ACCEPTED", "CLOSED", "RETURNED"], "impossible_transition"),
        # nothing after RETURNED
        (["RETURNED", "NEGOTIATION"], "impossible_transition"),
        (["RETURNED", "ACCEPTED"], "impossible_transition"),
        # a late NEGOTIATION after the case was closed
        (["ACCEPTED", "CLOSED", "NEGOTIATION"], "out_of_order"),
        (["ACCEPTED", "MEDIATION", "NEGOTIATION"], "out_of_order"),
    ],
)
def test_impossible_and_out_of_order_transitions_are_refused(
    rules: DeadlineRules, updates: list[str], reason: str
) -> None:
    sequence: list[dict[str, Any]] = [from_escalation(escalation(), T0)]
    for hour, name in enumerate(updates, start=1):
        if name.endswith("?skip"):
            continue
        extra: dict[str, Any] = {}
        if name == "RETURNED":
            extra["return_reason"] = "NOT_JURISDICTION"
        if name == "CLOSED":
            extra["closure"] = "NOT_SETTLED"
        sequence.append(bureau(name, hour, **extra))
    state, verdicts = run(rules, sequence)
    last = verdicts[-1]
    assert isinstance(last, Refused) and last.reason == reason
    # never applied
    assert state["state"] != sequence[-1]["state"] or len(verdicts) == 1


def test_an_event_older_than_the_last_transition_is_out_of_order(rules: DeadlineRules) -> None:
    _, verdicts = run(
        rules, [from_escalation(escalation(), T0), bureau("ACCEPTED", 10), bureau("NEGOTIATION", 5)]
    )
    assert isinstance(verdicts[2], Refused) and verdicts[2].reason == "out_of_order"


def test_returned_needs_a_reason_and_closed_a_closure(rules: DeadlineRules) -> None:
    _, verdicts = run(rules, [bureau("RETURNED", 1)])
    assert isinstance(verdicts[0], Refused) and verdicts[0].reason == "missing_reason"
    _, verdicts = run(rules, [bureau("ACCEPTED", 1), bureau("CLOSED", 2)])
    assert isinstance(verdicts[1], Refused) and verdicts[1].reason == "missing_closure"
    state, verdicts = run(rules, [bureau("RETURNED", 1, return_reason="DUPLICATE")])
    assert state["state"] == "RETURNED" and state["return_reason"] == "DUPLICATE"
    acceptance = [d for d in state["deadlines"] if d["limit"] == "ACCEPTANCE"]
    assert acceptance == []  # no receipt yet: the acceptance clock starts with it


def test_late_facts_are_merged_not_refused(rules: DeadlineRules) -> None:
    # the bureau's callback beat both the receipt and the escalation to the keeper
    state, verdicts = run(
        rules,
        [
            bureau("ACCEPTED", 2, case_number="WH-1"),
            from_receipt(receipt(), T0),  # type: ignore[list-item]
            from_escalation(escalation(), T0),
        ],
    )
    assert all(isinstance(v, Applied) for v in verdicts)
    assert state["state"] == "ACCEPTED"
    assert [t["state"] for t in state["transitions"]] == ["ESCALATED", "RECEIVED", "ACCEPTED"]
    assert state["complaint_id"] == "c-1" and state["handling_deadline"] is not None
    (acceptance,) = state["deadlines"]
    assert acceptance["met_at"] == T0 + 2 * HOUR  # started late, already met


def test_a_contradicting_case_number_is_refused(rules: DeadlineRules) -> None:
    _, verdicts = run(
        rules,
        [from_receipt(receipt("WH-1"), T0), bureau("ACCEPTED", 2, case_number="WH-2")],  # type: ignore[list-item]
    )
    assert isinstance(verdicts[1], Refused) and verdicts[1].reason == "case_number_mismatch"


def test_unknown_states_are_refused(rules: DeadlineRules) -> None:
    update = bureau("ACCEPTED", 1)
    update["state"] = "UNKNOWN"
    _, verdicts = run(rules, [update])
    assert isinstance(verdicts[0], Refused) and verdicts[0].reason == "unknown_state"


def test_rejected_receipts_are_no_update() -> None:
    rejected = receipt() | {"outcome": "REJECTED", "case_number": None}
    assert from_receipt(rejected, T0) is None


def test_every_state_is_reachable_and_the_graph_has_no_cycle() -> None:
    reachable = {s for targets in ALLOWED.values() for s in targets}
    assert reachable == {
        s for s in Status if s not in (Status.ESCALATED, Status.RECEIVED, Status.UNKNOWN)
    }
    for start in ALLOWED:
        seen: set[Status] = set()
        frontier = set(ALLOWED[start])
        while frontier:
            s = frontier.pop()
            assert s != start, f"cycle through {start}"
            if s not in seen:
                seen.add(s)
                frontier |= ALLOWED[s]


def test_notes_are_masked() -> None:
    update = bureau("ACCEPTED", 1, note="已联系消费者张三 13812345678")
    assert "13812345678" not in update["note"]
