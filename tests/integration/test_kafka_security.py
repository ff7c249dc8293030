"""Kafka over SASL_SSL (SCRAM-SHA-512, TLS verified with the generated CA), for real.

A second LocalBroker with a SASL_SSL listener runs for this module (its own data dir, ports and
development CA). The gateway's own clients (gateway.kafka.clients, gateway.kafka.admin) and a real
``greenchannel run`` process use the KafkaSettings security fields against it.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.avro.codec import Codec
from gateway.config import KafkaSettings, load_settings
from gateway.dev.broker import LEAN_JVM, BrokerSettings, LocalBroker, free_ports
from gateway.dev.bureau_tls import ensure_tls
from gateway.dev.samples import SampleFactory, publish
from gateway.errors import ConfigError, GreenChannelError
from gateway.kafka.admin import Admin
from gateway.kafka.clients import Consumer, Producer
from gateway.topics import Topics, TopicSpec
from tests.helpers import gateway_process, stop_process, write_config
from tests.integration.run_kit import GatewayRun
from tests.integration.test_router import department_topics

# One SASL_SSL broker for the module: under xdist its tests stay on one worker (--dist loadgroup).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("secure_broker")]
FAIL_FAST_S = 5.0
"""A rejected handshake must be reported within this, not after kafka-python's 30 s retries."""


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    port, controller_port, sasl_ssl_port = free_ports(3)
    cache = os.environ.get("GREENCHANNEL_TEST_KAFKA_CACHE")
    settings = BrokerSettings(
        port=port,
        controller_port=controller_port,
        sasl_ssl_port=sasl_ssl_port,
        scram_password=SecretStr(f"scram-{uuid.uuid4().hex}"),
        data_dir=tmp_path_factory.mktemp("kafka-sasl-ssl"),
        heap="-Xms128m -Xmx512m",
        jvm=LEAN_JVM,
        **({"cache_dir": Path(cache)} if cache else {}),
    )
    broker = LocalBroker(settings)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def secure(secure_broker: LocalBroker) -> KafkaSettings:
    return secure_broker.sasl_ssl_settings()


def test_the_listener_presents_a_certificate_signed_by_the_generated_ca(
    secure_broker: LocalBroker, secure: KafkaSettings
) -> None:
    assert secure.ssl_cafile is not None and secure.ssl_check_hostname
    context = ssl.create_default_context(cafile=str(secure.ssl_cafile))
    host, port = secure.bootstrap_servers.split(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        cert = tls.getpeercert()
    assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    secret = secure_broker.settings.scram_password.get_secret_value()
    assert secret not in secure_broker.properties_file.read_text(encoding="utf-8")
    assert secure_broker.properties_file.stat().st_mode & 0o077 == 0


def test_producer_consumer_and_admin_round_trip_over_sasl_ssl(secure: KafkaSettings) -> None:
    topic = f"sec{uuid.uuid4().hex[:8]}.roundtrip"
    with Admin(secure) as admin:
        admin.wait_ready(30)
        assert admin.create_topics([TopicSpec(topic, 3, 3_600_000, "test")]).created == [topic]
        assert topic in admin.list_topics()
    producer = Producer(secure, linger_ms=1)
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(50)}
    for key, value in sent.items():
        producer.send(topic, value, key=key, headers=[("gc-test", b"1")])
    producer.flush(30)
    tx = Producer(secure, transactional_id=f"{topic}-tx")
    tx.init_transactions()
    tx.begin()
    tx.send(topic, b"in-a-transaction", key=b"tx")
    tx.commit()
    tx.close()
    producer.close()
    consumer = Consumer(secure, group_id=f"{topic}-g", topics=[topic])
    got: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    try:
        while len(got) < len(sent) + 1 and time.monotonic() < deadline:
            for r in consumer.poll(200):
                assert r.key is not None and r.value is not None
                got[r.key] = r.value
                if r.key != b"tx":
                    assert r.header("gc-test") == b"1"
        consumer.commit({tp: consumer.position(tp) for tp in consumer.assignment()})
    finally:
        consumer.close()
    assert got == sent | {b"tx": b"in-a-transaction"}


@pytest.mark.parametrize(
    "change",
    [{"sasl_password": SecretStr("wrong-password")}, {"sasl_username": "nobody"}],
    ids=["wrong-password", "unknown-user"],
)
def test_rejected_credentials_fail_fast_naming_the_settings(
    secure: KafkaSettings, change: dict[str, object]
) -> None:
    bad = secure.model_copy(update=change)
    clients = {
        "admin": lambda: Admin(bad).wait_ready(30),
        "producer": lambda: Producer(bad),
        "consumer": lambda: Consumer(bad, group_id="never", topics=["never"]),
    }
    for name, make in clients.items():
        started = time.monotonic()
        with pytest.raises(ConfigError) as caught:
            make()
        took = time.monotonic() - started
        assert took < FAIL_FAST_S, (name, took)
        message = str(caught.value)
        assert "rejected the credentials" in message
        assert "kafka.sasl_password" in message and "kafka.sasl_username" in message
        assert "wrong-password" not in message


