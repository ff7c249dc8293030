"""Callback receivers over real HTTP(S) with a client that is not ours (httpx + hand-made
signatures): ok, stale, replayed, bad signature, rate-limited — each answered in the city's
format, and only the accepted callback reaches Kafka. The receiver for one city runs over TLS."""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from prometheus_client import CollectorRegistry

from gateway.avro.codec import Codec
from gateway.cases.receiver import CallbackReceivers
from gateway.config import Settings
from gateway.connectors_registry import load_connectors
from gateway.dev.bureau_tls import ensure_tls
from gateway.ops.metrics import Metrics
from gateway.sdk import CallbackInbound
from tests.cases.kit import wait_for
from tests.conftest import TopicFactory
from tests.helpers import read_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
EID = "9d0c6a0e-7777-5888-9999-000011112222"


def _hmac_callback(
    url: str, secret: str, client_id: str, *, stamp_ms: int, nonce: str, status: str = "accepted"
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"events": [{"idempotency_key": EID, "case_no": "BJ-1", "status": status,
                     "time": str(stamp_ms)}]}
    ).encode()  # fmt: skip
    path = httpx.URL(url).path
    message = f"POST\n{path}\n{stamp_ms}\n{nonce}\n{hashlib.sha256(body).hexdigest()}"
    sig = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    headers = {
        "content-type": "application/json",
        "x-client-id": client_id,
        "x-timestamp": str(stamp_ms),
        "x-nonce": nonce,
        "x-signature": sig,
    }
    return body, headers


def test_receivers_check_sign_time_nonce_and_rate_and_answer_in_the_city_format(
    settings_factory: Callable[..., Settings], topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic_factory.create_all()
    files = ensure_tls(tmp_path / "tls")
    settings = settings_factory(
        cities={
            "beijing": {"inbound": {"tls_cert_file": str(files.server_cert),
                                    "tls_key_file": str(files.server_key)}},
            "wuhu": {"inbound": {"rate_per_s": 0.01, "burst": 2}},
        }
    )  # fmt: skip
    connectors = load_connectors({"beijing", "wuhu"})
    callbacks = {c: k for c, k in connectors.items() if isinstance(k, CallbackInbound)}
    registry = CollectorRegistry()
    receivers = CallbackReceivers(settings, callbacks, Codec(settings.codec), Metrics(registry))
    receivers.start()
    try:
        bj = settings.cities["beijing"].credentials
        url = receivers.url("beijing")
        assert url.startswith("https://")
        now = int(time.time() * 1000)
        with httpx.Client(
            verify=ssl.create_default_context(cafile=str(files.ca)), timeout=10
        ) as http:

            def send(stamp_ms: int, nonce: str, secret: str | None = None) -> httpx.Response:
                body, headers = _hmac_callback(
                    url,
                    secret or bj.resolved_secret(),
                    bj.client_id,
                    stamp_ms=stamp_ms,
                    nonce=nonce,
                )
                return http.post(url, content=body, headers=headers)

            ok = send(now, "n-1")
            assert ok.status_code == 200 and ok.json()["code"] == "0"
            replayed = send(now, "n-1")
            assert replayed.status_code == 409 and replayed.json()["code"] == "REPLAYED"
            stale = send(now - 3_600_000, "n-2")
            assert stale.status_code == 401 and stale.json()["code"] == "STALE"
            forged = send(now, "n-3", secret="not-the-secret")
            assert forged.status_code == 401 and forged.json()["code"] == "BAD_SIGNATURE"
        with pytest.raises(httpx.TransportError):  # TLS: a plain-HTTP client gets nowhere
            httpx.post(url.replace("https://", "http://"), content=b"{}", timeout=5)

        # wuhu (form + SM3, form answers): a burst of 2, then the city's busy answer
        wuhu_url = receivers.url("wuhu")
        wh = settings.cities["wuhu"].credentials

        def wuhu_callback(nonce: str) -> httpx.Response:
            params = {"out_id": EID, "status": "accepted", "event_time": "2026-02-10 10:00:00",
                      "appid": wh.client_id, "ts": str(int(time.time())), "nonce": nonce}  # fmt: skip
            base = "&".join(f"{k}={params[k]}" for k in sorted(params))
            sign = hashlib.new("sm3", f"{base}&key={wh.resolved_secret()}".encode()).hexdigest()
            body = urlencode({**params, "sign": sign.upper()})
            return httpx.post(wuhu_url, content=body, timeout=10,
                              headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip

        codes = [
            dict(parse_qsl(wuhu_callback(uuid.uuid4().hex).text))["result_code"] for _ in range(3)
        ]
        assert codes == ["SUCCESS", "SUCCESS", "BUSY"]
    finally:
        receivers.stop()
    # only the accepted callbacks reached Kafka: one from beijing, two from wuhu
    records = read_all(topic_factory.bootstrap, [topic_factory.topics.case_inbound], expect=3)
    assert len(records) == 3
    assert {r.key for r in records} == {EID.encode()}

    def value(city: str, outcome: str) -> float:
        return (
            registry.get_sample_value(
                "greenchannel_case_callbacks_total", {"city": city, "outcome": outcome}
            )
            or 0.0
        )

    wait_for(lambda: value("wuhu", "rate_limited") == 1.0, 5)
    assert [value("beijing", o) for o in ("ok", "replayed", "stale", "bad_signature")] == [1.0] * 4
