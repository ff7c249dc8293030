"""Hostile record contents against the real broker: implausible timestamps and Avro corruptions.

Issue 9, finding 3 (router side): an escalation whose ``received_at`` is in the year 10000 was
routed and escalated, and killed the delivery worker that formatted it. Timestamps outside the
plausible bounds (``router.timestamp_min_ms`` / ``router.timestamp_max_ahead_s``) are now
dead-lettered at the router with reason ``implausible_timestamp``. Every Avro corruption gets
exactly one outcome with a bounded reason, and the complaints behind them all arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.dev.samples import SampleFactory
from gateway.topics import Topics
from tests.conftest import TopicFactory
from tests.helpers import header
from tests.hostile.router_kit import OutputReader, Publisher, RouterRun, router_settings
from tests.integration.test_router import poison_payloads

YEAR_10000_MS = 253_402_300_800_000
BOUNDED_REASONS = {
    "bad_magic",
    "bad_index",
    "incompatible_schema",
    "invalid_schema",
    "unsafe_schema",
    "unknown_schema",
    "trailing_bytes",
    "oversized",
    "truncated",
    "empty",
    "malformed",
    "invalid_utf8",
    "schema_resolution",
    "undecodable",
    "unknown_city",
    "missing_field",
    "implausible_timestamp",
    "invalid_complaint",
    "wrong_kind",
    "internal_error",
}


def _major(seed: int) -> dict[str, Any]:
    start = int(time.time() * 1000) - 86_400_000
    factory = SampleFactory(seed=seed, major_share=1.0, green_share=1.0, start_ms=start)
    return factory.next().record


def _timestamp_cases(codec: Codec, topic: str) -> dict[str, bytes]:
    base = _major(21)
    order = base["order"]
    now = int(time.time() * 1000)
    cases = {
        "year-10000": base | {"received_at": YEAR_10000_MS},
        "negative": base | {"received_at": -1},
        "epoch": base | {"received_at": 0},
        "long-min": base | {"received_at": -(2**63)},
        "long-max": base | {"received_at": 2**63 - 1},
        "next-week": base | {"received_at": now + 7 * 86_400_000},
        "paid-year-10000": base | {"order": dict(order, paid_at=YEAR_10000_MS)},
        "paid-negative": base | {"order": dict(order, paid_at=-86_400_000)},
    }
    return {name: codec.encode("complaint", record, topic) for name, record in cases.items()}


def _corruptions(codec: Codec, topic: str) -> list[tuple[str, bytes]]:
    good = _major(22)
    body = codec.encode("complaint", good, topic)
    out = [(f"poison-{i}", value) for i, (_, value) in enumerate(poison_payloads(codec, good))]
    # a flipped bit at every 7th byte, a cut at every 11th: each decodes, or dies, boundedly
    out += [
        (f"flip-{i}", body[:i] + bytes([body[i] ^ 0x80]) + body[i + 1 :])
        for i in range(2, len(body), 7)
    ]
    out += [(f"cut-{i}", body[:i]) for i in range(0, len(body), 11)]
    header = body[:10]
    out += [
        ("string-4gb", header + b"\x02\xfe\xff\xff\xff\x1f"),  # complaint_id of ~2^31 bytes
        ("negative-length", header + b"\x03" + b"A" * 40),
        ("bad-utf8", header + b"\x04\xff\xfe" + body[12:]),
        ("confluent-unknown-id", b"\x00\x7f\xff\xff\xff" + body[10:]),
        ("confluent-short", b"\x00\x00\x01"),
        ("single-object-short", b"\xc3\x01\x00"),
        ("all-zero", b"\x00" * 2048),
        ("all-ff", b"\xff" * 2048),
        ("escalation-not-complaint", codec.encode("escalation", _escalation(codec, good), topic)),
    ]
    return out


def _escalation(codec: Codec, complaint: dict[str, Any]) -> dict[str, Any]:
    from gateway.routing.escalation import build_escalation

    return build_escalation(
        complaint, city="wuhu", rule_id="x", now_ms=int(time.time() * 1000), working_days=10
    )


def test_implausible_timestamps_are_dead_lettered_at_the_router(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory
) -> None:
    topic_factory.create_all()
    settings = router_settings(settings_factory, topic_factory.prefix)
    t = Topics(settings.topics.prefix)
    codec = Codec(settings.codec)
    pub = Publisher(settings)
    cases = {
        pub.send(value, tag=name): name
        for name, value in _timestamp_cases(codec, t.complaints).items()
    }
    plausible = pub.valid(codec, 50, seed=23)
    reader = OutputReader(settings, pub)
    with RouterRun(settings) as run:
        reader.wait_for([*cases, *plausible], timeout_s=90)
        reader.linger(2)
        assert run.thread.is_alive()
    for tag, name in cases.items():
        [outcome] = reader.outcomes.of(tag)
        assert outcome.topic == t.dlq_complaints, f"{name} was routed"
        assert header(outcome, "gc-dlq-reason") == "implausible_timestamp", name
        assert header(outcome, "gc-dlq-error-class") == "ImplausibleTimestamp"
    assert all(len(reader.outcomes.routed.get(tag, [])) == 1 for tag in plausible)
    # nothing implausible was escalated
    escalations = [t.escalations(c) for c in settings.router.green_cities]
    from tests.helpers import read_all

    seen = read_all(settings.kafka.bootstrap_servers, escalations, idle_s=2, timeout_s=20)
    received = [codec.decode_as("escalation", r.value or b"")["received_at"] for r in seen]
    assert all(0 < ms < YEAR_10000_MS for ms in received)
    assert run.metric(
        "greenchannel_router_dead_letters_total", reason="implausible_timestamp"
    ) == len(cases)
    reader.close()
    pub.close()


def test_every_avro_corruption_gets_one_bounded_outcome_and_the_rest_flows(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory
) -> None:
    topic_factory.create_all()
    settings = router_settings(settings_factory, topic_factory.prefix)
    t = Topics(settings.topics.prefix)
    codec = Codec(settings.codec)
    pub = Publisher(settings)
    corrupt = [pub.send(value, tag=name) for name, value in _corruptions(codec, t.complaints)]
    assert len(corrupt) >= 40
    after = pub.valid(codec, 200, seed=24)
    reader = OutputReader(settings, pub)
    with RouterRun(settings) as run:
        took = reader.wait_for([*corrupt, *after], timeout_s=120)
        reader.linger(2)
        assert run.thread.is_alive()
    for tag in corrupt:
        outcomes = reader.outcomes.of(tag)
        assert len(outcomes) == 1, tag
        if outcomes[0].topic == t.dlq_complaints:
            assert header(outcomes[0], "gc-dlq-reason") in BOUNDED_REASONS, tag
    dead = sum(1 for tag in corrupt if reader.outcomes.dead.get(tag))
    assert dead >= len(corrupt) // 2  # most corruptions cannot decode
    assert all(len(reader.outcomes.routed.get(tag, [])) == 1 for tag in after)
    assert took < 120
    reader.close()
    pub.close()
