"""Realistic sample complaints for development, demos, tests and benchmarks.

:class:`SampleFactory` makes complaints (``schemas/complaint.avsc`` records) for the ten
green-channel cities and other known cities, on every channel, product and complaint category,
with Chinese names, addresses on real streets, plausible mobile numbers, 18-digit identity
numbers with a valid check digit (GB 11643), merchants with valid unified social credit codes
(GB 32100) and orders with amounts. A configurable share are *major*: their story sets severity
signals and category and most come through the 12315 platform, so the default routing rules
escalate them; the others trigger none of the major rules. Everything is deterministic for a
seed and a start time.

:func:`bench_complaints` repeats a pre-generated pool of ~1 KB (or ~380-byte) complaints with
fresh ids, for benchmarks that must not measure the generator. :func:`publish` sends complaints to Kafka
through :class:`gateway.kafka.clients.Producer`, paced by :class:`Pacer` (injectable clock and sleep).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from gateway.avro.codec import Codec
from gateway.cities import CITIES, GREEN_CHANNEL, City
from gateway.dev import sample_data as D
from gateway.errors import KafkaUnavailable
from gateway.kafka.clients import Producer

CHINA = timezone(timedelta(hours=8))
DEFAULT_START_MS = 1_735_660_800_000  # 2025-01-01T00:00:00+08:00
MAJOR_HEADER = "gc-sample-major"
BENCH_DESCRIPTION_BYTES = 680
MINOR_CHANNELS = (
    "APP",
    "APP",
    "APP",
    "WEB",
    "WEB",
    "HOTLINE",
    "WECHAT",
    "WECHAT",
    "EMAIL",
    "OTHER",
)
MINOR_CATEGORIES = tuple(D.MINOR_TEMPLATES)
NOT_COMPLAINTS = ("CONSULTATION", "SUGGESTION", "COOPERATION")
SIGNALS = ("safety_hazard", "injury", "media_attention", "asks_for_regulator", "group_incident")
PRODUCT_CATEGORIES = tuple(D.PRODUCTS)
_OTHER_CITIES = tuple(c for c in CITIES if not c.green_channel)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


# --- check digits ------------------------------------------------------------------------------


def id_check_digit(first17: str) -> str:
    """GB 11643 check character of a resident identity number."""
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11]


def id_number_valid(number: str) -> bool:
    return len(number) == 18 and number[:17].isdigit() and id_check_digit(number[:17]) == number[17]


def _org_check(body: str) -> str:
    total = sum(int(c, 36) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True))
    value = 11 - total % 11
    return {10: "X", 11: "0"}.get(value, str(value))


def credit_code_check(first17: str) -> str:
    """GB 32100 check character of a unified social credit code."""
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_CHARS[(31 - total % 31) % 31]


def credit_code_valid(code: str) -> bool:
    return (
        len(code) == 18
        and all(c in _USCC_CHARS for c in code)
        and credit_code_check(code[:17]) == code[17]
        and _org_check(code[8:16]) == code[16]
    )


# --- the factory -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    record: dict[str, Any]
    major: bool


class SampleFactory:
    """Deterministic complaint generator: same seed and start time, same complaints."""

    def __init__(
        self,
        seed: int = 0,
        *,
        major_share: float = 0.1,
        start_ms: int = DEFAULT_START_MS,
        green_share: float = 0.85,
        interval_ms: int = 1000,
    ) -> None:
        if not 0.0 <= major_share <= 1.0:
            raise ValueError("major_share must be between 0 and 1")
        self.seed = seed
        self.major_share = major_share
        self.green_share = green_share
        self.start_ms = start_ms
        self.interval_ms = interval_ms
        self._rng = random.Random(seed)
        self._index = 0
        self._date = datetime.fromtimestamp(start_ms / 1000, CHINA).strftime("%Y%m%d")
        self._merchants: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def complaints(self, count: int) -> Iterator[Sample]:
        for _ in range(count):
            yield self.next()

    def next(self, *, major: bool | None = None, city: City | None = None) -> Sample:
        """The next complaint; ``major`` and ``city`` force what is otherwise drawn."""
        rng = self._rng
        index = self._index
        self._index += 1
        if major is None:
            major = rng.random() < self.major_share
        if city is None:
            pool = GREEN_CHANNEL if rng.random() < self.green_share else _OTHER_CITIES
            city = rng.choice(pool)
        if major:
            category, products, template, signals = rng.choice(D.MAJOR_TEMPLATES)
        else:
            category = rng.choice(MINOR_CATEGORIES)
            products, template, signals = (), rng.choice(D.MINOR_TEMPLATES[category]), ()
        product = rng.choice(products or PRODUCT_CATEGORIES)
        record: dict[str, Any] = {
            "complaint_id": f"CP{self._date}{self.seed % 10_000:04d}{index:08d}",
            "received_at": self.start_ms
            + index * self.interval_ms
            + rng.randrange(self.interval_ms),
            "channel": "OTHER",
            "city_code": city.code,
            "consumer": self._consumer(city),
            "merchant": self._merchant(city, product),
            "order": None,
            "product_category": product,
            "category": category,
            "description": "",
            "signals": {name: False for name in SIGNALS} | {"repeat_count": 0},
            "language": "zh-CN",
        }
        for signal in signals:
            record["signals"][signal] = True
        amount = self._story(record, major, city)
        record["description"] = self._text(template, record, amount)
        return Sample(record, major)

    def _story(self, record: dict[str, Any], major: bool, city: City) -> int:
        """Channel, repeat count and order of the story; returns the amount in yuan."""
        rng = self._rng
        signals = record["signals"]
        if major:
            record["channel"] = (
                "PLATFORM_12315" if rng.random() < 0.7 else rng.choice(MINOR_CHANNELS)
            )
            signals["repeat_count"] = rng.randint(2, 5) if record["category"] == "QUALITY" else 0
            amount = rng.randint(5_000, 80_000)
            record["order"] = self._order(record, amount)
            return amount
        record["channel"] = rng.choice(MINOR_CHANNELS)
        signals["repeat_count"] = rng.choice((0, 0, 0, 1))
        amount = rng.randint(*D.AMOUNTS[record["product_category"]])
        if record["category"] not in NOT_COMPLAINTS or rng.random() < 0.3:
            record["order"] = self._order(record, amount)
        if record["channel"] == "HOTLINE" and city.key in D.AREA_CODES and rng.random() < 0.5:
            number = f"{rng.randint(2, 8)}{rng.randrange(10**6, 10**7)}"
            record["consumer"]["phone"] = f"{D.AREA_CODES[city.key]}-{number}"
        return amount

    def _text(self, template: str, record: dict[str, Any], amount: int) -> str:
        rng = self._rng
        order = record["order"]
        if order is not None:
            bought = datetime.fromtimestamp(order["paid_at"] / 1000, CHINA)
        else:
            received = datetime.fromtimestamp(record["received_at"] / 1000, CHINA)
            bought = received - timedelta(days=rng.randint(1, 40))
        product = record["product_category"]
        return template.format(
            date=f"{bought.year}年{bought.month}月{bought.day}日",
            merchant=record["merchant"]["name"],
            product=rng.choice(D.PRODUCTS[product]),
            amount=amount,
            days=rng.randint(3, 30),
            extra=rng.randint(5, 300),
            defect=rng.choice(D.DEFECTS),
            claim=rng.choice(D.CLAIMS),
            industry=D.INDUSTRY[product],
            people=rng.randint(3, 6),
            repeat=record["signals"]["repeat_count"],
        )

    # parts

    def _consumer(self, city: City) -> dict[str, Any]:
        rng = self._rng
        district, district_code = rng.choice(D.DISTRICTS[city.key])
        return {
            "name": self._name(),
            "phone": rng.choice(D.MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}",
            "id_number": self._id_number(district_code) if rng.random() < 0.7 else None,
            "address": self._address(city, district) if rng.random() < 0.9 else None,
            "email": self._email() if rng.random() < 0.3 else None,
        }

    def _name(self) -> str:
        rng = self._rng
        surname = rng.choice(D.COMPOUND_SURNAMES) if rng.random() < 0.02 else rng.choice(D.SURNAMES)
        return surname + "".join(rng.choice(D.GIVEN_CHARS) for _ in range(rng.choice((1, 2, 2))))

    def _id_number(self, district_code: str) -> str:
        rng = self._rng
        birth = datetime(1955, 1, 1) + timedelta(days=rng.randrange(50 * 365))
        first17 = f"{district_code}{birth:%Y%m%d}{rng.randrange(1000):03d}"
        return first17 + id_check_digit(first17)

    def _address(self, city: City, district: str) -> str:
        rng = self._rng
        street = rng.choice(D.STREETS.get(city.key, D.COMMON_STREETS))
        prefix = "" if city.province_zh == city.name_zh else city.province_zh
        return (
            f"{prefix}{city.name_zh}{district}{street}{rng.randint(1, 999)}号"
            f"{rng.choice(D.COMPOUNDS)}{rng.randint(1, 30)}栋{rng.randint(1, 6)}单元"
            f"{rng.randint(1, 33)}{rng.randint(1, 4):02d}室"
        )

    def _email(self) -> str:
        rng = self._rng
        return f"{rng.randrange(10**6, 10**10)}@{rng.choice(D.EMAIL_DOMAINS)}"

    def _merchant(self, city: City, product: str) -> dict[str, Any]:
        """One of a few merchants per city and product, so the same merchants come back."""
        pool = self._merchants.setdefault((city.key, product), [])
        if len(pool) < 4 and (not pool or self._rng.random() < 0.3):
            pool.append(self._new_merchant(city, product))
        return dict(self._rng.choice(pool))

    def _new_merchant(self, city: City, product: str) -> dict[str, Any]:
        rng = self._rng
        short = city.name_zh.removesuffix("市")
        name = f"{short}{rng.choice(D.MERCHANT_WORDS)}{D.INDUSTRY[product]}有限公司"
        body = "".join(rng.choice(_USCC_CHARS) for _ in range(8))
        first17 = f"91{city.code}{body}{_org_check(body)}"
        return {
            "merchant_id": f"M{city.code[:4]}{rng.randrange(10**6):06d}",
            "name": name,
            "credit_code": first17 + credit_code_check(first17) if rng.random() < 0.9 else None,
        }

    def _order(self, record: dict[str, Any], amount_yuan: int) -> dict[str, Any]:
        rng = self._rng
        paid = record["received_at"] - rng.randint(1, 40) * 86_400_000 - rng.randrange(86_400_000)
        day = datetime.fromtimestamp(paid / 1000, CHINA)
        return {
            "order_id": f"{day:%Y%m%d}{rng.randrange(10**12):012d}",
            "amount_fen": amount_yuan * 100 + rng.choice((0, 0, 50, 90, 99)),
            "currency": "CNY",
            "paid_at": paid,
        }


# --- benchmarks --------------------------------------------------------------------------------


def bench_pool(
    size: int = 256,
    seed: int = 0,
    *,
    major_share: float = 0.1,
    description_bytes: int = BENCH_DESCRIPTION_BYTES,
) -> list[dict[str, Any]]:
    """``size`` complaints of about 1 KB encoded: descriptions carry follow-up sentences up to
    ``description_bytes``; 0 keeps the factory's own short ones (about 380 bytes encoded)."""
    factory = SampleFactory(seed, major_share=major_share)
    pool = []
    for sample in factory.complaints(size):
        record = sample.record
        while len(record["description"].encode()) < description_bytes:
            extra = factory.next(major=False).record["description"]
            record["description"] += f"补充说明：{extra}"
        pool.append(record)
    return pool


