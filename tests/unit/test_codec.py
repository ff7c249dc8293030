"""gateway.avro.codec: both wire formats, schema evolution, and hostile input."""

from __future__ import annotations

import copy
import io
import json
import random
import time
import tracemalloc
from typing import Any

import httpx
import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from gateway.avro.codec import (
    Codec,
    Decoded,
    current_schemas,
    fingerprint,
    validate_complaint,
)
from gateway.avro.registry import SchemaRegistry
from gateway.avro.schemas_path import schema_text
from gateway.config import CodecSettings
from gateway.dev.registry import RegistryServer
from gateway.dev.samples import SampleFactory
from gateway.errors import (
    ConfigError,
    DecodeError,
    InvalidComplaint,
    OversizedRecord,
    RecordError,
    TrailingBytes,
    TransientError,
    UnknownCity,
    UnknownSchema,
)

pytestmark = pytest.mark.unit

SO = CodecSettings()


def zigzag(n: int) -> bytes:
    """Avro varint (zig-zag) encoding of one long."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def raw(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text(kind))
    return schema


def single_object(schema: Any, record: dict[str, Any]) -> bytes:
    """Encode with fastavro directly (another writer than the codec)."""
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fingerprint(schema))
    schemaless_writer(buf, parse_schema(copy.deepcopy(schema)), record)
    return buf.getvalue()


def escalation() -> dict[str, Any]:
    return {
        "escalation_id": "esc-1",
        "complaint_id": "CP1",
        "city": "wuhu",
        "city_code": "340200",
        "created_at": 1_735_660_900_000,
        "received_at": 1_735_660_800_000,
        "handling_deadline": 1_736_870_400_000,
        "channel": "PLATFORM_12315",
        "rule_id": "safety-hazard",
        "consumer": {
            "name": "王芳",
            "phone": "13912345678",
            "id_number": None,
            "address": "安徽省芜湖市镜湖区中山路1号",
            "email": None,
        },
        "merchant": {
            "merchant_id": "M3402000001",
            "name": "芜湖恒达家居有限公司",
            "credit_code": None,
        },
        "order_id": "20241201000000000001",
        "amount_fen": 1_299_900,
        "product_category": "HOME",
        "category": "SAFETY",
        "description": "电暖器起火，家人烧伤。",
        "severity": ["safety_hazard", "injury"],
    }


def receipt() -> dict[str, Any]:
    return {
        "escalation_id": "esc-1",
        "complaint_id": "CP1",
        "city": "wuhu",
        "outcome": "ACCEPTED",
        "case_number": "WH2025-000123",
        "reason": None,
        "attempts": 2,
        "first_attempt_at": 1_735_660_901_000,
        "completed_at": 1_735_660_902_500,
        "latency_ms": 2_500,
    }


@pytest.fixture(scope="module")
def complaints() -> list[dict[str, Any]]:
    return [s.record for s in SampleFactory(11, major_share=0.3).complaints(300)]


@pytest.fixture(scope="module")
def registry() -> Any:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def registry_url(registry: RegistryServer) -> str:
    return registry.url


@pytest.fixture
def codec() -> Codec:
    return Codec(SO)


# --- round trips -------------------------------------------------------------------------------


def test_fingerprint_is_crc64_avro_of_the_canonical_form() -> None:
    # test vectors of the Avro specification (schema-tests.txt), as little-endian bytes
    assert fingerprint("int") == (8247732601305521295).to_bytes(8, "little")
    assert fingerprint("null") == (7195948357588979594).to_bytes(8, "little")
    assert fingerprint("string") == (-8142146995180207161).to_bytes(8, "little", signed=True)
    # docs and logical types are not part of the canonical form
    assert fingerprint({"type": "long", "logicalType": "timestamp-millis"}) == fingerprint("long")


def test_single_object_round_trip_every_kind(
    codec: Codec, complaints: list[dict[str, Any]]
) -> None:
    for kind, record in [("escalation", escalation()), ("receipt", receipt())] + [
        ("complaint", c) for c in complaints
    ]:
        data = codec.encode(kind, record)  # type: ignore[arg-type]
        info = current_schemas()[kind]  # type: ignore[index]
        assert data[:2] == b"\xc3\x01" and data[2:10] == info.fingerprint
        decoded = codec.decode(data)
        assert decoded == Decoded(kind, record, info.fingerprint, None)  # type: ignore[arg-type]


def test_confluent_round_trip_through_the_dev_registry(
    registry_url: str, complaints: list[dict[str, Any]]
) -> None:
    with Codec(CodecSettings(wire_format="confluent", registry_url=registry_url)) as producer:
        data = [producer.encode("complaint", c, "gc.complaints.v1") for c in complaints]
        schema_id = producer.schema_id("complaint", "gc.complaints.v1")
    assert all(d[:5] == b"\x00" + schema_id.to_bytes(4, "big") for d in data)
    with SchemaRegistry(registry_url) as registry:
        assert registry.latest("gc.complaints.v1-value").schema_id == schema_id
    # a consumer that has never seen the id fetches the schema once, by id
    consumer = Codec(CodecSettings(registry_url=registry_url))
    for record, message in zip(complaints, data, strict=True):
        decoded = consumer.decode(message)
        assert decoded.record == record and decoded.kind == "complaint"
        assert decoded.schema_id == schema_id
        assert decoded.writer_fingerprint == current_schemas()["complaint"].fingerprint
    # the same codec reads single-object messages too (format detected by the first byte)
    assert consumer.decode(Codec(SO).encode("receipt", receipt())).record == receipt()
    consumer.close()


def test_timestamps_stay_epoch_millis(codec: Codec) -> None:
    record = codec.decode(codec.encode("receipt", receipt())).record
    assert type(record["completed_at"]) is int


def test_decode_as_checks_the_kind(codec: Codec) -> None:
    data = codec.encode("receipt", receipt())
    assert codec.decode_as("receipt", data) == receipt()
    with pytest.raises(UnknownSchema) as err:
        codec.decode_as("complaint", data)
    assert err.value.reason == "wrong_kind"


def test_confluent_needs_a_registry(registry_url: str) -> None:
    with pytest.raises(ConfigError):
        Codec(CodecSettings(wire_format="confluent"))


def test_confluent_without_topic_uses_the_record_name_subject(registry_url: str) -> None:
    settings = CodecSettings(wire_format="confluent", registry_url=registry_url)
    with Codec(settings) as codec, SchemaRegistry(registry_url) as registry:
        data = codec.encode("receipt", receipt())
        latest = registry.latest("com.greenchannel.v1.DeliveryReceipt")
        assert data[1:5] == latest.schema_id.to_bytes(4, "big")
        assert codec.decode(data).record == receipt()


# --- encoding errors ---------------------------------------------------------------------------


def test_unencodable_record_names_the_field_but_not_the_data(codec: Codec) -> None:
    bad = escalation() | {"amount_fen": "一千元"}
    with pytest.raises(RecordError) as err:
        codec.encode("escalation", bad)
    assert err.value.reason == "unencodable"
    assert "amount_fen" in str(err.value) and "一千元" not in str(err.value)
    missing = {k: v for k, v in receipt().items() if k != "attempts"}
    with pytest.raises(RecordError):
        codec.encode("receipt", missing)


def test_oversized_encode_is_refused() -> None:
    small = Codec(CodecSettings(max_message_bytes=1024))
    with pytest.raises(OversizedRecord):
        small.encode("escalation", escalation() | {"description": "长" * 400})


# --- schema evolution --------------------------------------------------------------------------


def old_complaint_schema() -> dict[str, Any]:
    """An older Complaint: no language field, no group_incident signal, fewer channels."""
    schema = raw("complaint")
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "language"]
    signals = next(f for f in schema["fields"] if f["name"] == "signals")["type"]
    signals["fields"] = [f for f in signals["fields"] if f["name"] != "group_incident"]
    channel = next(f for f in schema["fields"] if f["name"] == "channel")["type"]
    channel["symbols"] = [s for s in channel["symbols"] if s != "WECHAT"]
    return schema


def newer_complaint_schema() -> dict[str, Any]:
    """A newer Complaint: an extra field, an extra channel, an int widened to long."""
    schema = raw("complaint")
    schema["fields"].append({"name": "priority", "type": "int", "default": 0, "doc": "new"})
    channel = next(f for f in schema["fields"] if f["name"] == "channel")["type"]
    channel["symbols"].insert(0, "DOUYIN")
    return schema


def test_older_writer_is_read_with_the_current_schema(
    codec: Codec, complaints: list[dict[str, Any]]
) -> None:
    old = old_complaint_schema()
    fp = codec.add_writer("complaint", old)
    assert fp == fingerprint(old) != current_schemas()["complaint"].fingerprint
    for record in complaints[:50]:
        written = copy.deepcopy(record)
        del written["language"]
        del written["signals"]["group_incident"]
        if written["channel"] == "WECHAT":
            written["channel"] = "APP"
        decoded = codec.decode(single_object(old, written))
        assert decoded.writer_fingerprint == fp
        expected = copy.deepcopy(written)
        expected["language"] = "zh-CN"
        expected["signals"]["group_incident"] = False
        assert decoded.record == expected


def test_newer_writer_is_read_with_the_current_schema(codec: Codec) -> None:
    new = newer_complaint_schema()
    codec.add_writer("complaint", new)
    record = SampleFactory(3).next().record | {"priority": 5, "channel": "DOUYIN"}
    decoded = codec.decode(single_object(new, record))
    expected = {k: v for k, v in record.items() if k != "priority"} | {"channel": "OTHER"}
    assert decoded.record == expected  # unknown symbol -> the enum's default


def test_older_writer_by_registry_id(registry_url: str) -> None:
    with SchemaRegistry(registry_url) as registry:
        old_id = registry.register("evolving-value", old_complaint_schema())
        assert registry.is_compatible("evolving-value", raw("complaint"))
        new_id = registry.register("evolving-value", raw("complaint"))
    assert new_id != old_id
    record = SampleFactory(5).next().record
    del record["language"]
    del record["signals"]["group_incident"]
    record["channel"] = "HOTLINE"
    body = single_object(old_complaint_schema(), record)[10:]
    with Codec(CodecSettings(registry_url=registry_url)) as codec:
        decoded = codec.decode(b"\x00" + old_id.to_bytes(4, "big") + body)
    assert decoded.schema_id == old_id and decoded.record["language"] == "zh-CN"


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ("{not json", "invalid_schema"),
        ({"type": "record", "name": "Unrelated", "fields": []}, "wrong_kind"),
        ({"type": "record", "name": "Complaint", "fields": []}, "incompatible_schema"),
    ],
)
def test_unreadable_writer_schemas_are_refused(codec: Codec, schema: Any, reason: str) -> None:
    with pytest.raises(UnknownSchema) as err:
        codec.add_writer(None, schema)
    assert err.value.reason == reason


def test_writer_of_another_kind_is_refused(codec: Codec) -> None:
    with pytest.raises(UnknownSchema) as err:
        codec.add_writer("complaint", raw("receipt"))
    assert err.value.reason == "wrong_kind"


# --- hostile input -----------------------------------------------------------------------------


def reason_of(codec: Codec, data: bytes) -> str:
    with pytest.raises(DecodeError) as err:
        codec.decode(data)
    return err.value.reason


def test_size_cap_is_checked_before_decoding() -> None:
    codec = Codec(CodecSettings(max_message_bytes=1024))
    header = current_schemas()["receipt"].header
    with pytest.raises(OversizedRecord):
        codec.decode(header + b"\x00" * 1015)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x7b\x22json\x22: 1}", "bad_magic"),
        (b"\xc3\x02" + b"\x00" * 20, "bad_magic"),
        (b"\xc3\x01\x01\x02", "truncated"),
        (b"\x00\x00\x01", "truncated"),
        (b"\xc3\x01" + b"\xee" * 8 + b"\x00", "unknown_schema"),
        (b"\x00\x00\x00\x00\x07\x00", "unknown_schema"),  # no registry configured
    ],
)
def test_bad_headers(codec: Codec, data: bytes, reason: str) -> None:
    assert reason_of(codec, data) == reason


def test_every_truncation_is_a_decode_error(codec: Codec) -> None:
    data = codec.encode("escalation", escalation())
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            codec.decode(data[:cut])


def test_trailing_bytes(codec: Codec) -> None:
    data = codec.encode("receipt", receipt())
    with pytest.raises(TrailingBytes):
        codec.decode(data + b"\x00")


def complaint_prefix(codec: Codec) -> bytes:
    """Header + complaint_id "A" + received_at 0: the channel enum comes next."""
    return current_schemas()["complaint"].header + b"\x02A" + b"\x00"


def test_bad_enum_index(codec: Codec) -> None:
    prefix = complaint_prefix(codec)
    assert reason_of(codec, prefix + zigzag(7)) == "bad_index"  # 7 symbols: 0..6
    assert reason_of(codec, prefix + zigzag(-1)) == "bad_index"  # fastavro alone reads "OTHER"
    assert reason_of(codec, prefix + zigzag(-7)) == "bad_index"
    assert reason_of(codec, prefix + zigzag(2**40)) == "bad_index"


def test_bad_union_index(codec: Codec) -> None:
    # channel APP, city_code "1", consumer name "A", phone "1", then the id_number union
    prefix = complaint_prefix(codec) + b"\x00" + b"\x021" + b"\x02A" + b"\x021"
    assert reason_of(codec, prefix + zigzag(2) + b"\x00") == "bad_index"
    assert reason_of(codec, prefix + zigzag(-1) + b"\x02X") == "bad_index"


def test_invalid_utf8(codec: Codec) -> None:
    data = codec.encode("receipt", receipt() | {"escalation_id": "abcd"})
    bad = data.replace(b"\x08abcd", b"\x08\xff\xfeab", 1)
    assert reason_of(codec, bad) == "invalid_utf8"


def test_negative_and_huge_lengths(codec: Codec) -> None:
    header = current_schemas()["receipt"].header
    assert reason_of(codec, header + zigzag(-5) + b"abc") == "truncated"
    assert reason_of(codec, header + zigzag(2**62) + b"abc") == "truncated"
    assert reason_of(codec, header + b"\xff" * 12) == "truncated"  # endless varint


def escalation_up_to_severity() -> bytes:
    """A minimal Escalation body up to its severity array (array<string>)."""
    strings4, longs3 = b"\x00" * 4, b"\x00" * 3
    consumer = b"\x00\x00" + b"\x00" * 3
    merchant = b"\x00\x00" + b"\x00"
    return strings4 + longs3 + b"\x00" + b"\x00" + consumer + merchant + b"\x00\x00" + b"\x00" * 3


def test_array_bomb_fails_fast(codec: Codec) -> None:
    """A message declaring 30 million array items is a typed error that never allocates for
    them (a list of 30 million would be 240 MB): each item costs >= 1 byte, EOF after 5."""
    header = current_schemas()["escalation"].header
    bomb = header + escalation_up_to_severity() + zigzag(30_000_000) + b"\x00" * 5
    assert len(bomb) < 64
    reason_of(codec, bomb)  # warm: the first decode builds the reader
    tracemalloc.start()
    try:
        assert reason_of(codec, bomb) == "truncated"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024, peak


def zero_width_bomb_schema() -> dict[str, Any]:
    """An Escalation writer with an extra array of nulls (readers skip it... item by item)."""
    schema = raw("escalation")
    schema["fields"].append(
        {"name": "pad", "type": {"type": "array", "items": "null"}, "default": []}
    )
    return schema


def test_zero_width_items_are_a_real_bomb_in_plain_fastavro() -> None:
    """Control: without the codec's guard fastavro spins through every declared item."""
    writer = parse_schema(
        {
            "type": "record",
            "name": "Bomb",
            "fields": [{"name": "pad", "type": {"type": "array", "items": "null"}}],
        }
    )
    record = schemaless_reader(io.BytesIO(zigzag(1_000_000) + b"\x00"), writer, None)
    assert isinstance(record, dict)
    assert len(record["pad"]) == 1_000_000  # from 5 bytes


