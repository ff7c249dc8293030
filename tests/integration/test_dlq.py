"""``greenchannel dlq`` against the real broker, the delivery engine and the bureau simulator.

The "mapping bug": the Hangzhou bureau's category table loses the code our connector sends for
privacy complaints (``YS``), so the bureau answers TYPE_UNKNOWN and those escalations are
dead-lettered; restoring the table is the fix, after which a replay gets each accepted once.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from connectors.hangzhou import CATEGORIES as HANGZHOU_CATEGORIES
from gateway.avro.codec import Codec
from gateway.cli import cli
from gateway.config import Settings
from gateway.deadletters.headers import dead_letter_headers
from gateway.deadletters.replay import DeadLetter, scan
from gateway.dev.bureau_profiles import profile_for
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.samples import SampleFactory
from gateway.errors import UnknownSchema
from gateway.kafka.clients import Consumer, Producer, Record, TopicPartition
from tests.conftest import TopicFactory
from tests.helpers import header, read_all, write_config
from tests.integration.delivery_kit import (
    Deliverer,
    EscalationStream,
    Sent,
    accepted_ids,
    delivery_settings,
    wait_until,
)

pytestmark = pytest.mark.integration
CITY = "hangzhou"
BROKEN = "PRIVACY"
"""The complaint category whose bureau code goes missing."""


@pytest.fixture
def sim(bureaus: BureauSimulator) -> Iterator[BureauSimulator]:
    for name in bureaus.names():
        bureaus.city(name).reset_faults()
        bureaus.city(name).clear()
    yield bureaus
    fix_mapping(bureaus)


@pytest.fixture
def settings(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    sim: BureauSimulator,
    tls_dir: Path,
) -> Settings:
    topic_factory.create_all()
    return delivery_settings(settings_factory, sim, tls_dir, topic_factory.prefix)


@pytest.fixture
def greenchannel(settings: Settings, tmp_path: Path) -> Callable[..., Result]:
    """Runs ``greenchannel --config <test config> <args>`` in-process."""
    cfg = write_config(
        tmp_path / "gc.yaml",
        {
            "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
            "topics": {"prefix": settings.topics.prefix},
            "cities": {
                c: cs.model_dump(mode="json", exclude={"credentials"})
                for c, cs in settings.cities.items()
            },
        },
    )

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(cfg), *args], catch_exceptions=False)

    return run


def break_mapping(sim: BureauSimulator) -> None:
    """The bureau's category table no longer knows the code our connector sends."""
    bureau = sim.city(CITY)
    code = HANGZHOU_CATEGORIES[BROKEN]
    bureau.profile = replace(bureau.profile, categories=bureau.profile.categories - {code})


def fix_mapping(sim: BureauSimulator) -> None:
    sim.city(CITY).profile = profile_for(CITY)


def publish(stream: EscalationStream, city: str, category: str) -> dict[str, Any]:
    esc = stream.escalation(city)
    esc["category"] = category
    value = stream.codec.encode("escalation", esc)
    stream.producer.send(stream.topics.escalations(city), value, key=esc["complaint_id"].encode())
    stream.sent.append(Sent(esc["escalation_id"], city, esc["created_at"]))
    return esc


def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = Consumer(settings.kafka, group_id=f"ends-{uuid.uuid4().hex[:8]}", topics=[topic])
    try:
        return consumer.end_offsets([TopicPartition(topic, p) for p in range(3)])
    finally:
        consumer.close()


def dead_letters(settings: Settings) -> list[DeadLetter]:
    return scan(settings.kafka, f"{settings.topics.prefix}dlq.escalations.v1", timeout_s=30)


def wait_for_dead_letters(settings: Settings, n: int) -> list[DeadLetter]:
    found: list[DeadLetter] = []

    def enough() -> bool:
        found[:] = dead_letters(settings)
        return len(found) >= n

    assert wait_until(enough, 60, every_s=1.0), f"{len(found)} dead letters, want {n}"
    assert len(found) == n
    return found


