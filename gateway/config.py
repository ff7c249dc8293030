"""Typed settings: one YAML file plus ``GREENCHANNEL_`` environment overrides.

Precedence (highest first): ``GREENCHANNEL_*`` environment variables (nested keys joined by
``__``, e.g. ``GREENCHANNEL_CITIES__WUHU__RATE_PER_S=5``), the YAML file given with
``--config`` / ``GREENCHANNEL_CONFIG``, then the built-in defaults
(``gateway/defaults/config.yaml``). ``GREENCHANNEL_BOOTSTRAP_SERVERS`` is a shortcut for
``kafka.bootstrap_servers``. Secrets are ``SecretStr`` and may come from a file
(``secret_file``); they are never logged or printed.

Validated once at start-up (and by ``greenchannel check-config``); business code reads
attributes, never raw dict keys.
"""

from __future__ import annotations

import os
from datetime import date, time
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gateway.errors import ConfigError

ENV_PREFIX = "GREENCHANNEL_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Strict):
    bootstrap_servers: str = "127.0.0.1:19092"
    client_id: str = "greenchannel"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    request_timeout_ms: int = Field(30_000, ge=1_000)

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        """Reject combinations a client would silently ignore or fail on, naming the key."""
        sasl = self.security_protocol.startswith("SASL_")
        if sasl:
            # sasl_password may be missing here: it usually comes from the environment at run
            # time (GREENCHANNEL_KAFKA__SASL_PASSWORD); clients refuse to start without it.
            for key in ("sasl_mechanism", "sasl_username"):
                value = getattr(self, key)
                if value is None or (isinstance(value, str) and not value.strip()):
                    raise ValueError(
                        f"kafka.{key} is required when kafka.security_protocol is "
                        f"{self.security_protocol}"
                    )
            if self.sasl_password is not None and not self.sasl_password.get_secret_value():
                raise ValueError("kafka.sasl_password is empty")
        else:
            for key in ("sasl_mechanism", "sasl_username", "sasl_password"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"kafka.{key} is set but kafka.security_protocol is "
                        f"{self.security_protocol} (use SASL_SSL or SASL_PLAINTEXT)"
                    )
        if not self.security_protocol.endswith("SSL"):
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"kafka.{key} is set but kafka.security_protocol is "
                        f"{self.security_protocol} (use SSL or SASL_SSL)"
                    )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("kafka.ssl_keyfile is set without kafka.ssl_certfile")
        return self

    def missing_files(self) -> list[str]:
        """``kafka.<key>: <path>`` for every configured TLS file that does not exist."""
        return [
            f"kafka.{key}: {path} does not exist"
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
            if (path := getattr(self, key)) is not None and not Path(path).is_file()
        ]


class TopicSettings(_Strict):
    prefix: str = "gc."
    replication_factor: int = Field(1, ge=1)


class CodecSettings(_Strict):
    wire_format: Literal["single_object", "confluent"] = "single_object"
    registry_url: str | None = None
    max_message_bytes: int = Field(256 * 1024, ge=1024)


class BrokerSettings(_Strict):
    """The embedded development broker (``greenchannel broker``)."""

    kafka_version: str = "4.1.1"
    port: int = 19092
    controller_port: int = 19093
    data_dir: Path = Path("var/kafka")
    cache_dir: Path = Path.home() / ".cache" / "greenchannel" / "kafka"
    heap: str = "-Xms256m -Xmx768m"
    start_timeout_s: float = 90.0
    sasl_ssl_port: int | None = None
    """Also listen with SASL_SSL here: TLS with a generated development CA (``<data_dir>/tls``)
    and SCRAM-SHA-512 for the user below, created when the storage is formatted."""
    scram_username: str = "gateway"
    scram_password: SecretStr = SecretStr("dev-only-kafka-scram")


