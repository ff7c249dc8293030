"""Upstream schema evolution end to end: a writer schema registered while the router runs.

The evolved writer makes the three textbook compatible changes at once: a new optional field,
a removed field the reader has a default for (``consumer.email``) and a new enum symbol the
reader maps to its enum default (``Channel.DOUYIN`` -> ``OTHER``). Before the schema store,
every such complaint was dead-lettered as ``unknown_schema``.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from fastavro import parse_schema, schemaless_writer

from gateway.avro.codec import SINGLE_OBJECT_MAGIC, Codec, fingerprint, fingerprint_text
from gateway.avro.schemas_path import schema_text
from gateway.cli import cli
from gateway.config import Settings
from gateway.dev.samples import SampleFactory
from gateway.kafka.clients import Producer
from gateway.kafka.follow import TopicFollower
from gateway.topics import Department, Desk, Topics
from tests.conftest import TopicFactory
from tests.helpers import header, read_all, wait_until
from tests.interop.kit import running_gateway

pytestmark = pytest.mark.integration
CITIES = ["beijing", "hefei"]


def evolved_complaint() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text("complaint"))
    schema["fields"].append(
        {"name": "app_version", "type": ["null", "string"], "default": None, "doc": "new"}
    )
    for field in schema["fields"]:
        if field["name"] == "consumer":
            field["type"]["fields"] = [f for f in field["type"]["fields"] if f["name"] != "email"]
        if field["name"] == "channel":
            field["type"]["symbols"] = [*field["type"]["symbols"], "DOUYIN"]
    return schema


def encode_with(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO(SINGLE_OBJECT_MAGIC + fingerprint(schema))
    buf.seek(0, io.SEEK_END)
    schemaless_writer(buf, parse_schema(json.loads(json.dumps(schema))), record)
    return buf.getvalue()


def evolved_record(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record, app_version="7.2.0", channel="DOUYIN")
    out["consumer"] = {k: v for k, v in record["consumer"].items() if k != "email"}
    return out


def router_settings(
    settings_factory: Callable[..., Settings], prefix: str, **extra: Any
) -> Settings:
    return settings_factory(
        router={
            "group_id": f"{prefix}router",
            "transactional_id_prefix": f"{prefix}router",
            "green_cities": CITIES,
        },
        **extra,
    )


def config_file(tmp_path: Path, settings: Settings) -> Path:
    path = tmp_path / "config.yaml"
    data = {
        "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
        "topics": {"prefix": settings.topics.prefix},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def publish(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(settings.kafka, linger_ms=1)
    try:
        for key, value in values:
            producer.send(Topics(settings.topics.prefix).complaints, value, key=key)
        producer.flush(30)
    finally:
        producer.close()


def outputs(settings: Settings, expect: int) -> list[Any]:
    t = Topics(settings.topics.prefix)
    names = [
        t.department(Department.CONSUMER_PROTECTION),
        t.department(Department.CUSTOMER_SERVICE),
    ]
    names += [t.desk(d) for d in Desk]
    return read_all(settings.kafka.bootstrap_servers, names, expect=expect, idle_s=1.0)


def test_evolved_writer_registered_while_the_router_runs_is_routed(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic_factory.create_all(CITIES)
    settings = router_settings(settings_factory, topic_factory.prefix)
    schema = evolved_complaint()
    schema_file = tmp_path / "complaint-v2.avsc"
    schema_file.write_text(json.dumps(schema, ensure_ascii=False), encoding="utf-8")
    samples = list(SampleFactory(seed=3, major_share=0.5, green_share=1.0).complaints(30))
    t = topic_factory.topics
    with running_gateway(settings, route=True) as (app, _):
        assert app.router is not None
        assert app.router.ready.wait(60)
        result = CliRunner().invoke(
            cli,
            [
                "--config",
                str(config_file(tmp_path, settings)),
                "schemas",
                "register",
                str(schema_file),
            ],
        )
        assert result.exit_code == 0, result.output
        fp_text = fingerprint_text(fingerprint(schema))
        assert fp_text in result.output and "published" in result.output
        publish(
            settings,
            [
                (s.record["complaint_id"].encode(), encode_with(schema, evolved_record(s.record)))
                for s in samples
            ],
        )
        routed = outputs(settings, len(samples))
        listing = CliRunner().invoke(
            cli, ["--config", str(config_file(tmp_path, settings)), "schemas", "list"]
        )
        assert listing.exit_code == 0, listing.output
        assert fp_text in listing.output.split(), listing.output
        # everything was routed (read above): nothing can still reach the DLQ
        dead = read_all(settings.kafka.bootstrap_servers, [t.dlq_complaints], timeout_s=5.0)
        escalations = read_all(
            settings.kafka.bootstrap_servers, [t.escalations(c) for c in CITIES], idle_s=1.0
        )
    print(result.output, end="")
    print(f"routed {len(routed)} of {len(samples)} evolved complaints, dead-lettered {len(dead)}")
    assert dead == [], [header(d, "gc-dlq-reason") for d in dead]
    assert len(routed) == len(samples)
    assert {r.key for r in routed} == {s.record["complaint_id"].encode() for s in samples}
    codec = Codec(settings.codec, writers=[("complaint", schema)])
    decoded = codec.decode_as("complaint", routed[0].value)
    assert decoded["channel"] == "OTHER"  # the new symbol, read as the reader's enum default
    assert decoded["consumer"]["email"] is None  # the removed field, read as its default
    escalated = [r for r in routed if header(r, "gc-handling") == "escalated"]
    assert len(escalations) == len(escalated) > 0


def test_writer_schema_directory_and_unknown_fingerprints(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory, tmp_path: Path
) -> None:
    """A schema from the configured directory is accepted at start; a fingerprint nobody
    registered waits for the store to catch up, then is dead-lettered (named as Avro prints it)."""
    topic_factory.create_all(CITIES)
    directory = tmp_path / "schemas"
    directory.mkdir()
    schema = evolved_complaint()
    (directory / "complaint-v2.avsc").write_text(json.dumps(schema), encoding="utf-8")
    unknown = evolved_complaint()
    unknown["fields"].append({"name": "never_registered", "type": "int", "default": 0})
    settings = router_settings(
        settings_factory,
        topic_factory.prefix,
        codec={"schema_store": {"directory": str(directory), "wait_s": 0.5}},
    )
    samples = list(SampleFactory(seed=5, major_share=0.0).complaints(6))
    values = [
        (s.record["complaint_id"].encode(), encode_with(schema, evolved_record(s.record)))
        for s in samples[:4]
    ]
    values += [
        (
            s.record["complaint_id"].encode(),
            encode_with(unknown, dict(evolved_record(s.record), never_registered=1)),
        )
        for s in samples[4:]
    ]
    with running_gateway(settings, route=True):
        publish(settings, values)
        routed = outputs(settings, 4)
        dead = read_all(
            settings.kafka.bootstrap_servers,
            [topic_factory.topics.dlq_complaints],
            expect=2,
            idle_s=1.0,
        )
    assert len(routed) == 4
    assert [header(d, "gc-dlq-reason") for d in dead] == ["unknown_schema"] * 2
    message = header(dead[0], "gc-dlq-message") or ""
    assert fingerprint_text(fingerprint(unknown)) in message, message


def test_the_follower_idles_between_polls_yet_a_catch_up_is_served_at_once(
    topic_factory: TopicFactory,
) -> None:
    """The follower waits ``idle_s`` between non-blocking polls; a catch-up ends that wait, so
    it is served in well under the idle time, and records written later are still followed."""
    (topic,) = topic_factory.create("schemas", partitions=1)
    seen: list[bytes | None] = []
    lock = threading.Lock()

    def on_record(key: bytes | None, value: bytes | None) -> None:
        with lock:
            seen.append(value)

    follower = TopicFollower(topic_factory.kafka_settings(), topic, on_record, idle_s=30.0)
    producer = Producer(topic_factory.kafka_settings())
    try:
        assert follower.start(30)
        time.sleep(0.5)  # the follower is in its 30 s idle wait now
        producer.send(topic, b"first", key=b"k1").get(10)
        started = time.monotonic()
        assert follower.catch_up(20)
        took = time.monotonic() - started
        assert seen == [b"first"]
        assert took < 5.0, f"the catch-up waited {took:.1f} s (the idle wait is 30 s)"
        producer.send(topic, b"second", key=b"k2").get(10)
        assert follower.catch_up(20)
        assert seen == [b"first", b"second"]
        started = time.monotonic()
    finally:
        follower.stop()
        producer.close()
    assert time.monotonic() - started < 5.0, "stop() waited out the idle wait"


def test_the_follower_takes_new_records_without_a_catch_up(topic_factory: TopicFactory) -> None:
    (topic,) = topic_factory.create("schemas", partitions=2)
    seen: list[bytes | None] = []
    follower = TopicFollower(
        topic_factory.kafka_settings(), topic, lambda k, v: seen.append(v), idle_s=0.2
    )
    producer = Producer(topic_factory.kafka_settings())
    try:
        assert follower.start(30)
        for i in range(5):
            producer.send(topic, b"v%d" % i, key=b"k%d" % i).get(10)
        assert wait_until(lambda: len(seen) == 5, 10), seen
    finally:
        follower.stop()
        producer.close()
    assert sorted(v or b"" for v in seen) == [b"v%d" % i for i in range(5)]
