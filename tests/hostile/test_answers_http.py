"""Bounded bureau calls (issue 9, findings 4 and 5): the real ``HttpTransport`` against the
hostile bureau on 127.0.0.1, no broker. An attempt ends at its overall deadline however the
bureau dribbles (headers, body, a redirect chain), and reading stops at the size cap.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from gateway.config import CitySettings
from gateway.delivery.city import CityDelivery
from gateway.errors import BureauUnavailable, IrregularAnswer
from gateway.http import HttpTransport
from gateway.sdk import BureauRequest, Credentials
from tests.hostile import answers_kit as kit
from tests.hostile.answers_kit import HostileBureau
from tests.unit.delivery_fakes import Clock, FakeConnector, FakeObserver, escalation_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PATH = kit.PROFILES["beijing"].path


@pytest.fixture
def bureau() -> Iterator[HostileBureau]:
    b = HostileBureau().start()
    yield b
    b.stop()


def transport(bureau: HostileBureau, **city: object) -> HttpTransport:
    settings = CitySettings.model_validate(
        {"endpoint": bureau.endpoint, "timeout_s": 1.0, "deadline_s": 2.0} | city
    )
    return HttpTransport("beijing", settings, ["127.0.0.1:*"])


def request(key: str) -> BureauRequest:
    return BureauRequest("POST", PATH, {"X-Idempotency-Key": key}, b"{}")


@pytest.mark.parametrize(
    "behaviour",
    [kit.trickle_body(0.1), kit.trickle_headers(0.2), kit.stall(30)],
    ids=["body a byte per 100 ms", "headers a byte per 200 ms", "silent for 30 s"],
)
def test_an_attempt_ends_at_its_deadline(bureau: HostileBureau, behaviour: kit.Behaviour) -> None:
    t = transport(bureau, timeout_s=5.0)  # as in the issue: no single read ever waits 5 s
    bureau.script("k", behaviour)
    started = time.monotonic()
    with pytest.raises(BureauUnavailable) as err:
        t.send(request("k"))
    elapsed = time.monotonic() - started
    assert err.value.reason == "deadline"
    assert 1.9 <= elapsed < 2.8, f"cut after {elapsed:.2f}s, deadline 2 s"
    t.close()


def test_the_deadline_covers_every_hop_of_a_redirect_chain(bureau: HostileBureau) -> None:
    slow_redirect = kit.respond(307, b"", {"Location": PATH})

    def slowly(b: HostileBureau, conn: object, req: kit.Request) -> bool:
        time.sleep(0.8)
        return slow_redirect(b, conn, req)  # type: ignore[arg-type]

    bureau.script("k", slowly, slowly, slowly)
    t = transport(bureau)
    started = time.monotonic()
    with pytest.raises(BureauUnavailable) as err:
        t.send(request("k"))
    assert err.value.reason == "deadline" and time.monotonic() - started < 2.8
    t.close()


def test_a_fast_answer_on_a_pooled_connection_is_untouched(bureau: HostileBureau) -> None:
    t = transport(bureau)
    for i in range(3):
        answer = t.send(request(f"k{i}"))
        assert answer.status == 200 and json.loads(answer.body)["data"]["slbh"]
    t.close()


@pytest.mark.parametrize(
    ("behaviour", "limit"),
    [
        (kit.huge_body(50 << 20), 50 << 20),
        (kit.huge_body(50 << 20, declare=False), 50 << 20),
        (kit.huge_body(50 << 20, chunked=True), 50 << 20),
    ],
    ids=["declared", "until close", "chunked"],
)
def test_reading_stops_at_the_size_cap(
    bureau: HostileBureau, behaviour: kit.Behaviour, limit: int
) -> None:
    t = transport(bureau, max_answer_bytes=64 * 1024, deadline_s=30.0)
    bureau.script("big", behaviour)
    with pytest.raises(IrregularAnswer) as err:
        t.send(request("big"))
    assert err.value.reason == "answer_too_large"
    assert kit.wait_until(lambda: bool(bureau.seen["big"].cut_after_s), 10)
    assert bureau.seen["big"].cut_after_s[0] < limit / 4  # the client hung up long before
    t.close()


def test_an_answer_at_the_cap_is_read_whole(bureau: HostileBureau) -> None:
    body = b"x" * 65536
    bureau.script("k", kit.respond(200, body))
    answer = transport(bureau, max_answer_bytes=65536).send(request("k"))
    assert answer.body == body


def test_slow_attempts_open_the_breaker(bureau: HostileBureau) -> None:
    """Three attempts cut at their deadline count as three failures: the breaker opens."""
    settings = CitySettings.model_validate(
        {
            "endpoint": bureau.endpoint,
            "timeout_s": 0.5,
            "deadline_s": 0.5,
            "burst": 100,
            "retry": {"initial_s": 0.01, "max_wait_s": 0.02, "jitter_s": 0},
            "breaker": {"failure_threshold": 3, "open_s": 60},
        }
    )
    _, fields = escalation_record("beijing")
    from gateway.delivery.convert import to_escalation

    esc = to_escalation(fields)
    bureau.script(esc.escalation_id, *[kit.trickle_body(0.05)] * 10)

    class Keyed(FakeConnector):
        def translate(self, escalation, ctx):  # type: ignore[no-untyped-def]
            return BureauRequest(
                "POST", PATH, {"X-Idempotency-Key": escalation.escalation_id}, b"{}"
            )

    stop = threading.Event()
    delivery = CityDelivery(
        "beijing",
        settings,
        Keyed([]),
        HttpTransport("beijing", settings, ["127.0.0.1:*"]),
        FakeObserver(),
        clock=Clock(),
        stop=stop,
        credentials=Credentials(),
    )
    worker = threading.Thread(target=delivery.deliver, args=(esc,))
    worker.start()
    assert kit.wait_until(lambda: delivery.breaker.state == "open", 20)
    assert bureau.seen[esc.escalation_id].attempts == 3
    stop.set()
    worker.join(10)
