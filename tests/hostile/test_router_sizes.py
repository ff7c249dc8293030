"""Hostile sizes against the real broker: records at and over its limits, huge and many headers.

Issue 9, finding 1: a ~1 MB undecodable value (or a valid complaint with a 1 MB header) was
accepted by the broker, but its dead letter (or department copy) was not: the transaction
failed, the router aborted and re-read the batch forever (RSS growing to GBs), and nothing
behind it was routed. Every record here must get exactly one outcome and the valid complaints
published after them must all arrive.
"""

from __future__ import annotations

import hashlib
import os
import resource
from collections.abc import Callable

import pytest
from kafka import errors as kerrors

from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.dev.samples import SampleFactory
from gateway.kafka.admin import Admin
from gateway.topics import Department, Desk, Topics
from tests.conftest import TopicFactory
from tests.helpers import header, set_max_message_bytes
from tests.hostile.router_kit import OutputReader, Publisher, RouterRun, router_settings

BROKER_LIMIT = 1_048_588  # the test broker's message.max.bytes (Kafka's default)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _valid(codec: Codec, topic: str, seed: int) -> bytes:
    sample = next(SampleFactory(seed=seed, major_share=0.0).complaints(1))
    return codec.encode("complaint", sample.record, topic)


def test_the_effective_limit_is_read_from_the_broker(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory
) -> None:
    topic_factory.create_all()
    t = topic_factory.topics
    with Admin(topic_factory.kafka_settings()) as admin:
        limits = admin.max_message_bytes([t.complaints, t.dlq_complaints])
    assert limits == {t.complaints: BROKER_LIMIT, t.dlq_complaints: BROKER_LIMIT}


def test_records_at_and_over_the_broker_limit_each_get_one_outcome_and_the_rest_flows(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory
) -> None:
    topic_factory.create_all()
    settings = router_settings(settings_factory, topic_factory.prefix)
    t = Topics(settings.topics.prefix)
    codec = Codec(settings.codec)
    pub = Publisher(settings)
    valid = _valid(codec, t.complaints, 1)
    undecodable = b"\xc3\x01" + os.urandom(1_048_398)  # ~1 MB, just under the limit
    expect: dict[str, str] = {}  # tag -> "routed" or the dead letter's reason
    expect[pub.send(undecodable, tag="mb-undecodable")] = "oversized"
    # a valid complaint whose 1 MB header takes it to the broker's limit: accepted on the input
    # topic, but its department copy (+ complaint id key, + gc-rule) would not be
    blob = b"x" * (BROKER_LIMIT - len(valid) - 150)
    expect[pub.send(valid, headers=[("blob", blob)], tag="mb-header")] = "too_large"
    expect[pub.send(b"junk", key=b"k" * 1_048_300, tag="mb-key")] = "bad_magic"
    expect[pub.send(valid, headers=[(f"h{i}", b"v") for i in range(20_000)], tag="many")] = "routed"
    expect[pub.send(valid, headers=[("n" * 100_000, b"v")], tag="long-name")] = "routed"
    expect[pub.send(b"junk", headers=[("gc-dlq-reason", b"forged")], tag="fake-dlq")] = "bad_magic"
    expect[pub.send(None, tag="tombstone")] = "empty"
    expect[pub.send(b"", tag="empty")] = "empty"
    over = Publisher(settings)  # its own producer: a refused batch poisons an idempotent one
    with pytest.raises(kerrors.MessageSizeTooLargeError):  # over it: the broker is the gate
        over.send(b"\xc3\x01" + b"\x00" * BROKER_LIMIT, tag="over")
    over.close()
    after = pub.valid(codec, 300, seed=2)
    rss_before = _rss_mib()
    reader = OutputReader(settings, pub)
    with RouterRun(settings) as run:
        took = reader.wait_for([*expect, *after], timeout_s=120)
        reader.linger(2)
        assert run.thread.is_alive()
    out = reader.outcomes
    for tag, want in expect.items():
        got = out.of(tag)
        assert len(got) == 1, (tag, [r.topic for r in got])
        if want == "routed":
            assert got[0].topic != t.dlq_complaints, (tag, header(got[0], "gc-dlq-reason"))
        elif want == "too_large":  # or refused by the broker first, then bisected: both fine
            assert header(got[0], "gc-dlq-reason") in ("too_large", "broker_rejected"), tag
        else:
            assert header(got[0], "gc-dlq-reason") == want, tag
    assert all(len(out.routed.get(tag, [])) == 1 for tag in after)
    # the bounded dead letters say what they dropped and how to recognise the original
    [mb] = out.dead["mb-undecodable"]
    assert header(mb, "gc-dlq-truncated") == "true"
    assert header(mb, "gc-dlq-value-sha256") == hashlib.sha256(undecodable).hexdigest()
    assert header(mb, "gc-dlq-value-bytes") == str(len(undecodable))
    assert header(mb, "gc-dlq-source-offset") == str(pub.sent["mb-undecodable"].offset)
    assert mb.value and undecodable.startswith(mb.value) and len(mb.value) <= 64 * 1024
    [blob] = out.dead["mb-header"]
    assert header(blob, "gc-dlq-truncated") == "true" and blob.value == valid
    assert header(blob, "gc-dlq-headers-dropped") == "2"  # the tag and the blob
    [key] = out.dead["mb-key"]
    assert key.key is None and header(key, "gc-dlq-key-sha256")
    [fake] = out.dead["fake-dlq"]
    assert [v for k, v in fake.headers if k == "gc-dlq-reason"] == [b"bad_magic"]  # ours only
    assert len(out.routed["many"][0].headers) > 20_000
    assert took < 120
    assert _rss_mib() - rss_before < 400  # no abort loop filling memory (was +1.7 GB)
    reader.close()
    pub.close()


