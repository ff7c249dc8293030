"""``greenchannel check-config``: exits non-zero naming the bad key, and never prints a secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from gateway.cli import cli

DEV_SECRET = "dev-only-wuhu-secret"  # the built-in development secret of Wuhu
KAFKA_PASSWORD = "kafka-pw-3f9c2e71"
CITY_SECRET = "city-secret-77ab01d4"
SECRETS = (DEV_SECRET, KAFKA_PASSWORD, CITY_SECRET)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GREENCHANNEL_"):
            monkeypatch.delenv(name)


def check(
    tmp_path: Path, config: dict[str, Any] | str, env: dict[str, str] | None = None
) -> Result:
    path = tmp_path / "gc.yaml"
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config"], env=env)
    for secret in SECRETS:
        assert secret not in result.output, f"secret printed: {result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def sasl(**kafka: Any) -> dict[str, Any]:
    base = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "gateway",
        "sasl_password": KAFKA_PASSWORD,
    }
    return {"kafka": {k: v for k, v in (base | kafka).items() if v is not None}}


def test_the_default_config_is_valid(tmp_path: Path) -> None:
    result = check(tmp_path, {})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 10 cities")


def test_complete_sasl_ssl_settings_are_accepted(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    result = check(tmp_path, sasl(ssl_cafile=str(ca)))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"kafka": {"bogus": 1}}, "kafka.bogus"),
        ({"cities": {"wuhu": {"rate_per_s": -5}}}, "cities.wuhu.rate_per_s"),
        ({"kafka": {"security_protocol": "TLS"}}, "kafka.security_protocol"),
        ({"router": {"green_cities": ["atlantis"]}}, "router.green_cities"),
        (sasl(sasl_username=None), "kafka.sasl_username"),
        (sasl(sasl_password=""), "kafka.sasl_password"),
        (sasl(sasl_mechanism=None), "kafka.sasl_mechanism"),
        (sasl(sasl_mechanism="GSSAPI"), "kafka.sasl_mechanism"),
        (sasl(security_protocol="PLAINTEXT"), "kafka.sasl_mechanism"),
        (sasl(ssl_keyfile="/nonexistent/client.key"), "kafka.ssl_keyfile"),
        ({"kafka": {"ssl_cafile": "/etc/hosts"}}, "kafka.ssl_cafile"),
        (
            {
                "delivery": {"endpoint_allowlist": ["127.0.0.1:*", "bureau.wuhu.example:443"]},
                "cities": {"wuhu": {"endpoint": "https://bureau.wuhu.example/12315"}},
            },
            "cities.wuhu.credentials.secret",
        ),
        (
            {"cities": {"wuhu": {"endpoint": "https://bureau.wuhu.example/12315"}}},
            "cities.wuhu.endpoint",
        ),
        (
            {"cities": {"wuhu": {"credentials": {"secret": CITY_SECRET, "bogus": "x"}}}},
            "cities.wuhu.credentials.bogus",
        ),
    ],
)
def test_a_bad_config_exits_non_zero_naming_the_key(
    tmp_path: Path, config: dict[str, Any], key: str
) -> None:
    result = check(tmp_path, config)
    assert result.exit_code == 2, result.output
    assert key in result.stderr, result.stderr
    assert result.stdout == ""


def test_a_sasl_password_may_come_from_the_environment_at_run_time(tmp_path: Path) -> None:
    result = check(tmp_path, sasl(sasl_password=None))
    assert result.exit_code == 0, result.output
    assert "kafka.sasl_password is not set here" in result.stderr


def test_tls_files_missing_here_are_noted_not_refused(tmp_path: Path) -> None:
    result = check(tmp_path, sasl(ssl_cafile="/etc/greenchannel/kafka-tls/ca.crt"))
    assert result.exit_code == 0, result.output
    assert "note: kafka.ssl_cafile: /etc/greenchannel/kafka-tls/ca.crt does not exist" in (
        result.stderr
    )


def test_env_overrides_are_validated_too(tmp_path: Path) -> None:
    env = {
        "GREENCHANNEL_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "GREENCHANNEL_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "GREENCHANNEL_KAFKA__SASL_PASSWORD": KAFKA_PASSWORD,
    }
    result = check(tmp_path, {}, env)
    assert result.exit_code == 2
    assert "kafka.sasl_username" in result.stderr


def test_an_unparsable_env_override_names_the_field_not_its_value(tmp_path: Path) -> None:
    env = {"GREENCHANNEL_CITIES": '{"wuhu": {"credentials": {"secret": "' + CITY_SECRET}
    result = check(tmp_path, {}, env)
    assert result.exit_code == 2
    assert '"cities"' in result.stderr


def test_a_yaml_error_next_to_a_secret_does_not_echo_the_line(tmp_path: Path) -> None:
    text = f'cities:\n  wuhu:\n    credentials:\n      secret: "{CITY_SECRET}\n  hefei: [\n'
    result = check(tmp_path, text)
    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr
    assert "line " in result.stderr


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(cli, ["--config", str(missing), "check-config"])
    assert result.exit_code == 2
    assert str(missing) in result.stderr