def escalation_id(codec: Codec, value: bytes | None) -> str:
    return str(codec.decode_as("escalation", value or b"")["escalation_id"])


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_rejections_from_a_since_fixed_mapping_are_replayed_and_each_accepted_once(
    settings: Settings, sim: BureauSimulator, greenchannel: Callable[..., Result]
) -> None:
    codec = Codec(settings.codec)
    topic = f"{settings.topics.prefix}escalations.{CITY}.v1"
    stream = EscalationStream(settings, seed=41)
    break_mapping(sim)
    bad = {publish(stream, CITY, BROKEN)["escalation_id"] for _ in range(8)}
    for _ in range(8):
        publish(stream, CITY, "QUALITY")
    for _ in range(4):
        publish(stream, "wuhu", BROKEN)  # another city's table is fine
    stream.close()
    with Deliverer(settings):
        found = wait_for_dead_letters(settings, 8)
        assert wait_until(lambda: len(accepted_ids(sim, CITY)) == 8, 30)
        assert wait_until(lambda: len(accepted_ids(sim, "wuhu")) == 4, 30)
        assert {escalation_id(codec, x.value) for x in found} == bad
        assert {(x.city, x.reason, x.http_status, x.replay_count) for x in found} == {
            (CITY, "business_rule", 200, 0)
        }

        rows = [json.loads(line) for line in ok(greenchannel("dlq", "list", "--json")).splitlines()]
        assert len(rows) == 8 and {r["city"] for r in rows} == {CITY}
        assert ok(greenchannel("dlq", "list", "--city", "wuhu", "--json")) == ""
        table = ok(greenchannel("dlq", "list", "--reason", "business_rule", "--since", "1h"))
        assert table.splitlines()[0].split()[:2] == ["DLQ", "TIME"]
        assert "8 dead letter(s)" in table

        before = end_offsets(settings, topic)
        dry = ok(greenchannel("dlq", "replay", "--city", CITY, "--dry-run"))
        assert "would replay 8" in dry and f"{CITY}" in dry
        assert end_offsets(settings, topic) == before  # a dry run sends nothing

        fix_mapping(sim)
        out = ok(greenchannel("dlq", "replay", "--city", CITY, "--yes"))
        assert "replayed 8" in out
        assert wait_until(lambda: len(accepted_ids(sim, CITY)) == 16, 60)
        first_receipts = receipts(settings, 16 + 4 + 8)

        again = ok(greenchannel("dlq", "replay", "--city", CITY, "--yes"))
        assert "replayed 8" in again
        assert wait_until(lambda: sim.city(CITY).counters().get("duplicates", 0) == 8, 60)
        second_receipts = receipts(settings, 16 + 4 + 16)

    keys = accepted_ids(sim, CITY)
    assert len(keys) == len(set(keys)) == 16  # one case per escalation, replays included
    assert bad <= set(keys)
    assert len(dead_letters(settings)) == 8  # nothing was dead-lettered again

    replays = [
        r
        for r in read_all(settings.kafka.bootstrap_servers, [topic])
        if r.header("gc-replay-count")
    ]
    assert Counter(header(r, "gc-replay-count") for r in replays) == {"1": 16}
    assert Counter(escalation_id(codec, r.value) for r in replays) == dict.fromkeys(bad, 2)
    originals = {escalation_id(codec, x.value): x.value for x in found}
    assert all(r.value == originals[escalation_id(codec, r.value)] for r in replays)

    cases = {c.key: c.case_number for c in sim.cases(CITY)}
    for got in (first_receipts, second_receipts):
        accepted = [r for r in got if r["escalation_id"] in bad and r["outcome"] == "ACCEPTED"]
        assert Counter(str(r["escalation_id"]) for r in accepted) == dict.fromkeys(
            bad, 1 if got is first_receipts else 2
        )
        assert all(r["case_number"] == cases[str(r["escalation_id"])] for r in accepted)


def receipts(settings: Settings, expect: int) -> list[dict[str, Any]]:
    codec = Codec(settings.codec)
    records = read_all(
        settings.kafka.bootstrap_servers,
        [f"{settings.topics.prefix}receipts.v1"],
        expect=expect,
        timeout_s=60,
        idle_s=1.0,
    )
    assert len(records) == expect
    return [codec.decode_as("receipt", r.value or b"") for r in records]


