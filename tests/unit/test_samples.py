"""gateway.dev.samples and gateway.cities: realistic, valid, deterministic sample complaints."""

from __future__ import annotations

import collections
import re
from typing import Any

import pytest

from gateway.avro.codec import Codec, validate_complaint
from gateway.cities import BY_CODE, CITIES, GREEN_CHANNEL, city_key, green_channel_key, require
from gateway.config import CodecSettings
from gateway.dev.samples import (
    MAJOR_HEADER,
    Pacer,
    SampleFactory,
    bench_complaints,
    bench_pool,
    credit_code_valid,
    id_number_valid,
    publish,
)
from gateway.errors import UnknownCity
from gateway.routing.rules import load_rules

pytestmark = pytest.mark.unit

MOBILE = re.compile(r"^1[3-9]\d{9}$")
LANDLINE = re.compile(r"^0\d{2,3}-[2-8]\d{6,7}$")
CHINESE = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def samples() -> list[Any]:
    return list(SampleFactory(42, major_share=0.2).complaints(3000))


def test_cities_table() -> None:
    assert len(GREEN_CHANNEL) == 10 and len(CITIES) >= 30
    expected = {
        "beijing": "110000",
        "guangzhou": "440100",
        "shenzhen": "440300",
        "chongqing": "500000",
        "hangzhou": "330100",
        "hefei": "340100",
        "nanchang": "360100",
        "suzhou": "320500",
        "wuhu": "340200",
        "nanjing": "320100",
    }
    assert {c.key: c.code for c in GREEN_CHANNEL} == expected
    assert len(BY_CODE) == len(CITIES) and all(re.fullmatch(r"\d{6}", c.code) for c in CITIES)
    assert all(CHINESE.search(c.name_zh) for c in CITIES)
    assert city_key("340200") == "wuhu" and city_key("310000") == "shanghai"
    assert green_channel_key("310000") is None and green_channel_key("320100") == "nanjing"
    assert city_key("999999") is None
    with pytest.raises(UnknownCity):
        require("440000")


def test_deterministic_for_a_seed() -> None:
    a = [s.record for s in SampleFactory(9).complaints(200)]
    b = [s.record for s in SampleFactory(9).complaints(200)]
    c = [s.record for s in SampleFactory(10).complaints(200)]
    assert a == b and a != c


def test_coverage(samples: list[Any]) -> None:
    records = [s.record for s in samples]
    codes = collections.Counter(r["city_code"] for r in records)
    assert all(codes[c.code] >= 50 for c in GREEN_CHANNEL)
    assert sum(n for code, n in codes.items() if not BY_CODE[code].green_channel) > 200
    assert {r["channel"] for r in records} == {
        "APP",
        "WEB",
        "HOTLINE",
        "WECHAT",
        "EMAIL",
        "PLATFORM_12315",
        "OTHER",
    }
    assert len({r["category"] for r in records}) == 13
    assert len({r["product_category"] for r in records}) == 12
    assert len({r["complaint_id"] for r in records}) == len(records)


def test_realistic_fields(samples: list[Any]) -> None:
    for sample in samples:
        r = sample.record
        validate_complaint(r)
        consumer, merchant, order = r["consumer"], r["merchant"], r["order"]
        assert MOBILE.match(consumer["phone"]) or LANDLINE.match(consumer["phone"])
        assert 2 <= len(consumer["name"]) <= 4 and CHINESE.search(consumer["name"])
        if consumer["id_number"] is not None:
            assert id_number_valid(consumer["id_number"])
            assert consumer["id_number"][:2] == r["city_code"][:2]
        if consumer["address"] is not None:
            assert BY_CODE[r["city_code"]].name_zh in consumer["address"]
        if merchant["credit_code"] is not None:
            assert credit_code_valid(merchant["credit_code"])
            assert merchant["credit_code"][2:8] == r["city_code"]
        assert CHINESE.search(r["description"]) and "{" not in r["description"]
        if order is not None:
            assert order["amount_fen"] > 0 and order["paid_at"] < r["received_at"]


def test_check_digits() -> None:
    assert id_number_valid("11010519491231002X")  # the GB 11643 example
    assert not id_number_valid("110105194912310021")
    assert credit_code_valid("91350100M000100Y43")  # a published example code
    assert not credit_code_valid("91350100M000100Y44")


def test_majors_are_major_by_the_default_rules_and_minors_are_not(samples: list[Any]) -> None:
    rules = load_rules()
    majors = [s for s in samples if s.major]
    assert 0.15 < len(majors) / len(samples) < 0.25
    for sample in samples:
        assert rules.classify(sample.record).major is sample.major, sample.record
    assert sum(s.record["channel"] == "PLATFORM_12315" for s in majors) > len(majors) / 2


def test_bench_records_are_about_one_kilobyte() -> None:
    codec = Codec(CodecSettings())
    sizes = [len(codec.encode("complaint", r)) for r in bench_pool(128)]
    assert 900 < sum(sizes) / len(sizes) < 1200
    records = list(bench_complaints(1000, pool_size=64))
    assert len({r["complaint_id"] for r in records}) == 1000


def test_short_bench_records_are_about_380_bytes() -> None:
    codec = Codec(CodecSettings())
    records = list(bench_complaints(256, pool_size=128, description_bytes=0))
    sizes = [len(codec.encode("complaint", r)) for r in records]
    assert 340 < sum(sizes) / len(sizes) < 420


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_keeps_the_rate_without_bursting() -> None:
    clock = FakeClock()
    pacer = Pacer(100.0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        pacer.wait()
    assert clock.now - 100.0 == pytest.approx(9.99, abs=0.02)  # 1000 calls at 100/s
    clock.now += 60  # stalled for a minute: no catch-up burst afterwards
    before = clock.now
    for _ in range(100):
        pacer.wait()
    assert clock.now - before == pytest.approx(0.99, abs=0.02)
    unpaced = Pacer(None, clock=clock, sleep=clock.sleep)
    slept = len(clock.slept)
    unpaced.wait()
    assert len(clock.slept) == slept


class FakeFuture:
    def failed(self) -> bool:
        return False


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, Any]] = []
        self.flushes = 0

    def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Any = None
    ) -> FakeFuture:
        self.sent.append((topic, value, key, headers))
        return FakeFuture()

    def flush(self, timeout_s: float | None = None) -> None:
        self.flushes += 1


def test_publish_encodes_keys_and_bounds_in_flight_sends() -> None:
    producer = FakeProducer()
    codec = Codec(CodecSettings())
    samples = list(SampleFactory(1, major_share=0.5).complaints(250))
    result = publish(producer, codec, "gc.complaints.v1", iter(samples), max_in_flight=100)  # type: ignore[arg-type]
    assert result.sent == 250 and result.majors == sum(s.major for s in samples)
    assert producer.flushes == 3
    for sample, (topic, value, key, headers) in zip(samples, producer.sent, strict=True):
        assert topic == "gc.complaints.v1"
        assert key == sample.record["complaint_id"].encode()
        assert codec.decode(value).record == sample.record
        assert dict(headers)[MAJOR_HEADER] == (b"1" if sample.major else b"0")