class RouterSettings(_Strict):
    group_id: str = "greenchannel-router"
    transactional_id_prefix: str = "greenchannel-router"
    rules_file: Path | None = None
    green_cities: list[str] = Field(
        default_factory=lambda: [
            "beijing",
            "guangzhou",
            "shenzhen",
            "chongqing",
            "hangzhou",
            "hefei",
            "nanchang",
            "suzhou",
            "wuhu",
            "nanjing",
        ]
    )
    max_batch: int = Field(8_000, ge=1, le=50_000)
    """Most complaints per transaction (one poll). Bigger transactions amortise the per-partition
    transaction work (~60 output partitions) but hold more in memory (~11 KiB of RSS per record
    in flight, fetch buffers included): 8,000 keeps a router under ~150 MiB."""
    poll_timeout_ms: int = Field(100, ge=1)
    linger_ms: int = Field(500, ge=0, le=10_000)
    """How long the router's producer may hold a batch. Committing a transaction sends
    everything at once, so this adds no latency; it keeps a transaction's records for one
    partition in one batch instead of many small ones (~15 % less CPU than 5 ms)."""
    transaction_timeout_ms: int = Field(60_000, ge=1_000)
    watchdog_s: float = Field(30.0, gt=0)
    static_membership: bool = False
    """Join the group with ``group.instance.id = <group_id>-<instance>`` so a restarted replica
    gets its partitions back at once instead of after the session timeout."""
    session_timeout_ms: int = Field(10_000, ge=6_000)
    handling_days: int = Field(10, ge=1)


class RetrySettings(_Strict):
    """Per-city retry policy, built once into a tenacity ``Retrying``."""

    max_attempts: int = Field(8, ge=1)
    initial_s: float = Field(0.2, gt=0)
    max_wait_s: float = Field(10.0, gt=0)
    jitter_s: float = Field(0.5, ge=0)
    budget_s: float = Field(60.0, gt=0)
    retry_after_cap_s: float = Field(30.0, gt=0)


class BreakerSettings(_Strict):
    failure_threshold: int = Field(5, ge=1)
    open_s: float = Field(10.0, gt=0)
    max_open_s: float = Field(120.0, gt=0)


class MaintenanceWindow(_Strict):
    """A daily window (bureau local time, Asia/Shanghai) when nothing is sent."""

    start: time
    end: time


