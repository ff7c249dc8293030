"""The router against the real broker: routing, headers, poison, metrics."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.app import App
from gateway.avro.codec import Codec
from gateway.cities import city_key
from gateway.config import Settings
from gateway.dev.samples import MAJOR_HEADER, SampleFactory, publish
from gateway.kafka.clients import Producer
from gateway.ops.metrics import Metrics
from gateway.routing.escalation import escalation_id
from gateway.routing.rules import load_rules
from gateway.topics import Department, Desk, Topics
from tests.conftest import TopicFactory
from tests.helpers import header, read_all

pytestmark = pytest.mark.integration


def department_topics(t: Topics) -> list[str]:
    return [
        t.department(Department.CONSUMER_PROTECTION),
        t.department(Department.CUSTOMER_SERVICE),
        *(t.desk(d) for d in Desk),
    ]


def start_router(settings: Settings, registry: CollectorRegistry) -> tuple[App, threading.Thread]:
    app = App(settings, route=True, deliver=False, metrics=Metrics(registry))
    thread = threading.Thread(target=app.run, kwargs={"with_ops": False}, daemon=True)
    thread.start()
    return app, thread


def router_settings(settings_factory: Callable[..., Settings], prefix: str) -> Settings:
    return settings_factory(
        router={"group_id": f"{prefix}router", "transactional_id_prefix": f"{prefix}tx"}
    )


def test_every_complaint_lands_where_the_rules_say_exactly_once(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory, kafka_bootstrap: str
) -> None:
    topic_factory.create_all()
    settings = router_settings(settings_factory, topic_factory.prefix)
    t = Topics(settings.topics.prefix)
    samples = list(SampleFactory(seed=7, major_share=0.2).complaints(3000))
    codec = Codec(settings.codec)
    producer = Producer(settings.kafka)
    publish(producer, codec, t.complaints, iter(samples))
    producer.close()

    registry = CollectorRegistry()
    app, thread = start_router(settings, registry)
    try:
        routed = read_all(kafka_bootstrap, department_topics(t), expect=len(samples), timeout_s=120)
        escalations = read_all(
            kafka_bootstrap, [t.escalations(c) for c in settings.router.green_cities], idle_s=3
        )
    finally:
        app.stop.set()
        thread.join(30)

    classifier = load_rules()
    expected: dict[str, Any] = {}
    major: dict[str, bool] = {}
    expected_escalations = set()
    for s in samples:
        d = classifier.classify(s.record)
        topic = t.desk(d.desk) if d.desk else t.department(d.department)
        city = city_key(s.record["city_code"])
        expected[s.record["complaint_id"]] = (topic, d.rule_id)
        major[s.record["complaint_id"]] = d.major
        if d.major and city in settings.router.green_cities:
            expected_escalations.add(escalation_id(s.record["complaint_id"], str(city)))

    ids = [r.key.decode() for r in routed if r.key]
    assert len(ids) == len(set(ids)) == len(samples)
    for r in routed:
        cid = r.key.decode() if r.key else ""
        assert (r.topic, header(r, "gc-rule")) == expected[cid]
        # exactly the headers the router owes (the topic says where, gc-rule says why), the
        # publisher's own kept: nothing else, in particular no routing header of old
        names = [name for name, _ in r.headers]
        owed = ["gc-handling", "gc-city"] if major[cid] else []
        assert names == [MAJOR_HEADER, "gc-rule", *owed], (cid, names)
        if r.topic == t.department(Department.CONSUMER_PROTECTION):
            city = header(r, "gc-city")
            want = "escalated" if city in settings.router.green_cities else "manual"
            assert header(r, "gc-handling") == want
    got = [codec.decode_as("escalation", r.value or b"")["escalation_id"] for r in escalations]
    assert len(got) == len(set(got))
    assert set(got) == expected_escalations
    assert sum(s.major for s in samples) >= len(expected_escalations) > 100
    value = registry.get_sample_value
    assert value("greenchannel_router_consumed_total") == len(samples)
    by_rule = collections.Counter(rule for _, rule in expected.values())
    for rule, n in by_rule.items():
        total = sum(
            value(
                "greenchannel_router_routed_total", {"department": dep, "desk": desk, "rule": rule}
            )
            or 0
            for dep in ("consumer-protection", "customer-service", "call-center")
            for desk in ["", *(d.value for d in Desk)]
        )
        assert total == n, rule


def poison_payloads(codec: Codec, good: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(expected reason, bytes) for every kind of bad input."""
    body = codec.encode("complaint", good)
    bad_city = dict(good, city_code="999999")
    no_phone = dict(good, consumer=dict(good["consumer"], phone=""))
    bomb = b"\xc3\x01" + body[2:10] + b"\x80\x80\x80\x80\x10"
    return [
        ("bad_magic", b"not avro at all"),
        ("unknown_schema", b"\xc3\x01" + b"\x00" * 8 + body[10:]),
        ("unknown_schema", b"\x00\x00\x00\x30\x39" + body[10:]),
        ("trailing_bytes", body + b"\x00garbage"),
        ("oversized", b"\xc3\x01" + body[2:10] + b"x" * 300_000),
        ("unknown_city", codec.encode("complaint", bad_city)),
        ("missing_field", codec.encode("complaint", no_phone)),
        ("truncated", bomb),
        ("truncated", body[:-7]),
        ("empty", b""),
    ]


def test_one_percent_poison_is_exactly_what_is_dead_lettered(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory, kafka_bootstrap: str
) -> None:
    topic_factory.create_all()
    settings = router_settings(settings_factory, topic_factory.prefix)
    t = Topics(settings.topics.prefix)
    codec = Codec(settings.codec)
    factory = SampleFactory(seed=11, major_share=0.1)
    producer = Producer(settings.kafka)
    poison_sent: dict[str, str] = {}
    good = 0
    for i in range(10_000):
        if i % 100 == 50:
            sample = factory.next().record
            kinds = poison_payloads(codec, sample)
            reason, value = kinds[(i // 100) % len(kinds)]
            key = f"poison-{i}"
            poison_sent[key] = reason
            producer.send(t.complaints, value, key=key.encode(), headers=[("upstream", b"test")])
        else:
            s = factory.next().record
            producer.send(
                t.complaints, codec.encode("complaint", s), key=s["complaint_id"].encode()
            )
            good += 1
    producer.flush()
    producer.close()
    assert len(poison_sent) == 100

    registry = CollectorRegistry()
    app, thread = start_router(settings, registry)
    try:
        routed = read_all(kafka_bootstrap, department_topics(t), expect=good, timeout_s=120)
        dead = read_all(kafka_bootstrap, [t.dlq_complaints], expect=len(poison_sent), timeout_s=60)
    finally:
        app.stop.set()
        thread.join(30)

    assert len(routed) == good
    assert {r.key.decode() for r in dead if r.key} == set(poison_sent)
    assert len(dead) == len(poison_sent)
    for r in dead:
        key = r.key.decode() if r.key else ""
        assert header(r, "gc-dlq-reason") == poison_sent[key], key
        assert header(r, "gc-dlq-source-topic") == t.complaints
        assert header(r, "gc-dlq-source-offset") is not None
        assert header(r, "gc-dlq-error-class")
        assert header(r, "gc-dlq-time")
        assert header(r, "upstream") == "test"  # original headers kept
    reasons = collections.Counter(poison_sent.values())
    for reason, n in reasons.items():
        assert (
            registry.get_sample_value("greenchannel_router_dead_letters_total", {"reason": reason})
            == n
        )