def test_zero_width_bomb_writer_is_refused_by_fingerprint(codec: Codec) -> None:
    with pytest.raises(UnknownSchema) as err:
        codec.add_writer("escalation", zero_width_bomb_schema())
    assert err.value.reason == "unsafe_schema"
    bomb = (
        b"\xc3\x01"
        + fingerprint(zero_width_bomb_schema())
        + escalation_up_to_severity()
        + b"\x00"
        + zigzag(30_000_000)
        + b"\x00"
    )
    assert reason_of(codec, bomb) == "unknown_schema"  # never read with the refused writer


def test_zero_width_bomb_writer_is_refused_by_registry_id(registry: RegistryServer) -> None:
    registry_url = registry.url
    with SchemaRegistry(registry_url) as client:
        schema_id = client.register("bomb-value", zero_width_bomb_schema())
    bomb = (
        b"\x00"
        + schema_id.to_bytes(4, "big")
        + escalation_up_to_severity()
        + b"\x00"
        + zigzag(30_000_000)
        + b"\x00"
    )
    asked = len(registry.requests())
    with Codec(CodecSettings(registry_url=registry_url)) as codec:
        for _ in range(3):  # after the first time from the negative cache
            assert reason_of(codec, bomb) == "unsafe_schema"
    assert registry.requests()[asked:] == [("GET", f"/schemas/ids/{schema_id}")]