def bench_complaints(
    count: int,
    seed: int = 0,
    *,
    pool_size: int = 256,
    description_bytes: int = BENCH_DESCRIPTION_BYTES,
) -> Iterator[dict[str, Any]]:
    """``count`` complaints (~1 KB, or ~380 bytes with ``description_bytes=0``), fast: a
    pre-generated pool repeated with fresh ids."""
    pool = bench_pool(pool_size, seed, description_bytes=description_bytes)
    for i in range(count):
        yield {**pool[i % pool_size], "complaint_id": f"BENCH{seed % 10_000:04d}{i:010d}"}


# --- publishing --------------------------------------------------------------------------------


class Pacer:
    """Paces calls to ``rate`` per second (None: unpaced) without bursting to catch up."""

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        slack_s: float = 0.001,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._slack = slack_s
        self._next: float | None = None

    def wait(self) -> None:
        if not self._interval:
            return
        now = self._clock()
        if self._next is None or self._next < now - self._interval:
            self._next = now  # first call, or we fell behind: never burst to catch up
        ahead = self._next - now
        if ahead > self._slack:
            self._sleep(ahead)
        self._next += self._interval


@dataclass(frozen=True, slots=True)
class PublishResult:
    sent: int
    majors: int
    bytes: int
    elapsed_s: float

    @property
    def per_second(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0


def publish(
    producer: Producer,
    codec: Codec,
    topic: str,
    samples: Iterator[Sample],
    *,
    pacer: Pacer | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_in_flight: int = 5_000,
) -> PublishResult:
    """Encode and send every sample (key = complaint id), then flush and check every send."""
    pacer = pacer or Pacer(None)
    started = clock()
    sent = majors = size = 0
    futures: list[Any] = []
    for sample in samples:
        pacer.wait()
        value = codec.encode("complaint", sample.record, topic)
        headers = [(MAJOR_HEADER, b"1" if sample.major else b"0")]
        futures.append(
            producer.send(topic, value, key=sample.record["complaint_id"].encode(), headers=headers)
        )
        sent += 1
        majors += sample.major
        size += len(value)
        if len(futures) >= max_in_flight:
            _settle(producer, futures)
    _settle(producer, futures)
    return PublishResult(sent, majors, size, clock() - started)


def _settle(producer: Producer, futures: list[Any]) -> None:
    """Wait for queued sends; raise the first failure (wrapped by the producer's errors)."""
    producer.flush()
    failed = [f for f in futures if f.failed()]
    futures.clear()
    if failed:
        raise KafkaUnavailable(f"{len(failed)} sends failed, first: {failed[0].exception!r}")


def utc_now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
