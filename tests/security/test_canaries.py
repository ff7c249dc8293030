"""Property: no canary personal data, in any written form, leaves the real gateway in clear.

Hypothesis draws batches of canaries (:mod:`tests.security.canaries`: mobile and landline numbers
with separators, ``+86`` and full-width digits, 15- and 18-digit ID numbers, bank cards, the
credit code of an individual business, e-mail addresses, names and addresses) and seeds them in
complaints: as the consumer's own fields, and written out in the complaint's description. One
real ``greenchannel run`` process (real broker, the bureau simulator, JSON logs at DEBUG) routes
them; the bureaus of Guangzhou (SOAP), Wuhu (form + SM3) and Nanjing (JSON + HMAC) refuse every
case with an answer that echoes everything they received, description included, so each
escalation is dead-lettered with the bureau's answer; one more complaint per batch carries free
text (an address and a phone number) as its ``city_code`` and is dead-lettered by the router.

After each batch no canary value may be readable — in clear, with separators or full-width
characters, or percent/JSON/XML-escaped — in the process's log, any dead-letter header,
``/metrics``, ``dlq list --json`` or ``dlq show`` (without ``--reveal``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gateway.avro.codec import Codec
from gateway.cities import CITIES
from gateway.config import Settings
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.samples import SampleFactory
from gateway.kafka.clients import Producer, Record
from gateway.topics import Topics
from tests.conftest import TopicFactory
from tests.helpers import cli_output, echoing, read_all
from tests.integration.run_kit import GatewayRun, run_config
from tests.security.canaries import Canary, canaries, description, leaks, written

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ECHOING = ("guangzhou", "wuhu", "nanjing")  # SOAP, form + SM3 (form answer), JSON + HMAC
_CITY = {c.key: c for c in CITIES}


@dataclass
class Stack:
    settings: Settings
    config: Path
    run: GatewayRun
    echoed: list[bytes]
    factory: SampleFactory = field(default_factory=lambda: SampleFactory(seed=11, major_share=1.0))
    people: list[Canary] = field(default_factory=list)
    router_seen: int = 0
    delivery_seen: int = 0

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topics.prefix)

    def complaint(self, canary: Canary, forms: list[int], city: str) -> dict[str, Any]:
        record = self.factory.next(major=True, city=_CITY[city]).record
        record["consumer"] = {
            "name": canary.name,
            "phone": canary.mobile,
            "id_number": canary.id_number,
            "address": canary.address,
            "email": canary.email,
        }
        record["merchant"] = dict(record["merchant"]) | {"credit_code": canary.uscc}
        record["description"] = description(canary, forms)
        return record

    def dlq_cli(self, *args: str) -> str:
        return cli_output(["dlq", *args, "--timeout", "30"], config=self.config)


@pytest.fixture
def stack(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    bureaus: BureauSimulator,
    tls_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    topic_factory.create_all()
    settings = settings_factory()
    echoed: list[bytes] = []
    for name in bureaus.names():
        bureaus.city(name).reset_faults()
        bureaus.city(name).clear()
    for name in ECHOING:
        monkeypatch.setattr(bureaus.city(name), "_open", echoing(bureaus.city(name), echoed))
    config = run_config(tmp_path / "gc.yaml", settings, bureaus, tls_dir, log_level="DEBUG")
    run = GatewayRun(config, tmp_path / "run.log").start()
    try:
        run.wait_ready()
        yield Stack(settings, config, run, echoed)
        assert run.terminate().code == 0, run.tail()
    finally:
        run.kill()


def headers_text(records: list[Record]) -> str:
    return "\n".join(f"{k}: {v.decode('utf-8', 'replace')}" for r in records for k, v in r.headers)


batches = st.lists(
    st.tuples(canaries(), st.lists(st.integers(0, 20), min_size=9, max_size=9)),
    min_size=2,
    max_size=3,
)


@settings(
    max_examples=2,  # the written forms are covered exhaustively in tests/unit/test_pii_forms.py
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),  # no shrinking: each run is ~20 s
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=batches, free_text_form=st.integers(0, 20))
def test_no_canary_leaves_the_gateway_in_clear(
    stack: Stack, batch: list[tuple[Canary, list[int]]], free_text_form: int
) -> None:
    tag = uuid.uuid4().hex[:8]
    records = [
        stack.complaint(canary, forms, ECHOING[i % len(ECHOING)])
        for i, (canary, forms) in enumerate(batch)
    ]
    stray, stray_forms = batch[0]
    bad = stack.complaint(stray, stray_forms, "wuhu")
    bad["complaint_id"] = f"bad-city-{tag}"
    bad["city_code"] = f"{stray.address} {written('mobile', stray.mobile, free_text_form)}"
    stack.people.extend(canary for canary, _ in batch)

    t = stack.topics
    codec = Codec(stack.settings.codec)
    producer = Producer(stack.settings.kafka, linger_ms=1)
    for record in [*records, bad]:
        value = codec.encode("complaint", record, t.complaints)
        producer.send(t.complaints, value, key=str(record["complaint_id"]).encode())
    producer.flush(30)
    producer.close()

    bootstrap = stack.settings.kafka.bootstrap_servers
    stack.router_seen += 1
    stack.delivery_seen += len(records)
    router_dlq = read_all(bootstrap, [t.dlq_complaints], expect=stack.router_seen, timeout_s=60)
    delivery_dlq = read_all(
        bootstrap, [t.dlq_escalations], expect=stack.delivery_seen, timeout_s=90
    )
    assert len(router_dlq) == stack.router_seen, stack.run.tail()
    assert len(delivery_dlq) == stack.delivery_seen, stack.run.tail()
    assert all(r.header("gc-dlq-response") for r in delivery_dlq)
    canary = batch[-1][0]
    assert any(
        canary.name in body.decode("utf-8", "replace") or b"%" in body for body in stack.echoed
    ), "the bureaus did not echo personal data: the test would prove nothing"

    newest_router = router_dlq[-1]
    newest_delivery = delivery_dlq[-1]
    surfaces = {
        "log (JSON, DEBUG)": stack.run.log.read_text(encoding="utf-8"),
        "router dead-letter headers": headers_text(router_dlq),
        "delivery dead-letter headers": headers_text(delivery_dlq),
        "/metrics": stack.run.get("/metrics")[1],
        "dlq list --json (complaints)": stack.dlq_cli("list", "--json", "--stage", "complaints"),
        "dlq list (escalations)": stack.dlq_cli("list", "--stage", "escalations"),
        "dlq show (router)": stack.dlq_cli(
            "show", f"{newest_router.partition}:{newest_router.offset}", "--stage", "complaints"
        ),
        "dlq show (delivery)": stack.dlq_cli(
            "show",
            f"{newest_delivery.partition}:{newest_delivery.offset}",
            "--stage",
            "escalations",
        ),
    }
    metrics = surfaces["/metrics"]
    assert "greenchannel_delivery_dead_letters_total" in metrics
    # the client certificate was checked at start and its expiry exported (Shenzhen: mTLS)
    assert 'greenchannel_client_certificate_expiry_timestamp_seconds{city="shenzhen"}' in metrics
    found = [leak for name, text in surfaces.items() for leak in leaks(name, text, stack.people)]
    assert not found, "personal data in clear:\n  " + "\n  ".join(sorted(set(found)))
