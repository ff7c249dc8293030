"""Pure parts of the local broker and the admin wrapper (no broker needed)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest
from kafka import errors as kerrors
from pydantic import SecretStr

from gateway.commands.topics import _retention
from gateway.config import KafkaSettings
from gateway.dev.broker import (
    BrokerSettings,
    LocalBroker,
    free_ports,
    port_block,
    port_in_use,
    server_properties,
)
from gateway.errors import ConfigError, FatalError, KafkaUnavailable
from gateway.kafka.admin import client_config, wrap_kafka_error

pytestmark = pytest.mark.unit


def _props(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_server_properties_single_node_kraft() -> None:
    settings = BrokerSettings(port=31000, controller_port=31001)
    props = _props(server_properties(settings, Path("/data")))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:31000,CONTROLLER://127.0.0.1:31001"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:31001"
    assert props["log.dirs"] == "/data/logs"
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1", key
    assert int(props["log.cleaner.dedupe.buffer.size"]) == 16 * 1024 * 1024


def test_paths_and_bootstrap(tmp_path: Path) -> None:
    broker = LocalBroker(
        BrokerSettings(port=31000, data_dir=tmp_path / "d", cache_dir=tmp_path / "c")
    )
    assert broker.bootstrap == "127.0.0.1:31000"
    assert broker.libs_dir == tmp_path / "c" / "4.1.1" / "libs"
    assert broker.pid is None
    assert not broker.stop()


def test_free_ports_are_distinct_and_free() -> None:
    a, b = free_ports(2)
    assert a != b
    assert not port_in_use(a)


def test_port_block_is_free_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    base = port_block(3, random.Random(7))
    assert base >= 10_000 and base + 3 <= low
    assert not any(port_in_use(base + i) for i in range(3))
    with socket.socket() as held:  # a taken port inside the block moves the pick elsewhere
        held.bind(("127.0.0.1", base + 1))
        held.listen()
        assert port_block(3, random.Random(7)) != base


def test_client_config_carries_security_settings(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    settings = KafkaSettings(
        bootstrap_servers="k1:9093,k2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="gateway",
        sasl_password=SecretStr("s3cret"),
        ssl_cafile=tmp_path / "ca.pem",
        ssl_check_hostname=False,
    )
    config = client_config(settings)
    assert config["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "gateway"
    assert config["sasl_plain_password"] == "s3cret"
    assert config["ssl_cafile"] == str(tmp_path / "ca.pem")
    assert config["ssl_check_hostname"] is False
    assert "ssl_certfile" not in config


def test_plaintext_config_has_no_security_keys() -> None:
    config = client_config(KafkaSettings())
    assert not any(k.startswith(("sasl_", "ssl_")) for k in config)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (kerrors.KafkaConnectionError(), KafkaUnavailable),
        (kerrors.KafkaTimeoutError("slow"), KafkaUnavailable),
        (ConnectionRefusedError("refused"), KafkaUnavailable),
        (kerrors.SaslAuthenticationFailedError("bad password"), ConfigError),
        (kerrors.TopicAuthorizationFailedError("acl"), ConfigError),
        (kerrors.InvalidReplicationFactorError("rf 3"), ConfigError),
        (kerrors.IllegalStateError("odd"), FatalError),
    ],
)
def test_kafka_errors_are_wrapped(exc: Exception, kind: type[Exception]) -> None:
    wrapped = wrap_kafka_error(exc, "create topics")
    assert type(wrapped) is kind
    assert "create topics" in str(wrapped)


def test_retention_formatting() -> None:
    assert _retention(7 * 24 * 3600 * 1000) == "7d"
    assert _retention(36 * 3600 * 1000) == "36h"
    assert _retention(None) == "-"
    assert _retention(-1) == "forever"


def test_broker_settings_are_the_dev_tools_not_the_gateways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.config import Settings, load_settings
    from gateway.dev.broker import load_broker_settings

    assert "broker" not in Settings.model_fields
    config = tmp_path / "gc.yaml"
    config.write_text("broker:\n  port: 39092\n  heap: -Xmx1g\ntopics:\n  prefix: x.\n", "utf-8")
    assert load_settings(config).topics.prefix == "x."  # the gateway ignores broker:
    broker = load_broker_settings(config)
    assert (broker.port, broker.heap, broker.controller_port) == (39092, "-Xmx1g", 19093)
    monkeypatch.setenv("GREENCHANNEL_BROKER__PORT", "29092")
    monkeypatch.setenv("GREENCHANNEL_CONFIG", str(config))
    assert load_broker_settings().port == 29092  # env beats the file
    assert load_settings().topics.prefix == "x."
    config.write_text("broker:\n  prot: 1\n", "utf-8")
    with pytest.raises(ConfigError, match=r"broker\.prot"):
        load_broker_settings(config)
