"""The case keeper: applies CaseUpdates to each case's state, exactly once, through the machine.

Consumes ``{prefix}cases.inbound.v1`` (keyed by escalation id: the intake's facts, the bureaus'
callbacks and polls, repeats included) and, for each update it applies, writes the update to
``{prefix}cases.updates.v1`` (so that topic holds exactly one record per state change) and the
new state to the compacted ``{prefix}cases.state.v1`` — same key, so the same partition number
(the three topics have ``CASE_PARTITIONS`` partitions and the same key partitioner). States
live in memory per assigned partition; when a partition is assigned, its states are read back
from the state topic (``read_committed``, to the end). Updates the machine refuses are
dead-lettered to ``{prefix}dlq.cases.v1`` with the reason (``out_of_order``,
``impossible_transition``...) and never applied; repeats are dropped and counted.

State, dead letters and consumed offsets commit in one transaction per batch: a crash between
two batches re-reads the uncommitted batch, whose state writes were aborted with it, so no
update is lost or applied twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.avro.codec import Codec
from gateway.cases.deadlines import DeadlineRules
from gateway.cases.loop import TransactionalLoop
from gateway.cases.machine import Applied, Duplicate, Refused, apply
from gateway.cases.sla import figures
from gateway.config import Settings
from gateway.errors import DecodeError, RecordError
from gateway.kafka.append import Outgoing
from gateway.kafka.clients import Record, TopicPartition
from gateway.kafka.reader import read_partitions
from gateway.ops.observer import Observer
from gateway.ops.watchdog import Watchdog

log = logging.getLogger(__name__)


class CaseKeeper(TransactionalLoop):
    name = "cases-keeper"

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        rules: DeadlineRules,
        observer: Observer,
        watchdog: Watchdog,
        *,
        instance_id: str = "0",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rules = rules
        self.states: dict[int, dict[str, dict[str, Any]]] = {}
        """partition -> escalation id -> committed state."""
        self._pending: dict[int, dict[str, dict[str, Any]]] = {}
        self._counts: list[tuple[str, str, str]] = []
        super().__init__(
            settings,
            codec,
            observer,
            watchdog,
            group_id=settings.cases.keeper_group_id,
            instance_id=instance_id,
            clock=clock,
            on_assigned=self._restore,
            on_revoked=self._forget,
        )
        observer.watch_cases(lambda: figures(self.all_states(), self.now_ms(), self.rules.calendar))

    def input_topics(self) -> list[str]:
        return [self.topics.case_inbound]

    # partitions -----------------------------------------------------------------------------
    def _restore(self, tps: list[TopicPartition]) -> None:
        wanted = [TopicPartition(self.topics.case_state, tp.partition) for tp in tps]
        with self.watchdog.guard("restore_case_state"):
            records = read_partitions(self.settings.kafka, wanted)
        for tp in tps:
            self.states[tp.partition] = {}
        for record in records:
            if record.key is None:
                continue
            held = self.states.setdefault(record.partition, {})
            if not record.value:  # a tombstone: the case was deleted
                held.pop(record.key.decode(), None)
                continue
            held[record.key.decode()] = self.codec.decode_as("case_state", record.value)
        log.info(
            "cases: restored %d case states for partitions %s",
            sum(len(self.states.get(tp.partition, {})) for tp in tps),
            sorted(tp.partition for tp in tps),
        )

    def _forget(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.states.pop(tp.partition, None)

    def all_states(self) -> list[dict[str, Any]]:
        """A snapshot of every state this keeper holds (for the SLA figures)."""
        return [state for held in list(self.states.values()) for state in list(held.values())]

    def state_of(self, escalation_id: str) -> dict[str, Any] | None:
        for held in self.states.values():
            if escalation_id in held:
                return held[escalation_id]
        return None

    # the batch ------------------------------------------------------------------------------
    def output_topics(self) -> list[str]:
        return [self.topics.case_updates, self.topics.case_state, self.topics.dlq_cases]

    def outputs(self, records: list[Record]) -> list[Outgoing]:
        self._pending = {}
        self._counts = []
        now = self.now_ms()
        out: list[Outgoing] = []
        for record in records:
            out.extend(self._one(record, now))
        return out

    def _one(self, record: Record, now: int) -> list[Outgoing]:
        try:
            if not record.value:
                raise RecordError("record has no value", reason="empty")
            update = self.codec.decode_as("case_update", record.value)
        except (DecodeError, RecordError) as exc:
            return [self.dead_letter(self.topics.dlq_cases, record, exc, exc.reason, "", now)]
        eid = update["escalation_id"]
        pending = self._pending.setdefault(record.partition, {})
        state = pending.get(eid) or self.states.get(record.partition, {}).get(eid)
        verdict = apply(state, update, self.rules, now)
        city = update["city"]
        if isinstance(verdict, Duplicate):
            self._counts.append((city, "duplicate", verdict.reason))
            return []
        if isinstance(verdict, Refused):
            self._counts.append((city, "refused", verdict.reason))
            error = RecordError(verdict.message, reason=verdict.reason)
            return [
                self.dead_letter(self.topics.dlq_cases, record, error, verdict.reason, city, now)
            ]
        assert isinstance(verdict, Applied)
        pending[eid] = verdict.state
        self._counts.append((city, "applied", update["state"]))
        value = self.codec.encode("case_state", verdict.state)
        return [
            (self.topics.case_updates, eid.encode(), record.value, ()),
            (self.topics.case_state, eid.encode(), value, ()),
        ]

    def committed(self) -> None:
        for partition, changed in self._pending.items():
            self.states.setdefault(partition, {}).update(changed)
        for city, outcome, detail in self._counts:
            self.observer.on_case_update(city, outcome)
            if outcome == "refused":
                self.observer.on_case_dead_lettered(city, detail)
                log.warning("cases: update refused", extra={"city": city, "reason": detail})
        self._pending = {}
        self._counts = []

    def aborted(self) -> None:
        self._pending = {}
        self._counts = []