class CredentialSettings(_Strict):
    client_id: str = ""
    secret: SecretStr | None = None
    secret_file: Path | None = None
    extra: dict[str, str] = Field(default_factory=dict)

    def resolved_secret(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_file is not None:
            return self.secret_file.read_text(encoding="utf-8").strip()
        return ""


class TlsSettings(_Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class InboundSettings(_Strict):
    """Case updates from this city's bureau (``docs/cases.md``): the callback receiver or the
    poller, whichever the connector declares."""

    enabled: bool = True
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(0, ge=0, le=65535)
    """Port of this city's callback receiver (0: any free port; production sets it)."""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    """Serve the receiver over HTTPS with this certificate (where the city requires TLS)."""
    rate_per_s: float = Field(20.0, gt=0)
    """Callbacks accepted per second (beyond: the city's rate-limited answer)."""
    burst: int = Field(20, ge=1)
    max_skew_s: float = Field(300.0, gt=0)
    """A callback's signed timestamp may be this far from our clock; older ones are stale."""
    poll_interval_s: float = Field(30.0, gt=0)
    """Seconds between two polls of the bureau when the last one brought nothing more."""


class CitySettings(_Strict):
    enabled: bool = True
    connector: str | None = None
    """Entry-point name of the connector; defaults to the city key."""
    endpoint: str
    rate_per_s: float = Field(20.0, gt=0)
    burst: int = Field(2, ge=1)
    timeout_s: float = Field(5.0, gt=0)
    concurrency: int = Field(4, ge=1, le=64)
    sla_s: float = Field(3600.0, gt=0)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    credentials: CredentialSettings = Field(default_factory=CredentialSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    inbound: InboundSettings = Field(default_factory=InboundSettings)


class DeliverySettings(_Strict):
    group_id: str = "greenchannel-deliver"
    poll_timeout_ms: int = Field(100, ge=1)
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    endpoint_allowlist: list[str] = Field(default_factory=lambda: ["127.0.0.1:*", "localhost:*"])
    """``host:port`` patterns bureau endpoints (and redirects) must match; ``*`` for any port."""
    max_in_flight_per_city: int = Field(200, ge=1)


class ObservabilitySettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(9308, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"


class CalendarSettings(_Strict):
    """The official working-day calendar (``gateway.cases.calendar``)."""

    override_file: Path | None = None
    """Years the pinned ``chinese_calendar`` does not know yet (format and how to fill it in:
    ``gateway/defaults/calendar.yaml``); a year here replaces the library's year."""
    lookahead_days: int = Field(60, ge=1, le=366)
    """``greenchannel_calendar_unknown_days`` counts unknown days in this many coming days."""


class DeadlineRuleSettings(_Strict):
    """A statutory limit in working days for steps started on or after ``effective_from``."""

    limit: Literal["acceptance", "negotiation", "mediation"]
    working_days: int = Field(ge=1, le=366)
    effective_from: date
    source: str = ""


def _default_deadlines() -> list[DeadlineRuleSettings]:
    order20 = date(2020, 1, 1)
    return [
        DeadlineRuleSettings(
            limit="acceptance",
            working_days=7,
            effective_from=order20,
            source="SAMR Order 20 Art. 14",
        ),
        DeadlineRuleSettings(
            limit="negotiation", working_days=10, effective_from=order20, source="12315 ODR rules"
        ),
        DeadlineRuleSettings(
            limit="mediation",
            working_days=45,
            effective_from=order20,
            source="SAMR Order 20 Art. 21",
        ),
    ]


class CasesSettings(_Strict):
    """Case lifecycle: the calendar and the deadline rule set (docs/cases.md)."""

    calendar: CalendarSettings = Field(default_factory=CalendarSettings)
    deadlines: list[DeadlineRuleSettings] = Field(default_factory=_default_deadlines)
    intake_group_id: str = "greenchannel-cases-intake"
    """Consumer group (and transactional id prefix) turning escalations and receipts into
    case updates."""
    keeper_group_id: str = "greenchannel-cases"
    """Consumer group (and transactional id prefix) of the case keeper."""
    results_group_id: str = "greenchannel-results"
    """Consumer group (and transactional id prefix) delivering handling results."""
    poller_transactional_id: str = "greenchannel-cases-poller"
    """Transactional id prefix of the poller (run one poller replica)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    codec: CodecSettings = Field(default_factory=CodecSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    cases: CasesSettings = Field(default_factory=CasesSettings)
    cities: dict[str, CitySettings] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # env beats the YAML file, which is passed as init kwargs.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        poll_interval_s = self.delivery.max_poll_interval_ms / 1000
        for key, city in self.cities.items():
            if city.retry.budget_s >= poll_interval_s:
                raise ValueError(
                    f"cities.{key}.retry.budget_s ({city.retry.budget_s:g}) must be shorter than "
                    f"delivery.max_poll_interval_ms ({poll_interval_s:g} s)"
                )
        for key, city in self.cities.items():
            if not is_allowed(city.endpoint, self.delivery.endpoint_allowlist):
                raise ValueError(
                    f"cities.{key}.endpoint {city.endpoint!r} is not in delivery.endpoint_allowlist"
                )
        for key, city in self.cities.items():
            secret = city.credentials.secret
            host = urlsplit(city.endpoint).hostname or ""
            dev = secret is not None and secret.get_secret_value().startswith("dev-only-")
            if dev and host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError(
                    f"cities.{key}.credentials.secret is a development-only secret but the "
                    "endpoint is not on loopback: configure the real secret"
                )
        for name in self.router.green_cities:
            if name not in self.cities:
                raise ValueError(
                    f"router.green_cities names {name!r}, which has no cities.{name} block"
                )
        return self

    def city(self, key: str) -> CitySettings:
        return self.cities[key]

    def connector_of(self, key: str) -> str:
        return self.cities[key].connector or key


def is_allowed(url: str, allowlist: list[str]) -> bool:
    """True when the URL's host:port matches an allowlist pattern (``host:port`` or ``host:*``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for pattern in allowlist:
        host, _, pport = pattern.rpartition(":")
        if host.lower() == parts.hostname.lower() and pport in ("*", str(port)):
            return True
    return False


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def default_yaml() -> dict[str, Any]:
    text = resources.files("gateway").joinpath("defaults/config.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without PyYAML's snippet of the offending line (it may hold a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return type(exc).__name__


def _format_validation(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        # Our own validators name the full key already ("kafka.sasl_username is required...").
        lines.append(
            msg if err["type"] == "value_error" and "." in msg.split(" ")[0] else f"{loc}: {msg}"
        )
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Load defaults, then the YAML file, then env; raise ConfigError naming the bad key."""
    path = path or os.environ.get(f"{ENV_PREFIX}CONFIG")
    data = default_yaml()
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"config file {path} is not valid YAML: {_yaml_problem(exc)}"
            ) from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = _deep_merge(data, loaded)
    data = _deep_merge(data, overrides)
    bootstrap = os.environ.get(f"{ENV_PREFIX}BOOTSTRAP_SERVERS")
    if bootstrap:
        data = _deep_merge(data, {"kafka": {"bootstrap_servers": bootstrap}})
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from exc
    except SettingsError as exc:  # an unparsable GREENCHANNEL_* value (its text is not shown)
        raise ConfigError(f"invalid environment override: {exc}") from exc
