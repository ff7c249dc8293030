"""kafka-python workarounds, the security check's messages and the SASL_SSL broker config."""

from __future__ import annotations

import random
import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest
from kafka import errors as kerrors
from kafka.coordinator.base import MemberState
from kafka.net import transport
from pydantic import SecretStr

from gateway.config import KafkaSettings
from gateway.dev.broker import BrokerError, BrokerSettings, server_properties
from gateway.errors import ConfigError, FatalError
from gateway.kafka import compat as kafka_compat
from gateway.kafka.clients import (
    Producer,
    _security_error,
    check_connection,
    client_config,
)
from gateway.kafka.records import consumed_headers

pytestmark = pytest.mark.unit
SECURE = KafkaSettings(
    bootstrap_servers="127.0.0.1:9094",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="gateway",
    sasl_password=SecretStr("pw-never-shown"),
)


def _props(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_an_unfinished_join_makes_the_consumer_rejoin() -> None:
    coordinator = SimpleNamespace(need_rejoin=lambda: False, state=MemberState.STABLE)
    kafka_compat.finish_interrupted_joins(SimpleNamespace(_coordinator=coordinator))
    assert coordinator.need_rejoin() is False
    coordinator.state = MemberState.REBALANCING  # JoinGroup/SyncGroup cut off by poll's timeout
    assert coordinator.need_rejoin() is True


def test_the_eof_fix_is_installed_for_the_pinned_version() -> None:
    # The gateway is pinned to, and tested on, a kafka-python the fix is written for: another
    # version must fail here (re-check the bug and the fix), not silently run unpatched.
    assert kafka_compat.KAFKA_PYTHON_VERSION in kafka_compat._EOF_FIX_VERSIONS
    assert transport.KafkaTCPTransport._read_from_sock is kafka_compat._read_from_sock


def test_the_eof_fix_leaves_other_versions_and_changed_internals_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def _read_from_sock(self: object) -> None:  # kafka-python's own, as far as we know
        return None

    async def changed(self: object) -> None:  # internals renamed or rewritten
        return None

    cls = transport.KafkaTCPTransport
    monkeypatch.setattr(cls, "_read_from_sock", _read_from_sock)
    monkeypatch.setattr(kafka_compat, "KAFKA_PYTHON_VERSION", "3.0.13")
    assert kafka_compat.install_eof_fix() is False
    assert cls._read_from_sock is _read_from_sock
    monkeypatch.setattr(kafka_compat, "KAFKA_PYTHON_VERSION", "3.0.12")
    monkeypatch.setattr(cls, "_read_from_sock", changed)
    assert kafka_compat.install_eof_fix() is False
    assert cls._read_from_sock is changed
    monkeypatch.setattr(cls, "_read_from_sock", _read_from_sock)
    assert kafka_compat.install_eof_fix() is True
    assert cls._read_from_sock is kafka_compat._read_from_sock


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError("timed out"), True),
        (kerrors.KafkaConnectionError("111 ECONNREFUSED"), True),
        (kerrors.KafkaConnectionError("Handshake failed: CERTIFICATE_VERIFY_FAILED"), False),
        (ssl.SSLError(1, "WRONG_VERSION_NUMBER"), False),
        (kerrors.SaslAuthenticationFailedError("invalid credentials"), False),
    ],
)
def test_only_a_missing_broker_counts_as_unreachable(
    error: BaseException, unreachable: bool
) -> None:
    assert kafka_compat._unreachable(error) is unreachable


