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
=====================================  ==========  ===========  ==========================================

``{p}`` is the configurable prefix (default ``gc.``). The record topics use
``cleanup.policy=delete``; their keys are the complaint id, so one complaint's records stay
ordered in one partition. The schema store (:mod:`gateway.avro.store`) is compacted
(``cleanup.policy=compact``, never deleted by age, as Confluent's registry keeps ``_schemas``):
key = the writer schema's fingerprint as Avro tools print it, value = the schema's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DAY_MS = 24 * 3600 * 1000


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

    @property
    def configs(self) -> dict[str, str]:
        if self.cleanup_policy == "compact":
            return {"cleanup.policy": "compact", "retention.ms": "-1"}
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
        head = f"{self.prefix}escalations."
        if not (escalation_topic.startswith(head) and escalation_topic.endswith(".v1")):
            raise ValueError(f"not an escalation topic: {escalation_topic}")
        return escalation_topic[len(head) : -len(".v1")]

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
        ]
        return specs