def test_tls_verification_rejects_a_broker_signed_by_another_ca(
    secure: KafkaSettings, tmp_path: Path
) -> None:
    other_ca = ensure_tls(tmp_path / "other").ca
    bad = secure.model_copy(update={"ssl_cafile": other_ca})
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        Producer(bad)
    assert time.monotonic() - started < FAIL_FAST_S
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert "kafka.ssl_cafile" in str(caught.value)


def test_a_plaintext_client_on_the_tls_listener_gives_up_within_its_timeout(
    secure: KafkaSettings,
) -> None:
    plain = KafkaSettings(bootstrap_servers=secure.bootstrap_servers)
    started = time.monotonic()
    with pytest.raises(GreenChannelError):
        Admin(plain).wait_ready(5)
    assert time.monotonic() - started < 5 + FAIL_FAST_S


def test_greenchannel_run_routes_over_sasl_ssl_with_the_password_from_env(
    secure_broker: LocalBroker, secure: KafkaSettings, tmp_path: Path
) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}."
    settings = load_settings(None, topics={"prefix": prefix})
    with Admin(secure) as admin:
        admin.create_topics(Topics(prefix).all(settings.router.green_cities))
    password = secure_broker.settings.scram_password.get_secret_value()
    kafka = {
        "bootstrap_servers": secure.bootstrap_servers,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": secure.sasl_username,
        "ssl_cafile": str(secure.ssl_cafile),
    }
    config = write_config(
        tmp_path / "gc.yaml",
        {
            "kafka": kafka,
            "topics": {"prefix": prefix},
            "router": {"group_id": f"{prefix}router", "transactional_id_prefix": f"{prefix}tx"},
            "delivery": {"group_id": f"{prefix}deliver"},
            "observability": {"port": 0, "log_level": "DEBUG"},
            # Shenzhen's mTLS files exist only where the bureau simulator made them
            "cities": {"shenzhen": {"enabled": False}},
        },
    )
    env = {"GREENCHANNEL_KAFKA__SASL_PASSWORD": password}
    check = gateway_process(["check-config"], config, tmp_path / "check.log", env)
    assert check.wait(60) == 0, (tmp_path / "check.log").read_text()
    missing = {"GREENCHANNEL_KAFKA__SASL_PASSWORD": ""}
    check = gateway_process(["check-config"], config, tmp_path / "check-bad.log", missing)
    assert check.wait(60) == 2
    assert "kafka.sasl_password" in (tmp_path / "check-bad.log").read_text()

    run = GatewayRun(config, tmp_path / "run.log", env=env).start()
    try:
        run.wait_ready(90)
        producer = Producer(secure)
        samples = list(SampleFactory(seed=51).complaints(200))
        publish(producer, Codec(settings.codec), Topics(prefix).complaints, iter(samples))
        producer.close()
        routed = _read_committed(secure, department_topics(Topics(prefix)), len(samples))
        assert routed == {s.record["complaint_id"].encode() for s in samples}
        assert run.terminate().code == 0
    finally:
        run.kill()
    for log in ("run.log", "check.log", "check-bad.log"):
        assert password not in (tmp_path / log).read_text(encoding="utf-8")

    wrong = GatewayRun(config, tmp_path / "wrong.log", env={**env, **_wrong_password()})
    wrong.start()
    assert wrong.proc is not None
    try:
        assert wrong.proc.wait(60) == 2, wrong.tail()
    finally:
        stop_process(wrong.proc)
    assert "rejected the credentials" in wrong.tail()


def _wrong_password() -> dict[str, str]:
    return {"GREENCHANNEL_KAFKA__SASL_PASSWORD": "not-the-password"}


def _read_committed(settings: KafkaSettings, topics: list[str], expect: int) -> set[bytes]:
    consumer = Consumer(settings, group_id=f"reader-{uuid.uuid4().hex[:8]}", topics=topics)
    keys: set[bytes] = set()
    deadline = time.monotonic() + 90
    try:
        while len(keys) < expect and time.monotonic() < deadline:
            keys.update(r.key for r in consumer.poll(200) if r.key is not None)
    finally:
        consumer.close()
    return keys