def test_recursive_writer_is_refused(codec: Codec) -> None:
    schema = raw("receipt")
    schema["fields"].append({"name": "next", "type": ["null", "DeliveryReceipt"], "default": None})
    with pytest.raises(UnknownSchema) as err:
        codec.add_writer("receipt", schema)
    assert err.value.reason == "unsafe_schema"


def test_unknown_registry_id_is_cached_as_unknown(registry_url: str) -> None:
    with Codec(CodecSettings(registry_url=registry_url)) as codec:
        for _ in range(2):
            assert reason_of(codec, b"\x00\x00\x01\x00\x00\x00") == "unknown_schema"


def test_registry_outage_is_transient_not_a_decode_error() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error_code": 50003, "message": "unavailable"})

    registry = SchemaRegistry("http://registry.invalid", transport=httpx.MockTransport(down))
    with registry, pytest.raises(TransientError) as err:
        Codec(SO, registry).decode(b"\x00\x00\x00\x00\x05\x00")
    assert err.value.reason == "registry_unavailable"


def test_fuzz_only_decode_errors(codec: Codec, complaints: list[dict[str, Any]]) -> None:
    """Mutated valid messages and random bytes: a record or a DecodeError, nothing else."""
    rng = random.Random(20250101)
    valid = [codec.encode("complaint", c) for c in complaints[:40]]
    valid += [codec.encode("escalation", escalation()), codec.encode("receipt", receipt())]
    outcomes = {"ok": 0, "error": 0}
    started = time.perf_counter()
    for i in range(6000):
        data = bytearray(rng.choice(valid))
        action = i % 6
        if action == 0:  # flip bytes in the body
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(10, len(data))] = rng.randrange(256)
        elif action == 1:  # truncate
            del data[rng.randrange(len(data)) :]
        elif action == 2:  # insert garbage
            pos = rng.randrange(10, len(data))
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif action == 3:  # delete a slice
            pos = rng.randrange(10, len(data))
            del data[pos : pos + rng.randint(1, 16)]
        elif action == 4:  # random body after a valid header
            data = data[:10] + rng.randbytes(rng.randint(0, 300))
        else:  # random bytes
            data = bytearray(rng.randbytes(rng.randint(0, 64)))
            if rng.random() < 0.5:
                data[:1] = rng.choice([b"\x00", b"\xc3"])
        try:
            codec.decode(bytes(data))
            outcomes["ok"] += 1
        except DecodeError as exc:
            assert exc.reason and exc.reason.isidentifier()
            outcomes["error"] += 1
    assert outcomes["error"] > 4000
    assert time.perf_counter() - started < 20


# --- business validation -----------------------------------------------------------------------


def test_validate_complaint(complaints: list[dict[str, Any]]) -> None:
    for record in complaints:
        validate_complaint(record)
    good = complaints[0]
    validate_complaint(good | {"city_code": "310000"})  # Shanghai: known, no green channel
    for broken in (
        good | {"complaint_id": " "},
        good | {"description": ""},
        good | {"consumer": good["consumer"] | {"phone": ""}},
        good | {"merchant": good["merchant"] | {"merchant_id": ""}},
        good | {"order": {"order_id": "", "amount_fen": 1, "currency": "CNY", "paid_at": None}},
    ):
        with pytest.raises(InvalidComplaint) as err:
            validate_complaint(broken)
        assert not isinstance(err.value, UnknownCity)
    for code in ("999999", "11000", "1100000", "北京", ""):
        with pytest.raises(UnknownCity):
            validate_complaint(good | {"city_code": code})