def test_repeated_failures_count_up_and_the_loop_guard_stops_the_replays(
    settings: Settings, sim: BureauSimulator, greenchannel: Callable[..., Result]
) -> None:
    topic = f"{settings.topics.prefix}escalations.{CITY}.v1"
    stream = EscalationStream(settings, seed=42)
    break_mapping(sim)  # and never fixed
    for _ in range(3):
        publish(stream, CITY, BROKEN)
    stream.close()
    with Deliverer(settings):
        wait_for_dead_letters(settings, 3)
        for round_ in (1, 2):
            out = ok(greenchannel("dlq", "replay", "--max-replays", "2", "--yes"))
            assert "replayed 3" in out
            letters = wait_for_dead_letters(settings, 3 * (round_ + 1))
            latest = [x for x in letters if x.replay_count == round_]
            # the deliverer kept gc-replay-count when it dead-lettered the replay again
            assert len(latest) == 3
            assert {x.source_topic for x in latest} == {topic}
        before = end_offsets(settings, topic)
        out = ok(greenchannel("dlq", "replay", "--max-replays", "2", "--yes"))
        assert "replayed 0" in out
        assert "skipped 9: loop_guard 3, superseded 6" in out
        assert end_offsets(settings, topic) == before
        assert "replayed 3" in ok(greenchannel("dlq", "replay", "--max-replays", "3", "--yes"))
        wait_for_dead_letters(settings, 12)
    assert accepted_ids(sim, CITY) == []


def test_router_dead_letters_replay_to_the_complaints_topic_and_show_masks_personal_data(
    settings: Settings, greenchannel: Callable[..., Result], kafka_bootstrap: str
) -> None:
    p = settings.topics.prefix
    codec = Codec(settings.codec)
    factory = SampleFactory(seed=43)
    producer = Producer(settings.kafka, linger_ms=0)
    complaints: list[dict[str, Any]] = []
    for i in range(4):
        complaint = factory.next().record
        complaints.append(complaint)
        original = Record(
            f"{p}complaints.v1",
            i % 3,
            100 + i,
            complaint["complaint_id"].encode(),
            codec.encode("complaint", complaint),
            (("source", b"app"), ("gc-replay-count", b"3" if i == 3 else b"0")),
            0,
        )
        headers = dead_letter_headers(
            original,
            stage="router",
            error=UnknownSchema("unknown schema fingerprint 0011223344556677"),
            reason="unknown_schema",
            now_ms=1_700_000_000_000 + i,
        )
        producer.send_and_wait(
            f"{p}dlq.complaints.v1", original.value or b"", key=original.key, headers=headers
        )
    producer.close()

    out = ok(greenchannel("dlq", "replay", "--stage", "complaints", "--yes"))
    assert "replayed 3" in out and "skipped 1: loop_guard 1" in out
    replayed = read_all(kafka_bootstrap, [f"{p}complaints.v1"], expect=3, idle_s=1.0)
    assert len(replayed) == 3
    by_key = {r.key: r for r in replayed}
    for complaint in complaints[:3]:
        r = by_key[complaint["complaint_id"].encode()]
        assert codec.decode_as("complaint", r.value) == complaint
        assert list(r.headers) == [("source", b"app"), ("gc-replay-count", b"1")]

    first = complaints[0]
    letters = scan(settings.kafka, f"{p}dlq.complaints.v1", timeout_s=30)
    position = next(x.position for x in letters if x.key == first["complaint_id"].encode())
    phone, name = first["consumer"]["phone"], first["consumer"]["name"]
    masked = greenchannel("dlq", "show", position, "--stage", "complaints")
    assert masked.exit_code == 0, masked.output
    assert "gc-dlq-reason: unknown_schema" in masked.stdout
    assert "gc-replay-count: 0" in masked.stdout
    assert "record (complaint, personal data masked)" in masked.stdout
    assert first["complaint_id"] in masked.stdout
    assert phone not in masked.stdout and name not in masked.stdout
    assert masked.stderr == ""
    revealed = greenchannel("dlq", "show", position, "--stage", "complaints", "--reveal")
    assert revealed.exit_code == 0
    assert phone in revealed.stdout and name in revealed.stdout
    assert "personal data" in revealed.stderr
