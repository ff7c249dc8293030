"""What the router hostile tests share: a router running in this process against the real broker,
a publisher that remembers where each hostile record landed, and an incremental reader that
finds each record's one outcome (routed to a department topic, or dead-lettered)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.app import App
from gateway.avro.codec import Codec
from gateway.config import KafkaSettings, Settings
from gateway.dev.samples import SampleFactory
from gateway.kafka.clients import Consumer, Producer, Record
from gateway.ops.metrics import Metrics
from gateway.topics import Department, Desk, Topics

TAG = "hostile-id"
"""Input header naming each published record; department outputs copy it, dead letters keep it
(or, when bounded, keep the source coordinates)."""


def router_settings(
    settings_factory: Callable[..., Settings], prefix: str, **extra: Any
) -> Settings:
    router = {"group_id": f"{prefix}router", "transactional_id_prefix": f"{prefix}tx"}
    return settings_factory(router=router | extra.pop("router", {}), **extra)


def department_topics(t: Topics) -> list[str]:
    return [
        t.department(Department.CONSUMER_PROTECTION),
        t.department(Department.CUSTOMER_SERVICE),
        *(t.desk(d) for d in Desk),
    ]


class RouterRun:
    """``App(route=True)`` on a thread; ``code`` is its exit code once it returned."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.app = App(settings, route=True, deliver=False, metrics=Metrics(self.registry))
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.app.run(shutdown_timeout_s=10, with_ops=False)

    def __enter__(self) -> RouterRun:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.stop.set()
        self.thread.join(40)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def wait_exit(self, timeout_s: float) -> int | None:
        self.thread.join(timeout_s)
        return self.code


@dataclass
class Sent:
    tag: str
    partition: int
    offset: int


class Publisher:
    """Sends records to the complaints topic, each tagged, and waits for the broker's ack."""

    def __init__(self, settings: Settings) -> None:
        self.producer = Producer(settings.kafka)
        self.topic = Topics(settings.topics.prefix).complaints
        self.sent: dict[str, Sent] = {}

    def send(
        self,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
        tag: str | None = None,
    ) -> str:
        tag = tag or uuid.uuid4().hex[:12]
        future = self.producer.send(
            self.topic,
            value,  # type: ignore[arg-type]  # None: a tombstone
            key=key if key is not None else tag.encode(),
            headers=[(TAG, tag.encode()), *headers],
        )
        meta = future.get(timeout=60)
        self.sent[tag] = Sent(tag, meta.partition, meta.offset)
        return tag

    def valid(self, codec: Codec, n: int, seed: int = 1) -> list[str]:
        """``n`` valid complaints (received now), sent together; returns their tags."""
        start = int(time.time() * 1000) - 3_600_000
        samples = SampleFactory(seed=seed, start_ms=start, interval_ms=10).complaints(n)
        pending = []
        for s in samples:
            tag = uuid.uuid4().hex[:12]
            value = codec.encode("complaint", s.record, self.topic)
            future = self.producer.send(
                self.topic, value, key=tag.encode(), headers=[(TAG, tag.encode())]
            )
            pending.append((tag, future))
        for tag, future in pending:
            meta = future.get(timeout=60)
            self.sent[tag] = Sent(tag, meta.partition, meta.offset)
        return [tag for tag, _ in pending]

    def close(self) -> None:
        self.producer.close()


@dataclass
class Outcomes:
    """Every output record seen so far, by the tag of the input it came from."""

    routed: dict[str, list[Record]] = field(default_factory=dict)
    dead: dict[str, list[Record]] = field(default_factory=dict)

    def of(self, tag: str) -> list[Record]:
        return self.routed.get(tag, []) + self.dead.get(tag, [])


class OutputReader:
    """Reads the department and dead-letter topics (read_committed) incrementally."""

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        t = Topics(settings.topics.prefix)
        self.dlq = t.dlq_complaints
        self.publisher = publisher
        self.consumer = Consumer(
            KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers),
            group_id=f"hostile-reader-{uuid.uuid4().hex[:8]}",
            topics=[*department_topics(t), self.dlq],
            max_poll_records=5000,
        )
        self.outcomes = Outcomes()
        self._by_coords: dict[tuple[int, int], str] = {}

    def _tag(self, record: Record) -> str | None:
        value = record.header(TAG)
        if value is not None:
            return value.decode()
        if record.topic == self.dlq:  # a bounded dead letter: original headers dropped
            partition = record.header("gc-dlq-source-partition")
            offset = record.header("gc-dlq-source-offset")
            if partition is not None and offset is not None:
                if not self._by_coords or len(self._by_coords) < len(self.publisher.sent):
                    self._by_coords = {
                        (s.partition, s.offset): s.tag for s in self.publisher.sent.values()
                    }
                return self._by_coords.get((int(partition), int(offset)))
        return None

    def poll(self) -> None:
        for record in self.consumer.poll(200):
            tag = self._tag(record)
            if tag is None:
                continue
            bucket = self.outcomes.dead if record.topic == self.dlq else self.outcomes.routed
            bucket.setdefault(tag, []).append(record)

    def wait_for(self, tags: Iterable[str], timeout_s: float) -> float:
        """Poll until every tag has an outcome; returns the seconds it took (AssertionError on
        timeout, naming how many are missing)."""
        wanted = list(tags)
        started = time.monotonic()
        while True:
            self.poll()
            missing = [t for t in wanted if not self.outcomes.of(t)]
            if not missing:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"{len(missing)} of {len(wanted)} records have no outcome")

    def linger(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.poll()

    def close(self) -> None:
        self.consumer.close()
