"""The case intake and keeper on the real broker: exactly once, refusals dead-lettered, restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.avro.codec import Codec
from gateway.cases.deadlines import calendar_from, rules_from
from gateway.cases.intake import CaseIntake
from gateway.cases.keeper import CaseKeeper
from gateway.cases.updates import bureau_update
from gateway.config import Settings
from gateway.ops.metrics import Metrics
from gateway.ops.watchdog import Watchdog
from tests.cases.kit import (
    HOUR,
    escalation_record,
    latest_states,
    publish,
    receipt_record,
    records_of,
    running,
    wait_for,
)
from tests.conftest import TopicFactory
from tests.helpers import header

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _keeper(settings: Settings, codec: Codec, metrics: Metrics, instance: str) -> CaseKeeper:
    rules = rules_from(settings.cases, calendar_from(settings.cases))
    return CaseKeeper(settings, codec, rules, metrics, Watchdog(60), instance_id=instance)


def test_cases_flow_exactly_once_and_survive_a_keeper_restart(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory
) -> None:
    topic_factory.create_all()
    settings = settings_factory()
    topics = topic_factory.topics
    codec = Codec(settings.codec)
    metrics = Metrics()
    now = int(time.time() * 1000)
    esc = [
        escalation_record(f"c-{i}", city, code, now)
        for i, (city, code) in enumerate([("wuhu", "340200"), ("hefei", "340100")])
    ]
    wuhu, hefei = esc

    def bureau(e: dict[str, Any], state: str, hours: int, **extra: Any) -> tuple[str, bytes, bytes]:
        update = bureau_update(
            escalation_id=e["escalation_id"],
            city=e["city"],
            state=state,
            occurred_at_ms=now + hours * HOUR,
            observed_at_ms=now + hours * HOUR,
            source="CALLBACK",
            **extra,
        )
        value = codec.encode("case_update", update)
        return (topics.case_inbound, e["escalation_id"].encode(), value)

    publish(
        settings,
        [
            (
                topics.escalations(e["city"]),
                e["complaint_id"].encode(),
                codec.encode("escalation", e),
            )
            for e in esc
        ]
        + [
            (
                topics.receipts,
                e["escalation_id"].encode(),
                codec.encode("receipt", receipt_record(e, f"CN-{e['city']}", now + 1000)),
            )
            for e in esc
        ]
        + [
            bureau(wuhu, "ACCEPTED", 2),
            bureau(wuhu, "ACCEPTED", 3),  # the bureau repeats its callback
            bureau(wuhu, "NEGOTIATION", 4),
            bureau(hefei, "RETURNED", 2, return_reason="NOT_JURISDICTION"),
            bureau(hefei, "NEGOTIATION", 3),  # impossible after RETURNED
        ],
    )
    intake = CaseIntake(settings, codec, metrics, Watchdog(60))
    with running(intake), running(_keeper(settings, codec, metrics, "0")) as keeper:
        assert isinstance(keeper, CaseKeeper)

        def settled() -> bool:
            w = keeper.state_of(wuhu["escalation_id"])
            h = keeper.state_of(hefei["escalation_id"])
            return bool(w and h and w["version"] == 4 and h["version"] == 3 and w["complaint_id"])

        wait_for(settled, 90, "both cases' updates applied")
    states = latest_states(codec, topic_factory.bootstrap, topics.case_state)
    w, h = states[wuhu["escalation_id"]], states[hefei["escalation_id"]]
    assert w["state"] == "NEGOTIATION" and w["case_number"] == "CN-wuhu"
    assert [t["state"] for t in w["transitions"]] == [
        "ESCALATED",
        "RECEIVED",
        "ACCEPTED",
        "NEGOTIATION",
    ]
    assert h["state"] == "RETURNED" and h["return_reason"] == "NOT_JURISDICTION"
    assert {d["limit"] for d in w["deadlines"]} == {"ACCEPTANCE", "NEGOTIATION"}
    # the updates topic holds each state change once (the repeat and the refusal are not
    # there), and no personal data
    applied = records_of(topic_factory.bootstrap, topics.case_updates)
    changes = [
        (
            codec.decode_as("case_update", r.value)["escalation_id"],
            codec.decode_as("case_update", r.value)["state"],
        )
        for r in applied
    ]
    assert sorted(changes) == sorted(
        [(wuhu["escalation_id"], s) for s in ("ESCALATED", "RECEIVED", "ACCEPTED", "NEGOTIATION")]
        + [(hefei["escalation_id"], s) for s in ("ESCALATED", "RECEIVED", "RETURNED")]
    )
    for record in applied:
        assert b"13812345678" not in (record.value or b"")
        assert "张三".encode() not in (record.value or b"")
    (dead,) = records_of(topic_factory.bootstrap, topics.dlq_cases)
    assert header(dead, "gc-dlq-reason") == "impossible_transition"
    assert header(dead, "gc-dlq-stage") == "cases"
    assert codec.decode_as("case_update", dead.value)["state"] == "NEGOTIATION"
    reg = metrics.registry
    assert (
        reg.get_sample_value(
            "greenchannel_case_updates_total", {"city": "wuhu", "outcome": "duplicate"}
        )
        == 1.0
    )
    assert (
        reg.get_sample_value(
            "greenchannel_case_dead_letters_total",
            {"city": "hefei", "reason": "impossible_transition"},
        )
        == 1.0
    )

    # A new keeper incarnation restores the states from the compacted topic: a repeat of an
    # applied state stays a duplicate, the next transition continues the history.
    publish(
        settings, [bureau(wuhu, "NEGOTIATION", 5), bureau(wuhu, "CLOSED", 6, closure="SETTLED")]
    )
    with running(_keeper(settings, codec, metrics, "1")) as keeper:
        assert isinstance(keeper, CaseKeeper)
        wait_for(
            lambda: (keeper.state_of(wuhu["escalation_id"]) or {}).get("state") == "CLOSED",
            90,
            "the restarted keeper closing the case",
        )
        closed = keeper.state_of(wuhu["escalation_id"])
    assert closed is not None and closed["version"] == 5
    assert [t["state"] for t in closed["transitions"]][-2:] == ["NEGOTIATION", "CLOSED"]
    final = latest_states(codec, topic_factory.bootstrap, topics.case_state)
    assert final[wuhu["escalation_id"]]["closure"] == "SETTLED"
