"""The codec through the real broker: 10,000 complaints per wire format come back equal, and
hostile payloads on a topic become typed decode errors when consumed, never a crash."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from gateway.avro.codec import Codec, current_schemas, fingerprint
from gateway.avro.schemas_path import schema_text
from gateway.cli import cli
from gateway.config import CodecSettings, KafkaSettings
from gateway.dev.registry import RegistryServer
from gateway.dev.samples import SampleFactory, publish
from gateway.errors import DecodeError
from gateway.kafka.clients import Consumer, Producer, Record
from tests.conftest import TopicFactory

pytestmark = pytest.mark.integration

COUNT = 10_000


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def registry_url(registry: RegistryServer) -> str:
    return registry.url


def consume(bootstrap: str, topic: str, expect: int, timeout_s: float = 120.0) -> list[Record]:
    return consume_timed(bootstrap, topic, expect, timeout_s)[0]


def consume_timed(
    bootstrap: str, topic: str, expect: int, timeout_s: float = 120.0
) -> tuple[list[Record], float]:
    """Records of ``topic`` from the beginning, and the seconds from the first to the last
    (the group join before the first record is not the consumer's throughput)."""
    consumer = Consumer(
        KafkaSettings(bootstrap_servers=bootstrap),
        group_id=f"codec-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        max_poll_records=5000,
    )
    out: list[Record] = []
    first = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            batch = consumer.poll(200)
            if batch and not out:
                first = time.perf_counter()
            out.extend(batch)
    finally:
        consumer.close()
    return out, time.perf_counter() - first


@pytest.mark.parametrize("wire_format", ["single_object", "confluent"])
def test_ten_thousand_complaints_round_trip(
    wire_format: str, kafka_bootstrap: str, topic_factory: TopicFactory, registry_url: str
) -> None:
    [topic] = topic_factory.create("complaints.v1", partitions=6)
    url = registry_url if wire_format == "confluent" else None
    samples = list(SampleFactory(seed=2025, major_share=0.1).complaints(COUNT))
    sent = {s.record["complaint_id"]: s.record for s in samples}
    assert len(sent) == COUNT

    producer = Producer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    with Codec(CodecSettings(wire_format=wire_format, registry_url=url)) as writer:
        started = time.perf_counter()
        result = publish(producer, writer, topic, iter(samples))
        produce_s = time.perf_counter() - started
    producer.close()
    assert result.sent == COUNT

    records, consumed_s = consume_timed(kafka_bootstrap, topic, COUNT)
    assert len(records) == COUNT
    # a fresh reader: for Confluent framing it learns the schema id from the registry
    with Codec(CodecSettings(registry_url=url)) as reader:
        started = time.perf_counter()
        decoded = [reader.decode(r.value) for r in records]
        decode_s = time.perf_counter() - started
    for record, message in zip(records, decoded, strict=True):
        assert message.kind == "complaint"
        assert record.key == message.record["complaint_id"].encode()
        assert message.record == sent.pop(message.record["complaint_id"])
    assert not sent  # every complaint exactly once
    print(
        f"\n[{wire_format}] {COUNT} complaints, {result.bytes / COUNT:.0f} B avg: "
        f"encode+produce {COUNT / produce_s:,.0f} msg/s, consume {COUNT / consumed_s:,.0f} msg/s, "
        f"decode {decode_s / COUNT * 1e6:.1f} us/msg, "
        f"round trip {COUNT / (produce_s + consumed_s + decode_s):,.0f} msg/s"
    )


def hostile_payloads() -> dict[str, tuple[bytes | None, str]]:
    """name -> (value, expected DecodeError reason)."""
    complaint = current_schemas()["complaint"].header
    escalation = current_schemas()["escalation"].header
    up_to_severity = (
        b"\x00" * 4 + b"\x00" * 3 + b"\x00\x00" + b"\x00" * 5 + b"\x00" * 3 + b"\x00" * 5
    )
    bomb_schema: dict[str, Any] = json.loads(schema_text("escalation"))
    bomb_schema["fields"].append(
        {"name": "pad", "type": {"type": "array", "items": "null"}, "default": []}
    )
    return {
        "tombstone": (None, "empty"),
        "empty": (b"", "empty"),
        "json": (b'{"complaint_id": "x"}', "bad_magic"),
        "bad_version": (b"\xc3\x02" + b"\x00" * 30, "bad_magic"),
        "short_header": (b"\xc3\x01\x00", "truncated"),
        "unknown_fingerprint": (b"\xc3\x01" + b"\x42" * 8 + b"\x00" * 20, "unknown_schema"),
        "unknown_registry_id": (b"\x00\x7f\xff\xff\xff" + b"\x00" * 20, "unknown_schema"),
        "truncated_body": (complaint + b"\x02A", "truncated"),
        "bad_enum_index": (complaint + b"\x02A\x00" + b"\x0e", "bad_index"),
        "negative_enum_index": (complaint + b"\x02A\x00" + b"\x01", "bad_index"),
        "invalid_utf8": (complaint + b"\x04\xff\xfe", "invalid_utf8"),
        "array_bomb": (
            escalation + up_to_severity + b"\x80\x87\x93\x39" + b"\x00" * 4,
            "truncated",
        ),
        "zero_width_bomb": (
            b"\xc3\x01"
            + fingerprint(bomb_schema)
            + up_to_severity
            + b"\x00"
            + b"\x80\x87\x93\x39\x00",
            "unknown_schema",
        ),
        "oversized": (complaint + b"\x00" * (300 * 1024), "oversized"),
    }


def test_hostile_payloads_become_typed_errors(
    kafka_bootstrap: str, topic_factory: TopicFactory, registry: RegistryServer
) -> None:
    [topic] = topic_factory.create("hostile.v1", partitions=1)
    payloads = hostile_payloads()
    codec = Codec(CodecSettings())
    good = [s.record for s in SampleFactory(seed=3).complaints(20)]
    producer = Producer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    for i, (name, (value, _)) in enumerate(payloads.items()):
        producer.send(topic, codec.encode("complaint", good[i]), key=b"good")
        producer.send(topic, value, key=name.encode())  # type: ignore[arg-type]
    producer.flush(30)
    producer.close()

    records = consume(kafka_bootstrap, topic, 2 * len(payloads))
    assert len(records) == 2 * len(payloads)
    reasons: dict[str, str] = {}
    decoded_good = []
    asked = len(registry.requests())
    with Codec(CodecSettings(registry_url=registry.url)) as reader:
        for record in records:
            try:
                decoded_good.append(reader.decode(record.value).record)
                assert record.key == b"good"
            except DecodeError as exc:  # anything else fails the test
                reasons[(record.key or b"").decode()] = exc.reason
        # The unknown id cost one registry request, no retries; asking again costs none.
        unknown = payloads["unknown_registry_id"][0]
        for _ in range(3):
            with pytest.raises(DecodeError):
                reader.decode(unknown)
    assert reasons == {name: reason for name, (_, reason) in payloads.items()}
    assert decoded_good == good[: len(payloads)]
    assert registry.requests()[asked:] == [("GET", f"/schemas/ids/{2**31 - 1}")]


def test_publish_samples_command(
    kafka_bootstrap: str, topic_factory: TopicFactory, registry_url: str, tmp_path: Path
) -> None:
    [topic] = topic_factory.create("complaints.v1", partitions=3)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka_bootstrap},
                "topics": {"prefix": topic_factory.prefix},
                "codec": {"registry_url": registry_url},
            }
        ),
        encoding="utf-8",
    )
    args = ["--config", str(config), "publish-samples", "--count", "300", "--rate", "1000"]
    args += ["--format", "confluent", "--seed", "5", "--start-ms", "1735660800000"]
    started = time.monotonic()
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.25  # paced: 300 at 1000/s
    assert "published 300 complaints" in result.output
    expected = [s.record for s in SampleFactory(5, start_ms=1_735_660_800_000).complaints(300)]
    records = consume(kafka_bootstrap, topic, 300)
    with Codec(CodecSettings(registry_url=registry_url)) as reader:
        got = {reader.decode(r.value).record["complaint_id"]: r for r in records}
        assert sorted(got) == sorted(e["complaint_id"] for e in expected)
        for record in expected:
            message = got[record["complaint_id"]]
            assert message.value is not None and message.value[:1] == b"\x00"
            assert reader.decode(message.value).record == record
