"""The smaller interop findings of issue 12, and the schema store's and subjects' pure parts."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.avro.codec import (
    SINGLE_OBJECT_MAGIC,
    Codec,
    fingerprint,
    fingerprint_text,
    parse_fingerprint,
)
from gateway.avro.registry import subject_name
from gateway.avro.schemas_path import schema_text
from gateway.avro.store import SchemaStore, store_record
from gateway.cli import cli
from gateway.config import CodecSettings, load_settings
from gateway.dev.registry import RegistryServer
from gateway.errors import UnknownSchema
from gateway.kafka.clients import Record
from gateway.ops.logs import JsonFormatter
from gateway.routing.router import RecordRouter
from gateway.routing.rules import load_rules

pytestmark = pytest.mark.unit
DOCS = Path(__file__).resolve().parents[2] / "docs"


def complaint_v2(**extra_field: Any) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text("complaint"))
    schema["fields"].append(
        extra_field or {"name": "app_version", "type": ["null", "string"], "default": None}
    )
    return schema


def without_description() -> dict[str, Any]:
    """A writer the current reader cannot read: it drops a field the reader has no default for."""
    schema: dict[str, Any] = json.loads(schema_text("complaint"))
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "description"]
    return schema


def test_tombstone_is_dead_lettered_with_a_null_value() -> None:
    settings = load_settings()
    rr = RecordRouter(settings, load_rules(None), Codec(settings.codec), lambda: 0)
    routed = rr.route(Record("gc.complaints.v1", 0, 5, b"k", None, (), 0))
    assert routed.dead_letter_reason == "empty"
    [out] = routed.outputs
    assert out.value is None  # a replay or a compaction still sees a tombstone, not b""


def test_fingerprints_are_printed_as_avro_tools_print_them() -> None:
    # Avro's spec test vector: CRC-64-AVRO of the "null" schema is 0x63dd24e7cc258f8a
    fp = fingerprint("null")
    assert fp == bytes.fromhex("8a8f25cce724dd63")  # on the wire: little-endian
    assert fingerprint_text(fp) == "63dd24e7cc258f8a"
    assert parse_fingerprint("63dd24e7cc258f8a") == fp
    with pytest.raises(UnknownSchema) as err:
        Codec(CodecSettings()).decode(SINGLE_OBJECT_MAGIC + fp + b"\x00")
    assert "63dd24e7cc258f8a" in str(err.value)
    assert "8a8f25cce724dd63" not in str(err.value)


def test_operations_doc_filters_logs_on_the_levels_the_logs_carry() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", None, None)
    level = json.loads(JsonFormatter().format(record))["level"]
    assert level == "error"
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    filters = re.findall(r'\.level\s*[!=]=\s*"([^"]+)"', text)
    assert filters, "operations.md has no jq level filter"
    assert all(f in {"debug", "info", "warning", "error", "critical"} for f in filters), filters


def test_metrics_doc_lists_the_delivery_lag() -> None:
    text = (DOCS / "metrics.md").read_text(encoding="utf-8")
    assert 'no `component="deliver"` lag' not in text
    assert "| `component` | `router`, `deliver`, `results` |" in text


@pytest.mark.parametrize(
    ("strategy", "subject"),
    [
        ("TopicNameStrategy", "gc.escalations.wuhu.v1-value"),
        ("RecordNameStrategy", "com.greenchannel.v1.Escalation"),
        ("TopicRecordNameStrategy", "gc.escalations.wuhu.v1-com.greenchannel.v1.Escalation"),
    ],
)
def test_subject_naming_strategies(strategy: Any, subject: str) -> None:
    assert subject_name(strategy, "gc.escalations.wuhu.v1", "com.greenchannel.v1.Escalation") == (
        subject
    )
    codec = Codec(CodecSettings(subject_name_strategy=strategy))
    assert codec.subject("escalation", "gc.escalations.wuhu.v1") == subject


def test_what_the_gateway_writes_is_registered_under_topic_value() -> None:
    with RegistryServer() as server:
        settings = CodecSettings(wire_format="confluent", registry_url=server.url)
        with Codec(settings, kind_topics={"receipt": "gc.receipts.v1"}) as codec:
            settings_all = load_settings()
            rr = RecordRouter(settings_all, load_rules(None), codec, lambda: 0)
            assert rr.codec is codec
            codec.schema_id("escalation", "gc.escalations.wuhu.v1")
            codec.schema_id("receipt")  # the lane encodes receipts without a topic
        assert sorted(server.store.subjects) == [
            "gc.escalations.wuhu.v1-value",
            "gc.receipts.v1-value",
        ]


def test_store_waits_for_an_unknown_fingerprint_once_per_store_change() -> None:
    codec = Codec(CodecSettings())
    calls: list[float] = []
    now = [100.0]
    store = SchemaStore(
        codec, wait_s=0.25, catch_up=lambda s: calls.append(s) or True, clock=lambda: now[0]
    )
    unknown = SINGLE_OBJECT_MAGIC + b"\x01" * 8 + b"\x00"
    for _ in range(3):
        now[0] += 5
        with pytest.raises(UnknownSchema):
            codec.decode(unknown)
    assert calls == [0.25]  # one wait, not one per record
    key, value = store_record(complaint_v2())
    store.on_record(key, value)  # the store changed: the next miss waits again
    now[0] += 5
    with pytest.raises(UnknownSchema):
        codec.decode(unknown)
    assert calls == [0.25, 0.25]


def test_one_catch_up_answers_every_miss_for_a_second() -> None:
    """Ever new random fingerprints (a hostile stream) cost one catch-up per interval."""
    codec = Codec(CodecSettings())
    calls: list[float] = []
    now = [100.0]
    SchemaStore(codec, wait_s=5.0, catch_up=lambda s: calls.append(s) or True, clock=lambda: now[0])
    for i in range(1000):
        now[0] += 0.01  # 10 s in all
        with pytest.raises(UnknownSchema):
            codec.decode(SINGLE_OBJECT_MAGIC + i.to_bytes(8, "little") + b"\x00")
    assert 9 <= len(calls) <= 11


def test_store_finds_a_schema_that_arrives_while_the_record_waits() -> None:
    codec = Codec(CodecSettings())
    schema = complaint_v2()
    key, value = store_record(schema)
    store = SchemaStore(codec, wait_s=1.0)
    store.catch_up = lambda s: store.on_record(key, value) is None
    fp = fingerprint(schema)
    assert key.decode() == fingerprint_text(fp)
    assert store.resolve(fp)
    assert codec.knows(fp)


def test_store_skips_records_it_cannot_accept(caplog: pytest.LogCaptureFixture) -> None:
    codec = Codec(CodecSettings())
    store = SchemaStore(codec, wait_s=0)
    before = set(codec.writer_fingerprints())
    key, value = store_record(complaint_v2())
    store.on_record(b"0000000000000000", value)  # stored under another key
    store.on_record(key, b"not json")
    bad_key, bad = store_record(without_description())
    store.on_record(bad_key, bad)
    store.on_record(key, None)  # tombstone
    assert set(codec.writer_fingerprints()) == before
    assert "cannot be read as complaint" in caplog.text


def test_schemas_register_refuses_what_the_reader_cannot_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avsc"
    bad.write_text(json.dumps(without_description()), encoding="utf-8")
    result = CliRunner().invoke(cli, ["schemas", "register", str(bad)])
    assert result.exit_code == 1
    assert "incompatible_schema" in result.output
    assert "description: new field without a default" in result.output
    good = tmp_path / "good.avsc"
    good.write_text(json.dumps(complaint_v2()), encoding="utf-8")
    result = CliRunner().invoke(cli, ["schemas", "register", "--dry-run", str(good)])
    assert result.exit_code == 0, result.output
    assert fingerprint_text(fingerprint(complaint_v2())) in result.output