def test_plaintext_needs_no_connection_check(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []
    monkeypatch.setattr(
        "gateway.kafka.clients.first_connection_error",
        lambda *args: attempts.append(args),
    )
    check_connection(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    assert attempts == []  # no connection attempt, no error
    secure = SECURE.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
    check_connection(secure)  # the check runs for a secured protocol (None: nothing to report)
    assert len(attempts) == 1


def test_a_plaintext_port_is_not_diagnosed_as_a_handshake_failure() -> None:
    # nothing listens on port 1: the check passes and leaves retries to the client
    check_connection(SECURE.model_copy(update={"bootstrap_servers": "127.0.0.1:1"}), 2.0)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            kerrors.SaslAuthenticationFailedError("bad"),
            ["kafka.sasl_username", "kafka.sasl_password"],
        ),
        (kerrors.UnsupportedSaslMechanismError("no"), ["kafka.sasl_mechanism"]),
        (
            kerrors.KafkaConnectionError("Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] x"),
            ["kafka.ssl_cafile", "kafka.ssl_check_hostname"],
        ),
        (
            kerrors.KafkaConnectionError("Handshake failed: [SSL: WRONG_VERSION_NUMBER]"),
            ["kafka.security_protocol"],
        ),
    ],
)
def test_security_errors_name_the_settings_and_never_the_password(
    error: BaseException, words: list[str]
) -> None:
    message = str(_security_error(SECURE, error))
    assert all(w in message for w in words), message
    assert "pw-never-shown" not in message


