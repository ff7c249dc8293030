"""Every Kafka topic the gateway uses, named in one place.

=====================================  ==========  ===========  ==========================================
topic                                  partitions  retention    role
=====================================  ==========  ===========  ==========================================
``{p}complaints.v1``                   12          7 days       input: upstream systems publish Complaints
``{p}dept.consumer-protection.v1``     6           30 days      major complaints (+ routing headers)
``{p}dept.customer-service.v1``        6           30 days      general complaints
``{p}callcenter.<desk>.v1``            3           30 days      one per call-center desk (6 desks)
``{p}escalations.<city>.v1``           3           30 days      one per green-channel city: Escalations
``{p}receipts.v1``                     6           90 days      DeliveryReceipts (bureau case numbers)
``{p}dlq.complaints.v1``               3           90 days      complaints the router could not process
``{p}dlq.escalations.v1``              3           90 days      escalations a bureau rejected permanently
``{p}schemas.v1``                      1           compacted    writer schemas upstream registered
``{p}cases.inbound.v1``                6           7 days       CaseUpdates as they arrive (may repeat)
``{p}cases.updates.v1``                6           90 days      CaseUpdates applied: one per state change
``{p}cases.cursors.v1``                1           compacted    poll cursor per polled city (key = city)
``{p}cases.state.v1``                  6           compacted    CaseState per case (key = escalation id)
``{p}dlq.cases.v1``                    3           90 days      case updates the state machine refused
``{p}results.v1``                      6           30 days      HandlingResults to report to the bureaus
``{p}results.<city>.v1``               3           30 days      the same, split by city (delivery input)
``{p}results.receipts.v1``             6           90 days      DeliveryReceipts of reported results
``{p}dlq.results.v1``                  3           90 days      results a bureau rejected permanently
=====================================  ==========  ===========  ==========================================

``{p}`` is the configurable prefix (default ``gc.``). The record topics use
``cleanup.policy=delete``; their keys are the complaint id, so one complaint's records stay
ordered in one partition, except on the case topics, keyed by escalation id. The case inbound,
updates and state topics must have the same number of partitions: the keeper writes a case's
state to the partition number its updates come from. The compacted topics
(``cleanup.policy=compact``: the latest record per key is kept, never deleted by age) are the
schema store (:mod:`gateway.avro.store`, as Confluent's registry keeps ``_schemas``: key = the
writer schema's fingerprint as Avro tools print it, value = the schema's JSON), the case state
and the poll cursors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DAY_MS = 24 * 3600 * 1000
CASE_PARTITIONS = 6
"""Partitions of the case updates and the case state topics (the same for both)."""


class Department(StrEnum):
    CONSUMER_PROTECTION = "consumer-protection"
    CUSTOMER_SERVICE = "customer-service"
    CALL_CENTER = "call-center"


class Desk(StrEnum):
    """Call-center desks."""

    INTEGRATED = "integrated"
    COSMETICS = "cosmetics"
    REFUNDS = "refunds"
    LOGISTICS = "logistics"
    COOPERATION = "cooperation"
    HOTEL = "hotel"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    role: str
    cleanup_policy: str = "delete"
    """``compact``: the latest record per key is kept forever (``retention_ms``, when positive,
    then bounds how long a deleted key's tombstone stays)."""

    @property
    def compacted(self) -> bool:
        return self.cleanup_policy == "compact"

    @property
    def configs(self) -> dict[str, str]:
        if self.compacted:
            configs = {"cleanup.policy": "compact", "retention.ms": "-1"}
            if self.retention_ms > 0:
                configs["delete.retention.ms"] = str(self.retention_ms)
            return configs
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names for a prefix; ``Topics("gc.")`` gives the defaults."""

    prefix: str = "gc."

    @property
    def complaints(self) -> str:
        return f"{self.prefix}complaints.v1"

    def department(self, dept: Department) -> str:
        if dept is Department.CALL_CENTER:
            raise ValueError("the call center has one topic per desk: use desk()")
        return f"{self.prefix}dept.{dept.value}.v1"

    def desk(self, desk: Desk) -> str:
        return f"{self.prefix}callcenter.{desk.value}.v1"

    def escalations(self, city: str) -> str:
        return f"{self.prefix}escalations.{city}.v1"

    def city_of(self, escalation_topic: str) -> str:
        return self._city_in(escalation_topic, "escalations", "an escalation topic")

    def _city_in(self, topic: str, kind: str, what: str) -> str:
        """The ``<city>`` of ``{prefix}<kind>.<city>.v1`` (one dotless name), else ValueError."""
        head = f"{self.prefix}{kind}."
        city = topic[len(head) : -len(".v1")] if topic.startswith(head) else ""
        if not topic.endswith(".v1") or not city or "." in city:
            raise ValueError(f"not {what}: {topic}")
        return city

    @property
    def receipts(self) -> str:
        return f"{self.prefix}receipts.v1"

    @property
    def dlq_complaints(self) -> str:
        return f"{self.prefix}dlq.complaints.v1"

    @property
    def dlq_escalations(self) -> str:
        return f"{self.prefix}dlq.escalations.v1"

    @property
    def schemas(self) -> str:
        """The schema store: writer schemas by fingerprint (compacted)."""
        return f"{self.prefix}schemas.v1"

    @property
    def case_inbound(self) -> str:
        return f"{self.prefix}cases.inbound.v1"

    @property
    def case_cursors(self) -> str:
        return f"{self.prefix}cases.cursors.v1"

    @property
    def case_updates(self) -> str:
        return f"{self.prefix}cases.updates.v1"

    @property
    def case_state(self) -> str:
        return f"{self.prefix}cases.state.v1"

    @property
    def dlq_cases(self) -> str:
        return f"{self.prefix}dlq.cases.v1"

    @property
    def results(self) -> str:
        return f"{self.prefix}results.v1"

    def results_for(self, city: str) -> str:
        """One city's handling results, split from :attr:`results` by the result splitter."""
        return f"{self.prefix}results.{city}.v1"

    def city_of_results(self, topic: str) -> str:
        city = self._city_in(topic, "results", "a city's results topic")
        if topic == self.result_receipts:
            raise ValueError(f"not a city's results topic: {topic}")
        return city

    @property
    def result_receipts(self) -> str:
        return f"{self.prefix}results.receipts.v1"

    @property
    def dlq_results(self) -> str:
        return f"{self.prefix}dlq.results.v1"

    def all(self, cities: list[str]) -> list[TopicSpec]:
        """Every topic with its partitions and retention, for ``topics init``."""
        specs = [
            TopicSpec(self.complaints, 12, 7 * DAY_MS, "input complaints"),
            TopicSpec(
                self.department(Department.CONSUMER_PROTECTION), 6, 30 * DAY_MS, "major complaints"
            ),
            TopicSpec(
                self.department(Department.CUSTOMER_SERVICE), 6, 30 * DAY_MS, "general complaints"
            ),
        ]
        specs += [
            TopicSpec(self.desk(d), 3, 30 * DAY_MS, f"call-center desk {d.value}") for d in Desk
        ]
        specs += [
            TopicSpec(self.escalations(c), 3, 30 * DAY_MS, f"escalations to {c}") for c in cities
        ]
        specs += [
            TopicSpec(self.receipts, 6, 90 * DAY_MS, "delivery receipts"),
            TopicSpec(self.dlq_complaints, 3, 90 * DAY_MS, "dead-lettered complaints"),
            TopicSpec(self.dlq_escalations, 3, 90 * DAY_MS, "dead-lettered escalations"),
            TopicSpec(self.schemas, 1, -1, "writer schemas (compacted)", cleanup_policy="compact"),
            TopicSpec(
                self.case_inbound, CASE_PARTITIONS, 7 * DAY_MS, "case updates as they arrive"
            ),
            TopicSpec(self.case_updates, CASE_PARTITIONS, 90 * DAY_MS, "case updates applied"),
            TopicSpec(self.case_cursors, 1, DAY_MS, "poll cursors", cleanup_policy="compact"),
            TopicSpec(
                self.case_state, CASE_PARTITIONS, DAY_MS, "case state", cleanup_policy="compact"
            ),
            TopicSpec(self.dlq_cases, 3, 90 * DAY_MS, "dead-lettered case updates"),
            TopicSpec(self.results, 6, 30 * DAY_MS, "handling results"),
        ]
        specs += [
            TopicSpec(self.results_for(c), 3, 30 * DAY_MS, f"handling results to {c}")
            for c in cities
        ]
        specs += [
            TopicSpec(self.result_receipts, 6, 90 * DAY_MS, "handling result receipts"),
            TopicSpec(self.dlq_results, 3, 90 * DAY_MS, "dead-lettered handling results"),
        ]
        return specs