def test_a_topic_limit_lowered_while_routing_is_learnt_from_the_refusal(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory
) -> None:
    """The department topic takes 64 KiB from now on: the first too-large complaint is refused
    by the broker (the router's limits are stale), the batch is bisected and only that record
    dead-lettered; the limits are re-read, so the next one is dead-lettered before sending."""
    topic_factory.create_all()
    settings = router_settings(settings_factory, topic_factory.prefix)
    t = Topics(settings.topics.prefix)
    codec = Codec(settings.codec)
    pub = Publisher(settings)
    reader = OutputReader(settings, pub)
    minor = SampleFactory(seed=4, major_share=0.0)
    with RouterRun(settings) as run:
        warm = pub.valid(codec, 20, seed=3)
        reader.wait_for(warm, timeout_s=60)
        for dept in (Department.CONSUMER_PROTECTION, Department.CUSTOMER_SERVICE):
            set_max_message_bytes(settings.kafka.bootstrap_servers, t.department(dept), 65_536)
        for desk in Desk:
            set_max_message_bytes(settings.kafka.bootstrap_servers, t.desk(desk), 65_536)
        big = []
        for i in range(2):  # one after the other: the second meets the re-read limits
            value = codec.encode("complaint", minor.next().record, t.complaints)
            big.append(pub.send(value, headers=[("blob", b"b" * 100_000)], tag=f"big-{i}"))
            reader.wait_for(big, timeout_s=60)
        after = pub.valid(codec, 50, seed=5)
        reader.wait_for(after, timeout_s=90)
        reader.linger(2)
        assert run.thread.is_alive()
    reasons = [header(reader.outcomes.of(tag)[0], "gc-dlq-reason") for tag in big]
    assert reasons == ["broker_rejected", "too_large"]  # refused once, then known
    assert all(len(reader.outcomes.routed.get(tag, [])) == 1 for tag in after)
    assert run.metric("greenchannel_router_bisections_total") == 1
    reader.close()
    pub.close()


def test_broker_rejected_is_what_a_refused_send_becomes(topic_factory: TopicFactory) -> None:
    """The wrapping the bisection relies on: a record the producer refuses as too large is a
    record-level ``BrokerRejected``, not a fatal error."""
    from gateway.errors import BrokerRejected
    from gateway.kafka.clients import Producer

    topic = topic_factory.create("sized", partitions=1)[0]
    producer = Producer(topic_factory.kafka_settings())
    try:
        with pytest.raises(BrokerRejected):
            producer.send_and_wait(topic, b"x" * (5 * 1024 * 1024), key=b"k")
    finally:
        producer.close()
