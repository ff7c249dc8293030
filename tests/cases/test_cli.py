"""``greenchannel cases show | list`` against the state topic on the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.avro.codec import Codec
from gateway.cases.deadlines import calendar_from, rules_from
from gateway.cases.machine import Applied, apply
from gateway.cases.updates import bureau_update, from_escalation
from gateway.cli import cli
from gateway.config import Settings
from tests.cases.kit import HOUR, escalation_record, publish
from tests.conftest import TopicFactory
from tests.helpers import write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
DAY = 24 * HOUR


def _case(
    settings: Settings,
    complaint: str,
    city: str,
    code: str,
    steps: list[tuple[str, int, dict[str, Any]]],
    now: int,
) -> dict[str, Any]:
    rules = rules_from(settings.cases, calendar_from(settings.cases))
    esc = escalation_record(complaint, city, code, now - 30 * DAY)
    esc["created_at"] = now - 30 * DAY
    state = None
    updates = [from_escalation(esc, now)] + [
        bureau_update(
            escalation_id=esc["escalation_id"], city=city, state=name,
            occurred_at_ms=now + offset, observed_at_ms=now, source="CALLBACK", **extra,
        )
        for name, offset, extra in steps
    ]  # fmt: skip
    for update in updates:
        verdict = apply(state, update, rules, now)
        assert isinstance(verdict, Applied)
        state = verdict.state
    assert state is not None
    return state


def test_list_filters_and_show(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic_factory.create_all()
    settings = settings_factory()
    codec = Codec(settings.codec)
    now = int(time.time() * 1000)
    # negotiation started 30 days ago: its 10 working days are long past
    late = _case(
        settings,
        "c-late",
        "wuhu",
        "340200",
        [("ACCEPTED", -29 * DAY, {}), ("NEGOTIATION", -28 * DAY, {})],
        now,
    )
    fresh = _case(
        settings,
        "c-fresh",
        "wuhu",
        "340200",
        [("ACCEPTED", -HOUR, {}), ("NEGOTIATION", -HOUR // 2, {})],
        now,
    )
    done = _case(settings, "c-done", "hefei", "340100", [("ACCEPTED", -2 * DAY, {}), ("CLOSED", -DAY, {"closure": "SETTLED"})], now)  # fmt: skip
    topic = topic_factory.topics.case_state
    publish(
        settings,
        [
            (topic, s["escalation_id"].encode(), codec.encode("case_state", s))
            for s in (late, fresh, done)
        ],
    )
    cfg = write_config(
        tmp_path / "gc.yaml",
        {"kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers}, "topics": {"prefix": settings.topics.prefix}},
    )  # fmt: skip

    def run(*args: str) -> str:
        result = CliRunner().invoke(
            cli, ["--config", str(cfg), "cases", *args], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result.stdout

    everything = run("list")
    assert all(s["escalation_id"] in everything for s in (late, fresh, done))
    overdue = run("list", "--overdue")
    assert late["escalation_id"] in overdue and fresh["escalation_id"] not in overdue
    assert "OVERDUE" in overdue
    wuhu = run("list", "--city", "wuhu", "--state", "negotiation")
    assert done["escalation_id"] not in wuhu and fresh["escalation_id"] in wuhu
    soon = run("list", "--due-within", "20")
    assert fresh["escalation_id"] in soon and late["escalation_id"] not in soon
    shown = run("show", done["escalation_id"])
    assert "CLOSED (SETTLED)" in shown and "acceptance" not in shown.lower().split("deadlines:")[0]
    assert "ESCALATED" in shown and "CALLBACK" in shown
    missing = CliRunner().invoke(cli, ["--config", str(cfg), "cases", "show", "nope"])
    assert missing.exit_code == 1
