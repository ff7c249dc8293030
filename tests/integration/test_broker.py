"""The local broker, topic administration and ``topics init`` against a real Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from kafka import KafkaConsumer, KafkaProducer

from gateway.cli import cli
from gateway.config import KafkaSettings, Settings
from gateway.dev.broker import LocalBroker, free_ports
from gateway.errors import ConfigError, KafkaUnavailable
from gateway.kafka.admin import Admin
from gateway.topics import DAY_MS, Topics, TopicSpec
from tests.conftest import TopicFactory

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, count: int) -> set[bytes]:
    """Send ``count`` keyed records with acks=all and wait for every acknowledgement."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    values = {f"record-{i:05d}".encode() for i in range(count)}
    try:
        futures = [producer.send(topic, key=v[-3:], value=v) for v in sorted(values)]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)
    return values


def consume(bootstrap: str, topic: str, expect: int, timeout_s: float = 60.0) -> list[bytes]:
    """Read ``topic`` from the beginning until ``expect`` records arrived (or the timeout)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}.reader",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(r.value for r in records)
    finally:
        consumer.close()
    return out


@pytest.mark.slow
def test_restart_keeps_acknowledged_data(
    local_broker: LocalBroker, topic_factory: TopicFactory
) -> None:
    (topic,) = topic_factory.create("restart", partitions=3)
    sent = produce(local_broker.bootstrap, topic, 1000)
    old_pid = local_broker.pid

    local_broker.restart()

    assert local_broker.pid not in (None, old_pid)
    received = consume(local_broker.bootstrap, topic, 1000)
    assert len(received) == 1000
    assert set(received) == sent


@pytest.mark.slow
def test_sigkill_keeps_acknowledged_data(
    local_broker: LocalBroker, topic_factory: TopicFactory
) -> None:
    (topic,) = topic_factory.create("crash", partitions=3)
    sent = produce(local_broker.bootstrap, topic, 1000)

    local_broker.kill()
    assert not local_broker.is_running()
    local_broker.start()

    received = consume(local_broker.bootstrap, topic, 1000)
    assert sorted(received) == sorted(sent)


def test_frozen_broker_times_out_then_recovers(
    local_broker: LocalBroker, topic_factory: TopicFactory
) -> None:
    topic_factory.create("frozen")
    local_broker.freeze()
    try:
        with (
            pytest.raises(KafkaUnavailable),
            Admin(
                KafkaSettings(bootstrap_servers=local_broker.bootstrap, request_timeout_ms=2000)
            ) as admin,
        ):
            admin.wait_ready(2.0)
            admin.list_topics()
    finally:
        local_broker.thaw()
    with Admin(topic_factory.kafka_settings()) as admin:
        admin.wait_ready(30)
        assert topic_factory.name("frozen") in admin.list_topics()


def _write_config(path: Path, settings: Settings) -> Path:
    config = {
        "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
        "topics": {"prefix": settings.topics.prefix},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_topics_init_creates_every_topic_with_its_spec(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    config = _write_config(tmp_path / "config.yaml", settings)
    specs = Topics(settings.topics.prefix).all(settings.router.green_cities)

    first = CliRunner().invoke(cli, ["--config", str(config), "topics", "init"])
    assert first.exit_code == 0, first.output
    assert f"{len(specs)} created, 0 already existed" in first.output

    with Admin(settings.kafka) as admin:
        infos = {i.name: i for i in admin.describe_topics([s.name for s in specs])}
    # + schema store, case and result topics, and the results split by city
    assert len(specs) == 3 + 6 + 10 + 3 + 1 + 8 + 10
    for spec in specs:
        info = infos[spec.name]
        assert info.partitions == spec.partitions, spec.name
        if spec.compacted:  # the case state and the poll cursors
            assert info.configs["cleanup.policy"] == "compact", spec.name
            continue
        assert info.retention_ms == spec.retention_ms, spec.name
        assert info.configs["cleanup.policy"] == spec.cleanup_policy
    assert infos[settings.topics.prefix + "complaints.v1"].retention_ms == 7 * DAY_MS

    again = CliRunner().invoke(cli, ["--config", str(config), "topics", "init"])
    assert again.exit_code == 0, again.output
    assert f"0 created, {len(specs)} already existed" in again.output

    listing = CliRunner().invoke(cli, ["--config", str(config), "topics", "list"])
    assert listing.exit_code == 0, listing.output
    assert len(listing.output.splitlines()) == len(specs)


def test_admin_create_and_delete_are_idempotent(topic_factory: TopicFactory) -> None:
    specs = [
        TopicSpec(topic_factory.name("a"), 2, DAY_MS, "test"),
        TopicSpec(topic_factory.name("b"), 4, 2 * DAY_MS, "test"),
    ]
    with Admin(topic_factory.kafka_settings()) as admin:
        first = admin.create_topics(specs)
        assert first.created == sorted(s.name for s in specs)
        assert first.existing == []

        changed = [specs[0], TopicSpec(specs[1].name, 6, DAY_MS, "test")]
        second = admin.create_topics(changed)
        assert second.created == []
        assert second.existing == sorted(s.name for s in specs)
        assert list(second.drift) == [specs[1].name]

        assert set(specs_names := [s.name for s in specs]) <= set(admin.list_topics())
        assert admin.delete_topics([*specs_names, topic_factory.name("missing")]) == specs_names
        assert admin.delete_topics(specs_names) == []


def test_admin_rejects_impossible_replication_factor(topic_factory: TopicFactory) -> None:
    spec = TopicSpec(topic_factory.name("rf3"), 1, DAY_MS, "test")
    with Admin(topic_factory.kafka_settings()) as admin, pytest.raises(ConfigError):
        admin.create_topics([spec], replication_factor=3)


def test_admin_unreachable_broker_is_kafka_unavailable() -> None:
    (port,) = free_ports(1)
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    started = time.monotonic()
    with Admin(settings) as admin, pytest.raises(KafkaUnavailable):
        admin.wait_ready(1.0)
    assert time.monotonic() - started < 5
