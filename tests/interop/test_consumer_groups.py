"""Lag reaches 0 across transaction markers and aborted batches, as Kafka's own tool sees it.

Both consumer groups read transactional topics: the deliverer reads escalations (the router
writes them in transactions), the router reads complaints an upstream may write in
transactions. Committing ``last record + 1`` leaves the commit marker after the last record as
lag 1 on every partition, forever; committing the consumer's position does not.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP
from prometheus_client import CollectorRegistry

from gateway.app import App
from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.samples import SampleFactory
from gateway.kafka.clients import Producer
from gateway.ops.metrics import Metrics
from gateway.topics import Topics
from tests.conftest import TopicFactory
from tests.integration.delivery_kit import (
    Deliverer,
    EscalationStream,
    accepted_ids,
    delivery_settings,
    wait_until,
)
from tests.interop.conftest import JavaTools

CITIES = ["beijing", "hefei", "wuhu"]


def committed_everything(settings: Settings, group: str, topics: list[str]) -> bool:
    """Whether the group's committed offsets equal the end offsets of every partition."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
    )
    try:
        tps = [KTP(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(tps)
        return all((consumer.committed(tp) or 0) == ends[tp] for tp in tps)
    finally:
        consumer.close()


def assert_lag_zero(rows: list[dict[str, str]], topics: list[str]) -> None:
    seen = {(r["TOPIC"], r["PARTITION"]) for r in rows}
    assert {t for t, _ in seen} == set(topics), rows
    lagging = [r for r in rows if r["LAG"] != "0"]
    assert not lagging, f"kafka-consumer-groups shows lag: {lagging}"


def transactional_producer(settings: Settings) -> Producer:
    producer = Producer(settings.kafka, transactional_id=f"upstream-{uuid.uuid4().hex[:8]}")
    producer.init_transactions()
    return producer


@pytest.fixture
def escalations_written_in_transactions(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    sim: BureauSimulator,
    tls_dir: Path,
) -> Iterator[tuple[Settings, int]]:
    """12 escalations per city in committed transactions, plus one aborted transaction."""
    topic_factory.create_all(CITIES)
    settings = delivery_settings(settings_factory, sim, tls_dir, topic_factory.prefix)
    stream = EscalationStream(settings)
    producer = transactional_producer(settings)
    codec = Codec(settings.codec)
    try:
        committed = 0
        for round_ in range(4):
            producer.begin()
            for city in CITIES * 3:
                esc = stream.escalation(city)
                value = codec.encode("escalation", esc)
                producer.send(
                    stream.topics.escalations(city), value, key=esc["complaint_id"].encode()
                )
            if round_ == 2:
                producer.abort()  # an aborted batch in the middle: skipped, never delivered
            else:
                producer.commit()
                committed += 9
        yield settings, committed
    finally:
        producer.close()
        stream.close()


def test_deliver_group_lag_is_zero_after_transactional_input(
    escalations_written_in_transactions: tuple[Settings, int],
    sim: BureauSimulator,
    java_tools: JavaTools,
) -> None:
    settings, expected = escalations_written_in_transactions
    group = settings.delivery.group_id
    topics = [Topics(settings.topics.prefix).escalations(c) for c in CITIES]
    with Deliverer(settings) as deliverer:
        assert wait_until(lambda: sum(len(accepted_ids(sim, c)) for c in CITIES) >= expected, 90), (
            "escalations not delivered"
        )
        # the commit follows the next poll; the position scan runs at least once a second
        settled = wait_until(lambda: committed_everything(settings, group, topics), 20)
        lag = {
            s.labels["topic"]: s.value
            for family in deliverer.registry.collect()
            for s in family.samples
            if s.name == "greenchannel_consumer_lag" and s.labels.get("component") == "deliver"
        }
    assert sum(len(accepted_ids(sim, c)) for c in CITIES) == expected
    rows = java_tools.describe_group(group)
    print("\n".join(" ".join(r.values()) for r in rows))
    assert_lag_zero(rows, topics)
    assert settled
    assert lag == dict.fromkeys(topics, 0.0), lag


def test_router_group_lag_is_zero_after_transactional_upstream(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    java_tools: JavaTools,
) -> None:
    topic_factory.create_all(CITIES)
    settings = settings_factory(
        router={
            "group_id": f"{topic_factory.prefix}router",
            "transactional_id_prefix": f"{topic_factory.prefix}router",
            "green_cities": CITIES,
        },
    )
    codec = Codec(settings.codec)
    factory = SampleFactory(seed=7)
    producer = transactional_producer(settings)
    topic = topic_factory.topics.complaints
    try:
        for round_ in range(3):
            producer.begin()
            for sample in factory.complaints(40):
                value = codec.encode("complaint", sample.record, topic)
                producer.send(topic, value, key=sample.record["complaint_id"].encode())
            if round_ == 1:
                producer.abort()
            else:
                producer.commit()
    finally:
        producer.close()
    registry = CollectorRegistry()
    app = App(settings, route=True, deliver=False, metrics=Metrics(registry))
    thread = threading.Thread(target=app.run, kwargs={"with_ops": False}, daemon=True)
    thread.start()
    try:
        settled = wait_until(
            lambda: committed_everything(settings, settings.router.group_id, [topic]), 60
        )
        lag = registry.get_sample_value(
            "greenchannel_consumer_lag", {"component": "router", "topic": topic}
        )
    finally:
        app.stop.set()
        thread.join(30)
    rows = java_tools.describe_group(settings.router.group_id)
    print("\n".join(" ".join(r.values()) for r in rows))
    assert_lag_zero(rows, [topic])
    assert settled
    assert lag == 0.0
