"""What a delivery engine delivers: a *flow* is a value, the engine and its lanes are shared.

The engine (:mod:`gateway.delivery.engine`) consumes one input topic per city, so pausing a
city's partitions holds back that city only. Two flows use it:

* **escalations** (:func:`escalations`): ``{p}escalations.<city>.v1`` -> the bureau's 12315
  complaint interface -> a ``DeliveryReceipt`` on ``{p}receipts.v1`` (key = complaint id) or a
  dead letter on ``{p}dlq.escalations.v1``;
* **handling results** (:func:`gateway.cases.results.results_flow`):
  ``{p}results.<city>.v1`` -> the bureau's result interface -> ``{p}results.receipts.v1``
  (key = escalation id) or ``{p}dlq.results.v1``.

A :class:`RecordKind` holds what differs between them: how a record is decoded, how its receipt is
keyed, which moment its latency counts from, which fields are personal data to mask in a dead
letter's answer excerpt, and which metrics a final outcome feeds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.avro.codec import Kind as SchemaName
from gateway.delivery.convert import to_escalation
from gateway.kafka.clients import Headers
from gateway.ops.observer import Observer
from gateway.sdk import Escalation
from gateway.topics import Topics


class RecordKind(Protocol):
    """The record type one flow delivers (an escalation, a handling result)."""

    schema: SchemaName
    """The codec's name for the record's schema."""

    def item(self, record: Mapping[str, Any]) -> Any:
        """The decoded record as the connector's input (raises ``RecordError`` when invalid)."""
        ...

    def since_ms(self, item: Any) -> int:
        """The moment the delivery latency counts from."""
        ...

    def receipt_key(self, item: Any) -> tuple[bytes, Headers]:
        """Key and headers of the item's receipt."""
        ...

    def receipt_ids(self, item: Any) -> tuple[str, str]:
        """``escalation_id`` and ``complaint_id`` of the receipt."""
        ...

    def known_pii(self, item: Any) -> list[str | None]:
        """Values masked wherever the item's data could surface (dead-letter excerpts)."""
        ...

    def on_final(self, observer: Observer, city: str, accepted: bool, latency_s: float) -> None:
        """Metrics of a final outcome (written)."""
        ...


@dataclass(frozen=True, slots=True)
class Flow:
    name: str
    """Watchdog beat, liveness names (``<name>-loop``, ``-commit``, ``-workers``), lag label."""
    group_id: str
    topic: Callable[[str], str]
    """A city's input topic."""
    city_of: Callable[[str], str]
    """The city of an input topic (``ValueError`` for any other topic)."""
    receipts: str
    dead_letters: str
    dead_letter_stage: str
    """``gc-dlq-stage`` of its dead letters."""
    kind: RecordKind
    city_gauges: bool = True
    """Whether its pauses and oldest-record ages feed the per-city gauges (one flow may)."""

    def liveness(self, part: str) -> str:
        return f"{self.name}-{part}"


class EscalationKind:
    schema: SchemaName = "escalation"

    def item(self, record: Mapping[str, Any]) -> Escalation:
        return to_escalation(record)

    def since_ms(self, item: Escalation) -> int:
        return item.created_at_ms

    def receipt_key(self, item: Escalation) -> tuple[bytes, Headers]:
        headers = [
            ("gc-city", item.city.encode()),
            ("gc-escalation-id", item.escalation_id.encode()),
        ]
        return item.complaint_id.encode(), headers

    def receipt_ids(self, item: Escalation) -> tuple[str, str]:
        return item.escalation_id, item.complaint_id

    def known_pii(self, item: Escalation) -> list[str | None]:
        c = item.consumer
        return [c.name, c.phone, c.id_number, c.address, c.email]

    def on_final(self, observer: Observer, city: str, accepted: bool, latency_s: float) -> None:
        if accepted:
            observer.on_delivered(city, latency_s)


def escalations(prefix: str, group_id: str) -> Flow:
    topics = Topics(prefix)
    return Flow(
        name="deliver",
        group_id=group_id,
        topic=topics.escalations,
        city_of=topics.city_of,
        receipts=topics.receipts,
        dead_letters=topics.dlq_escalations,
        dead_letter_stage="delivery",
        kind=EscalationKind(),
    )
