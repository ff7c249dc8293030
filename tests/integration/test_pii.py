"""Personal data never leaves in clear through logs, dead-letter headers, /metrics or the DLQ CLI.

Canary personal data (a unique Chinese name, mobile number, resident ID number, address and
e-mail per complaint) is seeded into complaints that take every path of a real
``greenchannel run`` process (JSON logs at DEBUG):

* valid major complaints, escalated and accepted by their bureau;
* complaints the router dead-letters (missing field, unknown city, undecodable bytes);
* escalations a bureau rejects with an answer that echoes everything it was sent (JSON, form
  and SOAP bureaus), which the deliverer dead-letters with the bureau's response.

Then no canary may appear, in clear or in a trivially decodable form (JSON ``\\u`` escapes,
percent-encoding, XML character references), in the process's log, any dead-letter header,
/metrics, the receipts, or ``greenchannel dlq list/show`` output.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from gateway.avro.codec import Codec
from gateway.cities import CITIES
from gateway.config import Settings
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.samples import Sample, SampleFactory, id_check_digit
from gateway.kafka.clients import Producer, Record
from gateway.topics import Topics
from tests.conftest import TopicFactory
from tests.helpers import cli_output, echoing, read_all
from tests.integration.delivery_kit import accepted_ids, wait_until
from tests.integration.run_kit import GatewayRun, expected_escalations, run_config

pytestmark = pytest.mark.integration
_CITY = {c.key: c for c in CITIES}
ACCEPTING = ("beijing", "hangzhou", "shenzhen")
ECHOING = ("nanjing", "wuhu", "guangzhou")  # JSON + HMAC, form + SM3 (form answer), SOAP
FIELDS = ("name", "phone", "id", "address", "email")
RARE = "翀彧骞翊燊珩琬瑄昶晟煜烨琮瑾璟睿祎禛筠箐翎骅骐"


@dataclass(frozen=True)
class Canary:
    name: str
    phone: str
    id_number: str
    address: str
    email: str

    @staticmethod
    def make(n: int, tag: str, city_zh: str) -> Canary:
        digits = int(tag, 16)
        first17 = f"340202198805{n:02d}{(digits + n) % 1000:03d}"
        return Canary(
            name=f"诸葛{RARE[n]}",
            phone=f"139{(digits + n * 7919) % 10**8:08d}",
            id_number=first17 + id_check_digit(first17),
            address=f"{city_zh}镜湖区灿星路{100 + n}号翡翠园{n + 1}栋{n + 2}单元{n + 3}01室",
            email=f"canary{n}.{tag}@example.cn",
        )

    def consumer(self) -> dict[str, str]:
        return {
            "name": self.name,
            "phone": self.phone,
            "id_number": self.id_number,
            "address": self.address,
            "email": self.email,
        }


def forms(value: str) -> set[str]:
    """The value in clear and in encodings a reader undoes without effort."""
    return {
        value,
        json.dumps(value)[1:-1],
        quote(value),
        quote_plus(value),
        "".join(f"&#{ord(c)};" for c in value),
        "".join(f"&#x{ord(c):x};" for c in value),
    }


def find_leaks(surface: str, text: str, canaries: Iterable[Canary]) -> list[str]:
    found = []
    for canary in canaries:
        for field, value in zip(FIELDS, astuple(canary), strict=True):
            if any(form in text for form in forms(value)):
                found.append(f"{surface}: {field} {value!r}")
    return found


def dlq_cli(config: Path, *args: str) -> str:
    return cli_output(["dlq", *args], config=config)


def headers_text(records: list[Record]) -> str:
    return "\n".join(f"{k}: {v.decode('utf-8', 'replace')}" for r in records for k, v in r.headers)


def test_canary_personal_data_never_appears_in_logs_headers_metrics_or_dlq_output(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    bureaus: BureauSimulator,
    tls_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic_factory.create_all()
    settings = settings_factory()
    t = Topics(settings.topics.prefix)
    tag = uuid.uuid4().hex[:8]
    echoed: list[bytes] = []
    for name in bureaus.names():
        bureaus.city(name).reset_faults()
        bureaus.city(name).clear()
    for name in ECHOING:
        monkeypatch.setattr(bureaus.city(name), "_open", echoing(bureaus.city(name), echoed))

    factory = SampleFactory(seed=71, major_share=1.0)
    canaries: list[Canary] = []
    good: list[Sample] = []
    to_router_dlq: list[dict[str, object]] = []
    for n, city in enumerate(ACCEPTING + ECHOING):
        record = factory.next(major=True, city=_CITY[city]).record
        canary = Canary.make(n, tag, _CITY[city].name_zh)
        canaries.append(canary)
        record["consumer"] = canary.consumer()
        record["description"] = f"本人{canary.name}（{canary.phone}）投诉：{record['description']}"
        good.append(Sample(record, True))
    for n, change in enumerate(({"description": ""}, {"city_code": "999999"}), start=10):
        record = factory.next(major=True, city=_CITY["wuhu"]).record
        canary = Canary.make(n, tag, "芜湖市")
        canaries.append(canary)
        to_router_dlq.append(record | {"consumer": canary.consumer()} | change)
    garbage = Canary.make(20, tag, "合肥市")
    canaries.append(garbage)
    expected = expected_escalations(settings, good)
    assert sorted(expected.values()) == sorted(ACCEPTING + ECHOING)

    config = run_config(tmp_path / "gc.yaml", settings, bureaus, tls_dir, log_level="DEBUG")
    run = GatewayRun(config, tmp_path / "run.log").start()
    try:
        run.wait_ready()
        codec = Codec(settings.codec)
        producer = Producer(settings.kafka, linger_ms=1)
        for record in [s.record for s in good] + to_router_dlq:
            value = codec.encode("complaint", record, t.complaints)
            producer.send(t.complaints, value, key=str(record["complaint_id"]).encode())
        raw = json.dumps(garbage.consumer(), ensure_ascii=False).encode()
        producer.send(t.complaints, raw, key=b"garbage-" + tag.encode())
        producer.flush(30)
        producer.close()

        bootstrap = settings.kafka.bootstrap_servers
        router_dlq = read_all(bootstrap, [t.dlq_complaints], expect=3, timeout_s=60)
        delivery_dlq = read_all(bootstrap, [t.dlq_escalations], expect=3, timeout_s=90)
        assert wait_until(
            lambda: all(
                e in accepted_ids(bureaus, c) for e, c in expected.items() if c in ACCEPTING
            ),
            60,
        ), run.tail()
        metrics = run.get("/metrics")[1]
        assert run.terminate().code == 0, run.tail()
    finally:
        run.kill()

    assert len(router_dlq) == 3 and len(delivery_dlq) == 3
    assert {r.header("gc-dlq-city") for r in delivery_dlq} == {c.encode() for c in ECHOING}
    assert len(echoed) >= 3 and all(
        any(c.name in body.decode("utf-8", "replace") for c in canaries) or b"%" in body
        for body in echoed
    ), "the bureaus did not echo personal data: the test would prove nothing"
    assert all(r.header("gc-dlq-response") for r in delivery_dlq)
    log = run.log.read_text(encoding="utf-8")
    assert '"level": "debug"' in log or '"level": "info"' in log
    assert "greenchannel_delivered_total" in metrics

    surfaces = {
        "log (stderr, JSON, DEBUG)": log,
        "router dead-letter headers": headers_text(router_dlq),
        "delivery dead-letter headers": headers_text(delivery_dlq),
        "/metrics": metrics,
        "receipts": "\n".join(
            (r.value or b"").decode("utf-8", "replace")
            for r in read_all(settings.kafka.bootstrap_servers, [t.receipts], idle_s=2)
        ),
    }
    if importlib.util.find_spec("gateway.commands.dlq") is not None:
        for stage, records in (("complaints", router_dlq), ("escalations", delivery_dlq)):
            listed = dlq_cli(config, "list", "--stage", stage, "--timeout", "30")
            assert f"{len(records)} dead letter(s)" in listed
            surfaces[f"dlq list --stage {stage}"] = listed
            surfaces[f"dlq list --json --stage {stage}"] = dlq_cli(
                config, "list", "--json", "--stage", stage, "--timeout", "30"
            )
            for r in records:
                position = f"{r.partition}:{r.offset}"
                shown = dlq_cli(config, "show", position, "--stage", stage, "--timeout", "30")
                surfaces[f"dlq show {position} --stage {stage}"] = shown
    leaks = [leak for name, text in surfaces.items() for leak in find_leaks(name, text, canaries)]
    assert not leaks, "personal data in clear:\n  " + "\n  ".join(leaks)
