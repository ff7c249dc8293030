"""The case intake: escalations and delivery receipts become CaseUpdates, keyed by escalation id.

Escalation topics are keyed by complaint id and the receipts topic by escalation id across 6
partitions; the keeper needs every update of a case in one partition of one topic. The intake
re-keys them, transactionally (exactly once): an escalation becomes an ``ESCALATED`` update, an
accepted receipt a ``RECEIVED`` update (with the bureau's case number). Nothing personal is
copied. A record it cannot decode is dead-lettered to ``{prefix}dlq.cases.v1`` (stage
``cases``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.avro.codec import Codec
from gateway.cases.loop import TransactionalLoop
from gateway.cases.updates import from_escalation, from_receipt
from gateway.config import Settings
from gateway.errors import RecordError
from gateway.kafka.append import Outgoing
from gateway.kafka.clients import Record
from gateway.ops.observer import Observer
from gateway.ops.watchdog import Watchdog

log = logging.getLogger(__name__)


class CaseIntake(TransactionalLoop):
    name = "cases-intake"

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        observer: Observer,
        watchdog: Watchdog,
        *,
        instance_id: str = "0",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            settings,
            codec,
            observer,
            watchdog,
            group_id=settings.cases.intake_group_id,
            instance_id=instance_id,
            clock=clock,
        )

    def input_topics(self) -> list[str]:
        escalations = [self.topics.escalations(c) for c in self.settings.router.green_cities]
        return [*escalations, self.topics.receipts]

    def output_topics(self) -> list[str]:
        return [self.topics.case_inbound, self.topics.dlq_cases]

    def outputs(self, records: list[Record]) -> list[Outgoing]:
        out: list[Outgoing] = []
        now = self.now_ms()
        for record in records:
            try:
                update = self._update(record, now)
            except RecordError as exc:
                out.append(
                    self.dead_letter(self.topics.dlq_cases, record, exc, exc.reason, "", now)
                )
                self.observer.on_case_dead_lettered("", exc.reason)
                continue
            if update is not None:
                value = self.codec.encode("case_update", update)
                key = update["escalation_id"].encode()
                out.append((self.topics.case_inbound, key, value, ()))
        return out

    def _update(self, record: Record, now: int) -> dict[str, Any] | None:
        if not record.value:
            raise RecordError("record has no value", reason="empty")
        if record.topic == self.topics.receipts:
            return from_receipt(self.codec.decode_as("receipt", record.value), now)
        return from_escalation(self.codec.decode_as("escalation", record.value), now)
