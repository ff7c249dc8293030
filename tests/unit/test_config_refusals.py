"""Configuration abuse is refused at load, by ``check-config`` and by ``run``, with the key named.

Findings 1, 2 and 4 of the fail-closed issue: plain HTTP and missing client certificates,
credentials in an endpoint URL, and the bounds of the configuration (unknown variables, ranges,
cross-field rules, secret files, exit 2 and never a traceback). ``check-config`` is run with
click's runner (fast); ``run`` as a real process, which must refuse before it touches Kafka.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from cryptography import x509

from gateway.cli import cli
from gateway.config import TlsSettings
from gateway.http import client_certificate, client_context
from gateway.sdk import TransportPolicy
from tests.helpers import cli_run
from tests.unit.certs import client_pair, other_key

pytestmark = pytest.mark.unit
PASSWORD = "S3cr3t-pw-7f1e"
SHENZHEN = "https://127.0.0.1:18103"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GREENCHANNEL_"):
            monkeypatch.delenv(name)


def check(tmp_path: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> Result:
    path = tmp_path / "gc.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config"], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output, result.output
    return result


def refused(result: Result, *keys: str) -> None:
    assert result.exit_code == 2, result.output
    for key in keys:
        assert key in result.stderr, result.stderr


def shenzhen_tls(pair: Any, key: Path | None = None) -> dict[str, Any]:
    return {
        "cities": {
            "shenzhen": {"tls": {"cert_file": str(pair.cert), "key_file": str(key or pair.key)}}
        }
    }


# --- 1. transport policy ---------------------------------------------------------------------


def test_plain_http_for_shenzhen_which_requires_mtls_is_refused(tmp_path: Path) -> None:
    pair = client_pair(tmp_path, "sz")
    config = shenzhen_tls(pair)
    config["cities"]["shenzhen"] |= {"endpoint": "http://127.0.0.1:18103", "allow_plaintext": True}
    refused(check(tmp_path, config), "cities.shenzhen.endpoint", "client certificate")


def test_shenzhen_over_https_without_a_client_certificate_is_refused(tmp_path: Path) -> None:
    config = {"cities": {"shenzhen": {"tls": {"cert_file": None, "key_file": None}}}}
    refused(check(tmp_path, config), "cities.shenzhen.tls.cert_file", "mTLS")


def test_a_key_file_without_a_cert_file_is_refused(tmp_path: Path) -> None:
    config = {"cities": {"shenzhen": {"tls": {"cert_file": None, "key_file": "/x/client.key"}}}}
    refused(check(tmp_path, config), "cities.shenzhen.tls", "key_file is set without cert_file")


def test_plain_http_to_a_non_loopback_bureau_is_refused_even_with_allow_plaintext(
    tmp_path: Path,
) -> None:
    config = {
        "delivery": {"endpoint_allowlist": ["127.0.0.1:*", "bureau.wuhu.example:*"]},
        "cities": {
            "wuhu": {
                "endpoint": "http://bureau.wuhu.example:8080",
                "allow_plaintext": True,
                "credentials": {"secret": "real-secret-0000"},
            }
        },
    }
    refused(check(tmp_path, config), "cities.wuhu.endpoint", "plain HTTP is refused")


def test_plain_http_on_loopback_needs_an_explicit_allow_plaintext(tmp_path: Path) -> None:
    config = {"cities": {"wuhu": {"allow_plaintext": False}}}
    refused(check(tmp_path, config), "cities.wuhu.endpoint", "allow_plaintext: true")


def test_a_minimum_tls_version_below_the_bureaus_is_refused(tmp_path: Path) -> None:
    config = {"cities": {"nanjing": {"tls": {"min_version": "TLSv1.2"}}}}  # Nanjing: TLS 1.3
    refused(check(tmp_path, config), "cities.nanjing.tls.min_version", "TLSv1.3")


def test_an_expired_client_certificate_is_refused(tmp_path: Path) -> None:
    pair = client_pair(tmp_path, "old", not_before_days=-400, not_after_days=-1)
    refused(check(tmp_path, shenzhen_tls(pair)), "cities.shenzhen.tls.cert_file", "expired")


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    pair = client_pair(tmp_path, "sz")
    result = check(tmp_path, shenzhen_tls(pair, other_key(tmp_path, "sz")))
    refused(result, "cities.shenzhen.tls", "the key does not match the certificate")


def test_a_certificate_about_to_expire_is_accepted_with_a_warning(tmp_path: Path) -> None:
    pair = client_pair(tmp_path, "soon", not_after_days=5)
    result = check(tmp_path, shenzhen_tls(pair))
    assert result.exit_code == 0, result.output
    assert re.search(
        r"warning: cities\.shenzhen\.tls\.cert_file expires in [45]\.\d days", result.stderr
    )


def test_a_client_certificate_not_valid_yet_is_refused(tmp_path: Path) -> None:
    pair = client_pair(tmp_path, "early", not_before_days=2, not_after_days=365)
    refused(check(tmp_path, shenzhen_tls(pair)), "cities.shenzhen.tls.cert_file", "not valid yet")


@pytest.mark.parametrize("not_after_days", [365, 365 * 40], ids=["UTCTime", "GeneralizedTime"])
def test_the_client_certificate_dates_are_the_certificates_own(
    tmp_path: Path, not_after_days: int
) -> None:
    """Read from the certificate, also from a file that holds the key before it (after 2049 a
    certificate writes its dates as GeneralizedTime)."""
    pair = client_pair(tmp_path, "dates", not_before_days=-3, not_after_days=not_after_days)
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pair.key.read_bytes() + pair.cert.read_bytes())
    cert, problems = client_certificate("shenzhen", TlsSettings(cert_file=combined), time.time())
    assert problems == [] and cert is not None
    own = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    assert cert.not_before_s == own.not_valid_before_utc.timestamp()
    assert cert.not_after_s == own.not_valid_after_utc.timestamp()


def test_a_valid_client_certificate_is_accepted(tmp_path: Path) -> None:
    pair = client_pair(tmp_path, "sz")
    result = check(tmp_path, shenzhen_tls(pair))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr


# --- 2. credentials in URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [f"http://admin:{PASSWORD}@127.0.0.1:8080", f"https://admin:{PASSWORD}@127.0.0.1:18103/x"],
)
def test_credentials_in_an_endpoint_are_refused_without_printing_the_password(
    tmp_path: Path, endpoint: str
) -> None:
    config = {"cities": {"wuhu": {"endpoint": endpoint}}}
    result = check(tmp_path, config)  # check() asserts the password is not in the output
    refused(result, "cities.wuhu.endpoint", "credentials")
    assert "***@127.0.0.1" in result.stderr


def test_credentials_in_an_endpoint_from_the_environment_are_refused(tmp_path: Path) -> None:
    env = {"GREENCHANNEL_CITIES__WUHU__ENDPOINT": f"http://u:{PASSWORD}@127.0.0.1:1"}
    refused(check(tmp_path, {}, env), "cities.wuhu.endpoint", "credentials")


# --- 4. the configuration is total -----------------------------------------------------------


def test_an_unknown_greenchannel_variable_is_an_error_with_a_did_you_mean(tmp_path: Path) -> None:
    env = {"GREENCHANNEL_KAFAK__BOOTSTRAP_SERVERS": "10.0.0.1:9092"}
    result = check(tmp_path, {}, env)
    refused(result, "GREENCHANNEL_KAFAK__BOOTSTRAP_SERVERS")
    assert "did you mean GREENCHANNEL_KAFKA__BOOTSTRAP_SERVERS?" in result.stderr


def test_known_variables_and_new_city_blocks_are_accepted(tmp_path: Path) -> None:
    env = {
        "GREENCHANNEL_CITIES__WUHU__RATE_PER_S": "5",
        "GREENCHANNEL_CITIES__WUHU__CREDENTIALS__EXTRA__APP_KEY": "k",
        "GREENCHANNEL_INSTANCE": "3",
    }
    result = check(tmp_path, {}, env)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"observability": {"port": 70000}}, "observability.port"),
        ({"observability": {"port": -1}}, "observability.port"),
        ({"observability": {"host": "not a host!"}}, "observability.host"),
        ({"cities": {"wuhu": {"rate_per_s": float("inf")}}}, "cities.wuhu.rate_per_s"),
        ({"cities": {"wuhu": {"rate_per_s": float("nan")}}}, "cities.wuhu.rate_per_s"),
        ({"cities": {"wuhu": {"timeout_s": 1e9}}}, "cities.wuhu.timeout_s"),
        ({"cities": {"wuhu": {"burst": 10**9}}}, "cities.wuhu.burst"),
        ({"cities": {"wuhu": {"retry": {"jitter_s": float("inf")}}}}, "cities.wuhu.retry.jitter_s"),
        ({"codec": {"max_message_bytes": 10**12}}, "codec.max_message_bytes"),
        ({"router": {"watchdog_s": float("inf")}}, "router.watchdog_s"),
        ({"delivery": {"max_in_flight_per_city": 10**9}}, "delivery.max_in_flight_per_city"),
        (
            {"cities": {"wuhu": {"breaker": {"open_s": 300, "max_open_s": 60}}}},
            "cities.wuhu.breaker",
        ),
        ({"cities": {"wuhu": {"retry": {"initial_s": 30, "max_wait_s": 5}}}}, "cities.wuhu.retry"),
        (
            {"cities": {"wuhu": {"maintenance": [{"start": "02:00", "end": "02:00"}]}}},
            "cities.wuhu.maintenance",
        ),
    ],
)
def test_out_of_range_and_inconsistent_values_exit_2_naming_the_key(
    tmp_path: Path, config: dict[str, Any], key: str
) -> None:
    refused(check(tmp_path, config), key)


def test_an_out_of_range_port_from_the_environment_names_its_key(tmp_path: Path) -> None:
    refused(
        check(tmp_path, {}, {"GREENCHANNEL_OBSERVABILITY__PORT": "70000"}), "observability.port"
    )


def test_yaml_infinity_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gc.yaml"
    path.write_text("cities:\n  wuhu:\n    rate_per_s: .inf\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config"])
    refused(result, "cities.wuhu.rate_per_s")


@pytest.mark.parametrize("kind", ["missing", "directory", "empty"])
def test_an_unusable_secret_file_fails_check_config(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "secret"
    if kind == "directory":
        secret.mkdir()
    elif kind == "empty":
        secret.write_text("\n", encoding="utf-8")
    config = {"cities": {"wuhu": {"credentials": {"secret": None, "secret_file": str(secret)}}}}
    refused(check(tmp_path, config), "cities.wuhu.credentials.secret_file")


def test_check_config_elsewhere_notes_secret_files_missing_here(tmp_path: Path) -> None:
    config = {"cities": {"wuhu": {"credentials": {"secret": None, "secret_file": "/run/x/s"}}}}
    path = tmp_path / "gc.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config", "--elsewhere"])
    assert result.exit_code == 0, result.output
    assert "note: cities.wuhu.credentials.secret_file: /run/x/s does not exist" in result.stderr
    directory = tmp_path / "dir"
    directory.mkdir()
    config["cities"]["wuhu"]["credentials"]["secret_file"] = str(directory)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config", "--elsewhere"])
    refused(result, "cities.wuhu.credentials.secret_file", "not a regular file")


def _run(tmp_path: Path, config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return cli_run(["--config", str(path), "run", *args], timeout_s=60)


@pytest.mark.parametrize(
    ("config", "args", "key"),
    [
        ({"observability": {"port": 70000}}, (), "observability.port"),
        ({}, ("--metrics-port", "70000"), "--metrics-port"),
        ({"cities": {"wuhu": {"endpoint": f"http://a:{PASSWORD}@127.0.0.1:1"}}}, (), "wuhu"),
        ({"cities": {"shenzhen": {"tls": {"cert_file": None, "key_file": None}}}}, (), "shenzhen"),
        (
            {"cities": {"wuhu": {"credentials": {"secret": None, "secret_file": "/nonexistent"}}}},
            (),
            "cities.wuhu.credentials.secret_file",
        ),
    ],
)
def test_run_refuses_before_touching_kafka(
    tmp_path: Path, config: dict[str, Any], args: tuple[str, ...], key: str
) -> None:
    # bootstrap on a port nothing listens on: a run that got past the checks would hang here
    done = _run(tmp_path, {"kafka": {"bootstrap_servers": "127.0.0.1:1"}} | config, *args)
    assert done.returncode == 2, done.stderr
    assert key in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert PASSWORD not in done.stderr + done.stdout


def test_run_refuses_an_ops_address_it_cannot_bind(tmp_path: Path) -> None:
    config = {
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},
        "observability": {"host": "192.0.2.1"},  # TEST-NET-1: never a local address
    }
    done = _run(tmp_path, config, "--city", "wuhu")
    assert done.returncode == 2, done.stderr
    assert "observability.host" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_development_brokers_out_of_range_port_is_refused_naming_the_key(
    tmp_path: Path,
) -> None:
    # ``broker:`` belongs to the development broker (gateway.dev.broker), which the gateway's
    # check-config leaves aside; the broker's own loader refuses it, naming the key.
    from gateway.dev.broker import load_broker_settings
    from gateway.errors import ConfigError

    path = tmp_path / "gc.yaml"
    path.write_text(yaml.safe_dump({"broker": {"port": 99999}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broker\.port"):
        load_broker_settings(path)


# --- 4. TLS contexts, shared by the cities whose settings are the same ------------------------


def test_cities_with_the_same_tls_settings_share_one_context(tmp_path: Path) -> None:
    """A hundred cities must not load the CA bundle a hundred times (~25 ms and ~0.7 MiB
    each); the same files and minimum version give the same context, which nobody changes."""
    pair = client_pair(tmp_path, "shared")
    with_cert = TlsSettings(cert_file=pair.cert, key_file=pair.key)
    first = client_context(with_cert, TransportPolicy())
    assert (
        client_context(TlsSettings(cert_file=pair.cert, key_file=pair.key), TransportPolicy())
        is first
    )
    plain = client_context(TlsSettings(), TransportPolicy())
    assert plain is client_context(TlsSettings(), TransportPolicy())
    assert plain is not first
    strict = client_context(TlsSettings(), TransportPolicy(min_tls="TLSv1.3"))
    assert strict is not plain and strict.minimum_version == ssl.TLSVersion.TLSv1_3
    assert plain.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_rewritten_certificate_file_gets_a_context_of_its_own(tmp_path: Path) -> None:
    """The cache knows a file by device, inode, size and mtime: a certificate replaced on
    disk (a rotation, or a broken key put in its place) is loaded again, and refused if bad."""
    pair = client_pair(tmp_path, "rot")
    tls = TlsSettings(cert_file=pair.cert, key_file=pair.key)
    before = client_context(tls, TransportPolicy())
    (tmp_path / "new").mkdir()
    fresh = client_pair(tmp_path / "new", "rot")
    pair.cert.write_bytes(fresh.cert.read_bytes())
    pair.key.write_bytes(fresh.key.read_bytes())
    os.utime(pair.cert, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    after = client_context(tls, TransportPolicy())
    assert after is not before
    pair.key.write_bytes(other_key(tmp_path, "rot").read_bytes())
    os.utime(pair.key, ns=(time.time_ns(), time.time_ns() + 2_000_000))
    with pytest.raises(ssl.SSLError):
        client_context(tls, TransportPolicy())
    cert, problems = client_certificate("shenzhen", tls, time.time())
    assert cert is None and problems == [
        "cities.shenzhen.tls: cannot load the TLS files: the key does not match the certificate"
    ]
