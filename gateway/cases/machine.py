"""The case state machine: which transitions are allowed, and how an update changes a state.

Pure: a ``CaseState`` record (``schemas/case_state.avsc``, as a dict) and a ``CaseUpdate``
record in, one :class:`Verdict` out. No clock (``now_ms`` is passed), no IO.

::

    ESCALATED ─► RECEIVED ─┬─► ACCEPTED ─┬─► NEGOTIATION ─┬─► MEDIATION ─► CLOSED
       (router)  (receipt) │             │                └──────────────► CLOSED
                           │             ├─► MEDIATION ─► CLOSED
                           │             └─► CLOSED
                           └─► RETURNED (with a reason; final)

``ESCALATED`` and ``RECEIVED`` are the gateway's own facts (the escalation, the delivery
receipt). They come from other topics than the bureau's updates, so they may arrive after a
bureau update of the same case: they are merged whenever they come (the complaint id, the case
number, the acceptance deadline), never refused for being late. A bureau update must follow the
graph from the case's current state:

* a state the case has already been in is a **repeat** (a callback sent twice, overlapping
  polls): :class:`Duplicate`, nothing changes;
* a state that fits the case's path but not its current state — a late one (mediation reported
  after closure) or an early one whose predecessor has not arrived (negotiation before
  acceptance) — or a bureau event time before the last transition, is **out of order**:
  :class:`Refused` (``out_of_order``);
* a state the case's path excludes (anything after RETURNED, RETURNED once accepted) is
  **impossible**: :class:`Refused` (``impossible_transition``);
* RETURNED needs a reason, CLOSED a closure (``missing_reason`` / ``missing_closure``); a case
  number that contradicts the known one is ``case_number_mismatch``; a state this version does
  not know is ``unknown_state``.

A refused update is dead-lettered by the keeper and never applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.cases.calendar import local_date
from gateway.cases.deadlines import DeadlineRules, Limit


class Status(StrEnum):
    ESCALATED = "ESCALATED"
    RECEIVED = "RECEIVED"
    ACCEPTED = "ACCEPTED"
    RETURNED = "RETURNED"
    NEGOTIATION = "NEGOTIATION"
    MEDIATION = "MEDIATION"
    CLOSED = "CLOSED"
    UNKNOWN = "UNKNOWN"


FACTS = frozenset({Status.ESCALATED, Status.RECEIVED})
FINAL = frozenset({Status.RETURNED, Status.CLOSED})
ALLOWED: dict[Status | None, frozenset[Status]] = {
    None: frozenset({Status.ACCEPTED, Status.RETURNED}),
    Status.ESCALATED: frozenset({Status.ACCEPTED, Status.RETURNED}),
    Status.RECEIVED: frozenset({Status.ACCEPTED, Status.RETURNED}),
    Status.ACCEPTED: frozenset({Status.NEGOTIATION, Status.MEDIATION, Status.CLOSED}),
    Status.NEGOTIATION: frozenset({Status.MEDIATION, Status.CLOSED}),
    Status.MEDIATION: frozenset({Status.CLOSED}),
    Status.RETURNED: frozenset(),
    Status.CLOSED: frozenset(),
}
"""Bureau transitions allowed from each state (None: no state yet)."""
RANK = {
    Status.ESCALATED: 0,
    Status.RECEIVED: 1,
    Status.ACCEPTED: 2,
    Status.RETURNED: 2,
    Status.NEGOTIATION: 3,
    Status.MEDIATION: 4,
    Status.CLOSED: 5,
}
_ACCEPTED_PATH = frozenset({Status.ACCEPTED, Status.NEGOTIATION, Status.MEDIATION, Status.CLOSED})
# which running limit a state ends, and which it starts
_ENDS: dict[Status, tuple[Limit, ...]] = {
    Status.ACCEPTED: (Limit.ACCEPTANCE,),
    Status.RETURNED: (Limit.ACCEPTANCE,),
    Status.MEDIATION: (Limit.ACCEPTANCE, Limit.NEGOTIATION),
    Status.CLOSED: (Limit.ACCEPTANCE, Limit.NEGOTIATION, Limit.MEDIATION),
}
_STARTS: dict[Status, Limit] = {
    Status.RECEIVED: Limit.ACCEPTANCE,
    Status.NEGOTIATION: Limit.NEGOTIATION,
    Status.MEDIATION: Limit.MEDIATION,
}


@dataclass(frozen=True, slots=True)
class Applied:
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Duplicate:
    reason: str = "repeated"


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    message: str


Verdict = Applied | Duplicate | Refused


def new_state(update: dict[str, Any]) -> dict[str, Any]:
    return {
        "escalation_id": update["escalation_id"],
        "city": update["city"],
        "complaint_id": None,
        "case_number": None,
        "state": None,
        "return_reason": None,
        "closure": None,
        "received_at": None,
        "handling_deadline": None,
        "transitions": [],
        "deadlines": [],
        "updated_at": 0,
        "version": 0,
    }


def apply(
    state: dict[str, Any] | None, update: dict[str, Any], rules: DeadlineRules, now_ms: int
) -> Verdict:
    """The verdict on ``update`` for a case in ``state`` (None: the case is not known yet)."""
    try:
        target = Status(update["state"])
    except ValueError:
        target = Status.UNKNOWN
    if target is Status.UNKNOWN:
        return Refused("unknown_state", f"state {update['state']!r} is not one this gateway knows")
    if state is not None and state["escalation_id"] != update["escalation_id"]:
        return Refused("wrong_case", "the update belongs to another escalation")
    seen = {t["state"] for t in state["transitions"]} if state is not None else set()
    if target.value in seen:
        return Duplicate()
    number = update.get("case_number")
    if state is not None and number and state["case_number"] not in (None, number):
        return Refused("case_number_mismatch", "the update names another bureau case number")
    refused = None if target in FACTS else _check_bureau(state, update, target)
    if refused is not None:
        return refused
    out = _copy(state) if state is not None else new_state(update)
    _record(out, update, target, now_ms)
    _deadlines(out, update, target, rules)
    return Applied(out)


def _check_bureau(
    state: dict[str, Any] | None, update: dict[str, Any], target: Status
) -> Refused | None:
    current = Status(state["state"]) if state is not None and state["state"] else None
    if target not in ALLOWED[current]:
        return _not_allowed(state, current, target)
    last_bureau = [
        t["at"] for t in (state or {}).get("transitions", []) if Status(t["state"]) not in FACTS
    ]
    if last_bureau and update["occurred_at"] < max(last_bureau):
        return Refused("out_of_order", f"{target} happened before the case's last transition")
    if target is Status.RETURNED and not update.get("return_reason"):
        return Refused("missing_reason", "RETURNED without a return reason")
    if target is Status.CLOSED and not update.get("closure"):
        return Refused("missing_closure", "CLOSED without a closure")
    return None


def _not_allowed(state: dict[str, Any] | None, current: Status | None, target: Status) -> Refused:
    seen = {Status(t["state"]) for t in state["transitions"]} if state is not None else set()
    excluded = current is Status.RETURNED or (target is Status.RETURNED and seen & _ACCEPTED_PATH)
    if excluded or (current is Status.CLOSED and RANK[target] >= RANK[current]):
        return Refused("impossible_transition", f"{current} -> {target}")
    return Refused("out_of_order", f"{target} while the case is {current or 'unknown'}")


def _copy(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    out["transitions"] = [dict(t) for t in state["transitions"]]
    out["deadlines"] = [dict(d) for d in state["deadlines"]]
    return out


def _record(out: dict[str, Any], update: dict[str, Any], target: Status, now_ms: int) -> None:
    transition = {
        "state": target.value,
        "at": update["occurred_at"],
        "source": update["source"],
        "update_id": update["update_id"],
    }
    out["transitions"].append(transition)
    out["transitions"].sort(key=lambda t: (RANK[Status(t["state"])], t["at"]))
    current = Status(out["state"]) if out["state"] else None
    if current is None or RANK[target] > RANK[current]:
        out["state"] = target.value
    if update.get("case_number") and out["case_number"] is None:
        out["case_number"] = update["case_number"]
    if target is Status.ESCALATED:
        out["complaint_id"] = update.get("complaint_id")
        out["received_at"] = update.get("received_at")
        out["handling_deadline"] = update.get("handling_deadline")
    elif target is Status.RECEIVED and out["complaint_id"] is None:
        out["complaint_id"] = update.get("complaint_id")
    elif target is Status.RETURNED:
        out["return_reason"] = update["return_reason"]
    elif target is Status.CLOSED:
        out["closure"] = update["closure"]
    out["updated_at"] = now_ms
    out["version"] += 1


def _deadlines(
    out: dict[str, Any], update: dict[str, Any], target: Status, rules: DeadlineRules
) -> None:
    at = update["occurred_at"]
    starts = _STARTS.get(target)
    if starts is not None:
        rule = rules.rule(starts, local_date(at))
        if rule is not None:
            ended = _ended_by_history(out, starts)
            out["deadlines"].append(
                {
                    "limit": starts.value.upper(),
                    "working_days": rule.working_days,
                    "started_at": at,
                    "due_at": rules.calendar.deadline_ms(at, rule.working_days),
                    "met_at": ended,
                }
            )
    for limit in _ENDS.get(target, ()):
        for deadline in out["deadlines"]:
            if deadline["limit"] == limit.value.upper() and deadline["met_at"] is None:
                deadline["met_at"] = at


def _ended_by_history(out: dict[str, Any], limit: Limit) -> int | None:
    """When a step that starts late (a receipt merged after the acceptance) had already ended."""
    ends = [t["at"] for t in out["transitions"] if limit in _ENDS.get(Status(t["state"]), ())]
    return min(ends) if ends else None