def test_server_properties_with_a_sasl_ssl_listener() -> None:
    settings = BrokerSettings(port=31000, controller_port=31001, sasl_ssl_port=31002)
    chain = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n"
    props = _props(server_properties(settings, Path("/data"), (chain, key)))
    assert props["listeners"].endswith(",SASL_SSL://127.0.0.1:31002")
    assert props["advertised.listeners"] == props["listeners"]
    assert props["listener.security.protocol.map"].endswith(",SASL_SSL:SASL_SSL")
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    prefix = "listener.name.sasl_ssl."
    assert props[f"{prefix}sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert "ScramLoginModule required" in props[f"{prefix}scram-sha-512.sasl.jaas.config"]
    assert props[f"{prefix}ssl.keystore.type"] == "PEM"
    assert props[f"{prefix}ssl.keystore.key"] == key.strip().replace("\n", "\\n")
    assert props[f"{prefix}ssl.keystore.certificate.chain"].count("\\n") == 2
    password = settings.scram_password.get_secret_value()
    assert password not in "".join(props.values())


def test_a_sasl_ssl_listener_needs_a_keystore() -> None:
    with pytest.raises(BrokerError):
        server_properties(BrokerSettings(sasl_ssl_port=31002), Path("/data"))


def test_clients_refuse_to_start_without_the_sasl_password_or_a_tls_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka\.sasl_password is not set"):
        client_config(SECURE.model_copy(update={"sasl_password": None}))
    missing = SECURE.model_copy(update={"ssl_cafile": tmp_path / "nope.pem"})
    with pytest.raises(ConfigError, match=r"kafka\.ssl_cafile"):
        client_config(missing)
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    conf = client_config(SECURE.model_copy(update={"ssl_cafile": tmp_path / "ca.pem"}))
    assert conf["sasl_plain_password"] == "pw-never-shown"


def test_null_header_values_are_read_as_empty_bytes_so_they_can_be_forwarded() -> None:
    """kafka-python's send() rejects a None header value, which Kafka allows on the wire."""
    plain = [("a", b"1"), ("b", b"")]
    assert consumed_headers(plain) is plain
    assert consumed_headers([("a", None), ("b", b"2")]) == (("a", b""), ("b", b"2"))


@pytest.mark.parametrize(
    "error",
    [kerrors.KafkaTimeoutError("timed out"), kerrors.NodeNotReadyError("node 1"), ValueError("?")],
    ids=["timeout", "retriable", "unforeseen"],
)
def test_a_failed_abort_is_fatal_whatever_the_cause(error: Exception) -> None:
    """A producer that cannot abort is in an unknown transactional state (docs/operations.md:
    ``cannot abort transaction``), even when the error would be transient elsewhere."""

    class Inner:
        def abort_transaction(self) -> None:
            raise error

    producer = object.__new__(Producer)
    producer._producer = Inner()
    with pytest.raises(
        FatalError, match=f"^cannot abort transaction: abort_transaction: {type(error).__name__}"
    ):
        producer.abort()


def test_quiet_selector_keeps_get_key_semantics_without_building_a_message() -> None:
    import selectors
    import socket

    from gateway.kafka.compat import QuietSelector

    a, b = socket.socketpair()
    selector = QuietSelector()
    try:
        with pytest.raises(KeyError) as missing:
            selector.get_key(a)
        assert missing.value.args == (a,)  # the object itself: no repr() built
        selector.register(a, selectors.EVENT_READ, "data")
        key = selector.get_key(a)
        assert (key.fileobj, key.events, key.data) == (a, selectors.EVENT_READ, "data")
        assert selector.get_key(a.fileno()) is key
        selector.unregister(a)
        with pytest.raises(KeyError):
            selector.get_key(a)
    finally:
        selector.close()
    with pytest.raises(RuntimeError, match="closed"):
        selector.get_key(a)
    a.close()
    b.close()


def test_every_client_uses_the_quiet_selector() -> None:
    from gateway.kafka.compat import QuietSelector

    assert client_config(KafkaSettings(bootstrap_servers="127.0.0.1:9092"))["selector"] is (
        QuietSelector
    )


def test_quick_transaction_retries_sets_only_the_senders_own_backoff() -> None:
    sender = SimpleNamespace(config={"retry_backoff_ms": 100, "linger_ms": 5})
    producer = SimpleNamespace(_sender=sender, config={"retry_backoff_ms": 10})
    assert kafka_compat.quick_transaction_retries(producer)
    assert sender.config == {
        "retry_backoff_ms": kafka_compat.TRANSACTION_RETRY_BACKOFF_MS,
        "linger_ms": 5,
    }
    assert producer.config == {"retry_backoff_ms": 10}  # batch retries, metadata: unchanged
    assert kafka_compat.quick_transaction_retries(producer, backoff_ms=1)
    assert sender.config["retry_backoff_ms"] == 1


@pytest.mark.parametrize(
    "producer",
    [
        SimpleNamespace(),
        SimpleNamespace(_sender=SimpleNamespace()),
        SimpleNamespace(_sender=SimpleNamespace(config={"linger_ms": 5})),
        SimpleNamespace(_sender=SimpleNamespace(config={"retry_backoff_ms": "100"})),
        SimpleNamespace(_sender=SimpleNamespace(config=(("retry_backoff_ms", 100),))),
    ],
    ids=["no sender", "no config", "no such key", "not a number", "not a dict"],
)
def test_quick_transaction_retries_leaves_changed_internals_alone(producer: object) -> None:
    before = repr(producer)
    assert not kafka_compat.quick_transaction_retries(producer)
    assert repr(producer) == before


def test_the_frame_read_is_installed_and_reads_what_kafka_python_reads() -> None:
    from kafka.protocol.frame import KafkaBytes

    assert KafkaBytes.read is kafka_compat._frame_read
    original = kafka_compat.KAFKA_FRAME_READ
    assert original is not kafka_compat._frame_read
    rng = random.Random(7)
    for _ in range(2_000):
        size = rng.choice([0, 1, 5, 64, 1_000, 70_000])
        data = rng.randbytes(size)
        start = rng.randint(0, size)
        nbytes = rng.choice([None, 0, -1, 1, rng.randint(0, size + 10), size + 1])
        got = []
        for read in (original, kafka_compat._frame_read):
            buffer = KafkaBytes(size)
            buffer[:] = data
            buffer.seek(start)
            value = read(buffer) if nbytes is None else read(buffer, nbytes)
            assert type(value) is bytes
            got.append((value, buffer.tell()))
        assert got[0] == got[1], (size, start, nbytes)


def test_the_frame_read_leaves_a_changed_kafka_python_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kafka.protocol.frame import KafkaBytes

    def changed(self: KafkaBytes, nbytes: int | None = None) -> bytes:  # other semantics
        return b""

    def broken(self: KafkaBytes, nbytes: int | None = None) -> bytes:
        raise AttributeError("_idx")

    for other in (changed, broken):
        monkeypatch.setattr(KafkaBytes, "read", other)
        assert kafka_compat.install_frame_read() is False
        assert KafkaBytes.read is other
