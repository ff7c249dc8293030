"""A receipt the broker refuses leaves kafka-python's idempotent producer in a fatal state:
the deliverer must exit 1 with a clear CRITICAL log (the supervisor restarts it), commit
nothing past the unwritten record, and the restarted deliverer must write the receipt.

Real broker, the real Beijing connector, the hostile bureau answering normally. The receipts
topic's ``max.message.bytes`` is lowered *after* the deliverer read it at start, so the engine's
own size check (which would have dead-lettered an oversized receipt) does not see it coming:
the broker refuses the receipt with ``MessageSizeTooLarge``. Before the fix the write was
retried forever (the producer failing every later send) while the process kept running.
"""

from __future__ import annotations

import logging

import pytest

from gateway.kafka.admin import Admin
from gateway.topics import Topics
from tests.helpers import set_max_message_bytes
from tests.hostile import answers_kit as kit
from tests.hostile.answers_kit import Publisher

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_a_receipt_refused_by_the_broker_exits_1_and_is_written_after_the_restart(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with kit.live(kafka_bootstrap) as live:
        topics = Topics(live.settings.topics.prefix)
        d = live.deliverer
        engine = d.app.engine
        assert engine is not None
        assert engine.ready.wait(60), "the deliverer got no partitions"
        set_max_message_bytes(kafka_bootstrap, topics.receipts, 120)

        publisher = Publisher(live.settings)
        esc = publisher.escalation("beijing")
        esc_id = publisher.publish(esc)
        publisher.close()

        assert kit.wait_until(lambda: d.exit_code is not None, 90), (
            "the deliverer kept retrying a write its producer can never make"
        )
        assert d.exit_code == 1
        state = engine.producer.fatal_state()
        assert state is not None and "MessageSizeTooLarge" in state
        critical = [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL]
        assert any("receipt write" in m and "failed fatally" in m for m in critical), critical
        assert live.bureau.opened.count(esc_id) == 1
        assert kit.read_outcomes(live.settings, 0, timeout_s=3).receipts.get(esc_id) is None
        with Admin(live.settings.kafka) as admin:
            committed = admin.group_offsets(live.settings.delivery.group_id)
        topic = topics.escalations("beijing")
        assert all(o == 0 for (t, _), o in committed.items() if t == topic), committed

        # the supervisor's restart, once the topic takes receipts again: nothing was lost
        set_max_message_bytes(kafka_bootstrap, topics.receipts, 1_000_000)
        with kit.deliverer(live.settings) as again:
            out = kit.read_outcomes(live.settings, 1, timeout_s=60)
            assert [r["outcome"] for r in out.receipts.get(esc_id, [])] == ["ACCEPTED"]
            assert out.receipts[esc_id][0]["case_number"] == live.bureau.cases[esc_id]
            assert live.bureau.opened.count(esc_id) == 1
            assert again.exit_code is None
