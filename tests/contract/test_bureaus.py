"""The bureau simulator itself: verification, idempotency, rate limits, knobs, admin API, CLI."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml

from connectors import beijing, chongqing, hefei, suzhou
from gateway.config import load_settings
from gateway.connectors_registry import load_connectors
from gateway.dev.broker import free_ports
from gateway.dev.bureau_tls import ensure_tls
from gateway.dev.bureaus import BureauSimulator, RemoteBureaus, stamp_cities
from gateway.dev.conformance import BureauClient, credentials_of, sample_escalation
from gateway.errors import BureauUnavailable
from gateway.sdk import Accepted, BureauRequest, Rejected, RetryLater
from tests.contract.conftest import sim_settings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(sim: BureauSimulator) -> Iterator[BureauClient]:
    with BureauClient(
        beijing.connector, sim.settings.cities["beijing"], sim.endpoint("beijing")
    ) as c:
        yield c


def test_hmac_verification_refuses_tampering_skew_and_replay(
    sim: BureauSimulator, client: BureauClient
) -> None:
    ctx = client.context()
    request = beijing.connector.translate(sample_escalation(beijing.connector), ctx)
    tampered = BureauRequest(request.method, request.path, request.headers, request.body + b" ")
    assert client.exchange(tampered).status == 401
    stale_ctx = type(ctx)(ctx.now_ms - 600_000, "stale-nonce", ctx.credentials)
    stale = beijing.connector.translate(sample_escalation(beijing.connector), stale_ctx)
    assert client.exchange(stale).status == 401
    assert client.exchange(request).status == 200
    assert client.exchange(request).status == 401  # the same nonce again
    assert sim.city("beijing").counters()["auth_failures"] == 3
    assert sim.city("beijing").case_count() == 1


def test_soap_bureau_refuses_doctype(sim: BureauSimulator) -> None:
    city = sim.settings.cities["chongqing"]
    with BureauClient(chongqing.connector, city, sim.endpoint("chongqing")) as c:
        request = chongqing.connector.translate(sample_escalation(chongqing.connector), c.context())
        evil = request.body.replace(b"?>", b'?><!DOCTYPE x [<!ENTITY a "b">]>', 1)
        answer = c.exchange(BureauRequest("POST", request.path, request.headers, evil))
    assert answer.status == 500 and b"FailedAuthentication" in answer.body
    assert sim.city("chongqing").case_count() == 0


def test_sm3_bureau_refuses_a_wrong_key(sim: BureauSimulator) -> None:
    city, endpoint = sim.settings.cities["hefei"], sim.endpoint("hefei")
    wrong = replace(credentials_of(city), secret="nope")
    with (
        BureauClient(hefei.connector, city, endpoint) as right_client,
        BureauClient(hefei.connector, city, endpoint, credentials=wrong) as wrong_client,
    ):
        good = right_client.send(sample_escalation(hefei.connector))
        bad = wrong_client.send(sample_escalation(hefei.connector))
    assert isinstance(good, Accepted)
    assert bad == RetryLater("auth")
    assert sim.city("hefei").counters()["auth_failures"] == 1


def test_concurrent_duplicates_open_one_case(sim: BureauSimulator) -> None:
    sim.city("beijing").set_faults(rate_per_s=1000, burst=1000)
    escalation = sample_escalation(beijing.connector)
    outcomes: list[object] = []

    def send() -> None:
        with BureauClient(beijing.connector, sim.settings.cities["beijing"],
                          sim.endpoint("beijing")) as c:  # fmt: skip
            outcomes.append(c.send(escalation))

    threads = [threading.Thread(target=send) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(outcomes)) == 1 and isinstance(outcomes[0], Accepted)
    assert sim.city("beijing").case_count() == 1
    assert sim.city("beijing").counters()["duplicates"] == 15


def test_rate_limit_answers_429_and_caps_the_accepted_rate(
    sim: BureauSimulator, client: BureauClient
) -> None:
    sim.city("beijing").set_faults(rate_per_s=10, burst=2)
    started = time.monotonic()
    outcomes = [client.send(sample_escalation(beijing.connector)) for _ in range(40)]
    elapsed = time.monotonic() - started
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    limited = [o for o in outcomes if isinstance(o, RetryLater)]
    assert len(accepted) <= 2 + 10 * elapsed + 1
    assert limited and all(o.reason == "rate_limited" and o.retry_after == 1.0 for o in limited)
    arrivals = sim.city("beijing").arrivals()
    assert len(arrivals) == 40 and {a.status for a in arrivals} == {200, 429}
    assert [c.arrived_at for c in sim.cases("beijing")] == sorted(
        c.arrived_at for c in sim.cases("beijing")
    )


def test_chongqing_429_carries_an_http_date(sim: BureauSimulator) -> None:
    sim.city("chongqing").set_faults(rate_per_s=0.1, burst=1)
    city = sim.settings.cities["chongqing"]
    with BureauClient(chongqing.connector, city, sim.endpoint("chongqing")) as c:
        c.send(sample_escalation(chongqing.connector))
        request = chongqing.connector.translate(sample_escalation(chongqing.connector), c.context())
        answer = c.exchange(request)
    assert answer.status == 429 and answer.headers["retry-after"].endswith("GMT")
    outcome = chongqing.connector.interpret(answer)
    assert isinstance(outcome, RetryLater) and outcome.retry_after is not None
    assert 9 <= outcome.retry_after <= 12


def test_refuse_outage_closes_the_port_and_recovery_reopens_it(
    sim: BureauSimulator, client: BureauClient
) -> None:
    assert isinstance(client.send(sample_escalation(beijing.connector)), Accepted)
    sim.city("beijing").set_faults(outage=True)
    port = int(sim.endpoint("beijing").rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(BureauUnavailable):
        client.send(sample_escalation(beijing.connector))
    sim.city("beijing").set_faults(outage=False)
    assert isinstance(client.send(sample_escalation(beijing.connector)), Accepted)


def test_oauth_tokens_expire(sim: BureauSimulator) -> None:
    sim.city("suzhou").set_faults(token_ttl_s=0.5)
    city = sim.settings.cities["suzhou"]
    with BureauClient(suzhou.connector, city, sim.endpoint("suzhou")) as c:
        token = c.token()
        issued = time.monotonic()
        assert isinstance(c.send(sample_escalation(suzhou.connector), bearer=token), Accepted)
        while True:  # until the bureau refuses the token (0.5 s after it issued it)
            expired = c.send(sample_escalation(suzhou.connector), bearer=token)
            if not isinstance(expired, Accepted) or time.monotonic() - issued > 10:
                break
            time.sleep(0.05)
    assert expired == RetryLater("token_expired", reauthenticate=True)
    assert time.monotonic() - issued >= 0.5


def test_mtls_refuses_an_unknown_client_certificate(sim: BureauSimulator, tmp_path: Path) -> None:
    rogue = ensure_tls(tmp_path / "rogue", "greenchannel-shenzhen")
    context = ssl.create_default_context(cafile=str(sim.tls_dir / "ca.pem"))
    context.load_cert_chain(rogue.client_cert, rogue.client_key)
    with httpx.Client(verify=context, trust_env=False) as http, pytest.raises(httpx.TransportError):
        http.post(
            sim.endpoint("shenzhen") + "/oauth2/token", content=b"grant_type=client_credentials"
        )


def test_admin_api_changes_knobs_and_lists_cases(
    sim: BureauSimulator, client: BureauClient
) -> None:
    assert sim.admin_url is not None
    remote = RemoteBureaus(sim.admin_url)
    try:
        names = {c["name"] for c in remote.cities()}
        assert names == set(sim.names())
        city = remote.city("beijing")
        assert city.set_faults(error_5xx_ratio=1.0).error_5xx_ratio == 1.0
        assert sim.city("beijing").faults().error_5xx_ratio == 1.0
        assert client.send(sample_escalation(beijing.connector)) == RetryLater("server_error")
        city.reset_faults()
        outcome = client.send(sample_escalation(beijing.connector))
        assert isinstance(outcome, Accepted)
        cases = city.cases()
        assert [c["case_number"] for c in cases] == [outcome.case_number]
        assert "fields" not in cases[0]
        assert city.counters()["server_errors"] == 1
        assert len(city.arrivals()) == 2
        with pytest.raises(ValueError, match="unknown fault knob"):
            city.set_faults(explode=True)
        with pytest.raises(ValueError, match="between 0 and 1"):
            city.set_faults(reject_ratio=2)
        summed: dict[str, int] = {}
        for described in remote.cities():
            for key, n in described["counters"].items():
                summed[key] = summed.get(key, 0) + n
        assert remote.totals() == summed and summed["cases"] >= 1
        city.clear()
        assert city.case_count() == 0
    finally:
        remote.close()


def test_reject_and_busy_knobs(sim: BureauSimulator, client: BureauClient) -> None:
    sim.city("beijing").set_faults(reject_ratio=1.0)
    rejected = client.send(sample_escalation(beijing.connector))
    sim.city("beijing").set_faults(reject_ratio=0.0, busy_ratio=1.0)
    busy = client.send(sample_escalation(beijing.connector))
    assert isinstance(rejected, Rejected) and rejected.detail.startswith("3001")
    assert busy == RetryLater("busy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    tls = {"ca_file": str(tmp_path / "tls/ca.pem"), "cert_file": str(tmp_path / "tls/client.pem"),
           "key_file": str(tmp_path / "tls/client.key")}  # fmt: skip
    cities = {"wuhu": {"endpoint": f"http://127.0.0.1:{_free_port()}"},
              "shenzhen": {"endpoint": f"https://127.0.0.1:{_free_port()}", "tls": tls}}  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"cities": cities}), encoding="utf-8")
    admin = _free_port()
    args = [sys.executable, "-m", "gateway.cli", "--config", str(config), "bureaus",
            "--city", "wuhu", "--city", "shenzhen", "--flaky", "wuhu", "--admin-port", str(admin)]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        remote = RemoteBureaus(f"http://127.0.0.1:{admin}")
        deadline = time.monotonic() + 20
        while True:
            try:
                listed = {c["name"]: c for c in remote.cities()}
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.1)
        remote.close()
        assert set(listed) == {"wuhu", "shenzhen"}
        assert listed["wuhu"]["faults"]["error_5xx_ratio"] == 0.25
        assert (tmp_path / "tls/client.pem").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out.decode()
    assert b"bureaus stopped" in out


def test_stamped_cities_answer_with_the_profile_of_the_city_they_copy(tmp_path: Path) -> None:
    """stamp_cities: copies of a SOAP, an mTLS OAuth2 and an SM3 city, each on its own port,
    speak their original's protocol, and each copy keeps its own cases."""
    settings = sim_settings(tmp_path)
    blocks: dict[str, dict[str, object]] = {}
    for key in ("chongqing", "shenzhen", "hefei"):
        conf = settings.cities[key]
        blocks[key] = {
            "endpoint": conf.endpoint,
            "allow_plaintext": conf.allow_plaintext,
            "credentials": {
                "client_id": conf.credentials.client_id,
                "secret": conf.credentials.resolved_secret(),
            },
            "tls": conf.tls.model_dump(mode="json", exclude_none=True),
        }
    stamped = stamp_cities(blocks, 2, iter(free_ports(6)))
    assert sorted(stamped) == [
        "chongqing-00", "chongqing-01", "hefei-00", "hefei-01", "shenzhen-00", "shenzhen-01",
    ]  # fmt: skip
    assert str(stamped["shenzhen-01"]["endpoint"]).startswith("https://127.0.0.1:")
    full = load_settings(None, cities=stamped)
    connectors = load_connectors()
    with BureauSimulator(full, tmp_path, cities=list(stamped)) as copies:
        for name, block in stamped.items():
            connector = connectors[str(block["connector"])]
            assert full.connector_of(name) == block["connector"]
            with BureauClient(connector, full.cities[name], copies.endpoint(name)) as c:
                outcome = c.send(sample_escalation(connector, name))
            assert isinstance(outcome, Accepted), (name, outcome)
            assert copies.city(name).counters()["cases"] == 1
