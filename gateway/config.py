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

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from datetime import date, time
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gateway.cities import GREEN_CHANNEL_KEYS, default_cities_config
from gateway.errors import ConfigError

ENV_PREFIX = "GREENCHANNEL_"


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOOL_ENV = frozenset(
    {
        "CONFIG",  # the config file (--config)
        "BOOTSTRAP_SERVERS",  # shortcut for kafka.bootstrap_servers
        "INSTANCE",  # --instance of route/run
        "NO_INSTALL",  # deploy/check.sh: do not install validators
        "TOOLS_DIR",  # deploy/check.sh: where the validators live
    }
)
"""``GREENCHANNEL_*`` variables that are not settings. Names starting ``GREENCHANNEL_TEST_`` are
reserved for the test harness, ``GREENCHANNEL_BROKER__*`` configure the development broker
(``gateway.dev.broker.BrokerSettings``, which checks them itself). Any other ``GREENCHANNEL_*``
variable must name a setting."""
TOOL_ENV_PREFIXES = ("TEST_", "BROKER__")


class _Strict(BaseModel):
    # allow_inf_nan=False: no setting accepts .inf or NaN (YAML `.inf` parses to a float).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    request_timeout_ms: int = Field(30_000, ge=1_000, le=300_000)
    """Per request, and how long a client waits for a first broker at start (then exit 5)."""

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for raw in value.split(","):
            entry = raw.strip()
            if "@" in entry or "://" in entry:
                raise ValueError("must be host:port[,host:port...] without a scheme or credentials")
            host, _, port = entry.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not valid_host(host) or not port.isdigit() or not 1 <= int(port) <= 65_535:
                raise ValueError(f"{entry!r} is not host:port with a port in 1-65535")
        return value

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
    replication_factor: int = Field(1, ge=1, le=16)


class SchemaStoreSettings(_Strict):
    """Writer schemas upstream teams add without a gateway release (single-object encoding)."""

    follow_topic: bool = True
    """Read the compacted ``{prefix}schemas.v1`` topic at start and follow it while running
    (``greenchannel schemas register FILE`` publishes to it)."""
    directory: Path | None = None
    """Also load every ``*.avsc`` file of this directory at start."""
    wait_s: float = Field(5.0, ge=0, le=60)
    """How long a record with an unknown fingerprint waits for the store to catch up (to the
    topic's end) before it is dead-lettered as ``unknown_schema``."""
    start_timeout_s: float = Field(30.0, gt=0, le=600)


class CodecSettings(_Strict):
    wire_format: Literal["single_object", "confluent"] = "single_object"
    registry_url: str | None = None
    max_message_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024)
    subject_name_strategy: Literal[
        "TopicNameStrategy", "RecordNameStrategy", "TopicRecordNameStrategy"
    ] = "TopicNameStrategy"
    """Registry subjects of what the gateway writes in Confluent framing (Confluent's names)."""
    schema_store: SchemaStoreSettings = Field(default_factory=SchemaStoreSettings)

    @field_validator("registry_url")
    @classmethod
    def _registry(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{redact_url(value)!r} is not an http(s) URL with a host")
        if "@" in parts.netloc:
            raise ValueError(f"{redact_url(value)!r} carries credentials: they are refused in URLs")
        return value


class RouterSettings(_Strict):
    group_id: str = "greenchannel-router"
    transactional_id_prefix: str = "greenchannel-router"
    rules_file: Path | None = None
    green_cities: list[str] = Field(default_factory=lambda: list(GREEN_CHANNEL_KEYS))
    max_batch: int = Field(8_000, ge=1, le=50_000)
    """Most complaints per transaction (one poll). Bigger transactions amortise the per-partition
    transaction work (~60 output partitions) but hold more in memory (~5-6 KiB of RSS per record
    in flight, fetch buffers included): 8,000 keeps a router at ~100 MiB (bench.route)."""
    poll_timeout_ms: int = Field(100, ge=1, le=60_000)
    linger_ms: int = Field(500, ge=0, le=10_000)
    """How long the router's producer may hold a batch. Committing a transaction sends
    everything at once, so this adds no latency; it keeps a transaction's records for one
    partition in one batch instead of many small ones (~15 % less CPU than 5 ms)."""
    transaction_timeout_ms: int = Field(60_000, ge=1_000, le=900_000)
    watchdog_s: float = Field(30.0, gt=0, le=3600)
    static_membership: bool = False
    """Join the group with ``group.instance.id = <group_id>-<instance>`` so a restarted replica
    gets its partitions back at once instead of after the session timeout (always on for the
    members of ``--processes``)."""
    session_timeout_ms: int = Field(10_000, ge=6_000, le=300_000)
    heartbeat_interval_ms: int = Field(500, ge=100, le=2_000)
    """How often the router's consumer heartbeats. A member learns of a rebalance (another
    member joining) only from a heartbeat, and a cooperative rebalance takes two: at
    kafka-python's 3 s the other members' commits stopped for up to ~6 s per join."""
    handling_days: int = Field(10, ge=1, le=60)
    timestamp_min_ms: int = Field(946_684_800_000, ge=0, le=4_102_444_800_000)
    """Earliest plausible complaint timestamp (``received_at``, ``order.paid_at``), epoch ms
    (default 2000-01-01 UTC); an earlier or negative one is dead-lettered
    (``implausible_timestamp``)."""
    timestamp_max_ahead_s: float = Field(86_400.0, ge=0, le=366 * 86_400)
    """How far ahead of the router's clock a complaint timestamp may be (clock skew upstream);
    later ones (year 10000...) are dead-lettered (``implausible_timestamp``)."""
    topic_limits_refresh_s: float = Field(300.0, gt=0, le=86_400)
    """How often the output topics' effective ``max.message.bytes`` is re-read (also after the
    broker refused a record as too large)."""
    backoff_initial_s: float = Field(0.2, gt=0, le=60)
    backoff_max_s: float = Field(10.0, gt=0, le=600)
    """Capped exponential backoff for stage-transient failures (broker, registry)."""
    max_batch_aborts: int = Field(10, ge=1, le=10_000)
    """Aborts of the same batch in a row after which ``/healthz`` reports the router unhealthy
    (it keeps retrying with backoff; the orchestrator decides)."""
    liveness_stale_s: float = Field(120.0, gt=0, le=3600)
    """No progress (no committed transaction, no idle poll) for this long: ``/healthz`` 503."""


class RetrySettings(_Strict):
    """Per-city retry policy, built once into a tenacity ``Retrying``."""

    max_attempts: int = Field(8, ge=1, le=100)
    initial_s: float = Field(0.2, gt=0, le=60)
    max_wait_s: float = Field(10.0, gt=0, le=600)
    jitter_s: float = Field(0.5, ge=0, le=60)
    budget_s: float = Field(60.0, gt=0, le=3600)
    retry_after_cap_s: float = Field(30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _order(self) -> RetrySettings:
        if self.initial_s > self.max_wait_s:
            raise ValueError(
                f"initial_s ({self.initial_s:g}) must not exceed max_wait_s ({self.max_wait_s:g})"
            )
        return self


class BreakerSettings(_Strict):
    failure_threshold: int = Field(5, ge=1, le=1000)
    open_s: float = Field(10.0, gt=0, le=3600)
    max_open_s: float = Field(120.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _order(self) -> BreakerSettings:
        if self.open_s > self.max_open_s:
            raise ValueError(
                f"open_s ({self.open_s:g}) must not exceed max_open_s ({self.max_open_s:g})"
            )
        return self


class MaintenanceWindow(_Strict):
    """A daily window (bureau local time, Asia/Shanghai) when nothing is sent."""

    start: time
    end: time

    @model_validator(mode="after")
    def _not_empty(self) -> MaintenanceWindow:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty")
        return self


class CredentialSettings(_Strict):
    client_id: str = ""
    secret: SecretStr | None = None
    secret_file: Path | None = None
    extra: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> CredentialSettings:
        if self.secret is not None and self.secret_file is not None:
            raise ValueError("set secret or secret_file, not both")
        return self

    def resolved_secret(self) -> str:
        if self.secret is not None:
            return self.secret.get_secret_value()
        if self.secret_file is not None:
            return self.secret_file.read_text(encoding="utf-8").strip()
        return ""

    def secret_file_problem(self) -> str | None:
        """Why ``secret_file`` cannot be used (missing, a directory, unreadable, empty), or None."""
        path = self.secret_file
        if path is None:
            return None
        if not path.exists():
            return f"{path} does not exist"
        if not path.is_file():
            return f"{path} is not a regular file"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return f"{path} cannot be read: {type(exc).__name__}"
        return f"{path} is empty" if not text.strip() else None


class TlsSettings(_Strict):
    """TLS towards one bureau. ``cert_file`` (PEM, may also hold the key) and ``key_file`` are
    the gateway's client certificate (mTLS); ``ca_file`` a private CA for the bureau's server
    certificate; ``min_version`` may raise, never lower, what the connector requires."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    min_version: Literal["TLSv1.2", "TLSv1.3"] | None = None

    @model_validator(mode="after")
    def _pairs(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set without cert_file (the key alone is useless)")
        return self


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
    rate_per_s: float = Field(20.0, gt=0, le=10_000)
    """Callbacks accepted per second (beyond: the city's rate-limited answer)."""
    burst: int = Field(20, ge=1, le=10_000)
    max_skew_s: float = Field(300.0, gt=0, le=3600)
    """A callback's signed timestamp may be this far from our clock; older ones are stale."""
    poll_interval_s: float = Field(30.0, gt=0, le=86_400)
    """Seconds between two polls of the bureau when the last one brought nothing more."""


class CitySettings(_Strict):
    enabled: bool = True
    connector: str | None = None
    """Entry-point name of the connector; defaults to the city key."""
    endpoint: str
    allow_plaintext: bool = False
    """Allow ``http://`` — only to a loopback endpoint (the development simulator)."""
    rate_per_s: float = Field(20.0, gt=0, le=10_000)
    burst: int = Field(2, ge=1, le=10_000)
    timeout_s: float = Field(5.0, gt=0, le=300)
    """Longest wait for one socket operation (connect, TLS, one write, one read)."""
    deadline_s: float = Field(15.0, ge=0.5, le=300.0)
    """Overall bound on one attempt: connect + TLS + write + the whole answer (0.5-300 s). An
    attempt past it is cut, counts as a failure for the breaker and is retried."""
    max_answer_bytes: int = Field(1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    """Largest bureau answer read (4 KiB-64 MiB); reading stops there and the answer is an
    irregular answer (dead-lettered)."""
    concurrency: int = Field(4, ge=1, le=64)
    sla_s: float = Field(3600.0, gt=0, le=30 * 86_400)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    credentials: CredentialSettings = Field(default_factory=CredentialSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    inbound: InboundSettings = Field(default_factory=InboundSettings)


class DeliverySettings(_Strict):
    group_id: str = "greenchannel-deliver"
    poll_timeout_ms: int = Field(100, ge=1, le=60_000)
    max_poll_interval_ms: int = Field(300_000, ge=10_000, le=3_600_000)
    endpoint_allowlist: list[str] = Field(default_factory=lambda: ["127.0.0.1:*", "localhost:*"])
    """``host:port`` patterns bureau endpoints (and redirects) must match; ``*`` for any port."""
    max_in_flight_per_city: int = Field(200, ge=1, le=100_000)
    certificate_warn_days: int = Field(30, ge=1, le=365)
    """Warn (log, and the alert on the expiry metric) this many days before a client
    certificate expires."""
    max_record_bytes: int = Field(1_000_000, ge=16_384, le=64 * 1024 * 1024)
    """Largest receipt / dead letter sent (key + value + headers). Lowered at start to the
    receipts and dead-letter topics' own ``max.message.bytes`` when they set one; a dead
    letter over it is cut (see gateway.delivery.outcomes), a receipt over it dead-lettered."""
    stuck_after_s: float = Field(1800.0, ge=60.0, le=7 * 86_400)
    """``/healthz`` turns unhealthy when one unfinished record has held a partition's commit
    point this long while later records are final and its city is available."""


class ObservabilitySettings(_Strict):
    host: str = "127.0.0.1"
    """Bind address of the ops endpoint (/metrics /healthz /readyz): an IP address or a host
    name. Loopback by default; a container behind a Service needs its pod address or 0.0.0.0
    (docs/security.md)."""
    port: int = Field(9308, ge=0, le=65_535)
    max_connections: int = Field(64, ge=1, le=1024)
    """Connections the ops endpoint holds open at once; when full, the one that has waited
    longest for its request is closed to make room."""
    request_timeout_s: float = Field(5.0, gt=0, le=60)
    """Idle and header timeout per connection: a client must send its request within this."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not valid_host(value):
            raise ValueError(f"{value!r} is neither an IP address nor a valid host name")
        return value

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"


class ProcessSettings(_Strict):
    """How many member processes ``greenchannel run`` / ``route`` start under one supervisor
    (``gateway.supervisor``), and how it restarts them."""

    members: int | None = Field(None, ge=1, le=64)
    """Member processes (``--processes`` overrides it). None: one per core this process may use
    (CPU affinity and the cgroup CPU limit). 1: no supervisor, the loops run in this process."""
    restart_initial_s: float = Field(0.5, gt=0, le=60)
    """Wait before restarting a member that exited; doubles for each exit in a row."""
    restart_max_s: float = Field(30.0, gt=0, le=600)
    """The longest wait before a restart."""
    restart_reset_s: float = Field(60.0, gt=0, le=3600)
    """A member that ran this long before exiting is restarted after ``restart_initial_s``."""
    max_restarts: int = Field(10, ge=1, le=10_000)
    """More restarts of one member than this within ``restart_window_s``: the supervisor stops
    every member and exits with that member's code (the orchestrator sees the crash loop)."""
    restart_window_s: float = Field(600.0, gt=0, le=86_400)
    start: Literal["fork", "exec"] = "fork"
    """How the supervisor starts its members. ``fork``: the first members are forks of the
    supervisor, which has imported their code once (a member is ready ~0.8 s of CPU sooner,
    and the members share those pages); restarts, made once the supervisor runs its ops
    endpoint's threads, start a fresh interpreter. ``exec``: every member is a fresh
    ``greenchannel`` process."""


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


class EnvOverFile(BaseSettings):
    """Settings whose ``GREENCHANNEL_*`` environment variables beat the YAML file (passed as
    init kwargs); no dotenv or secrets directory. The gateway's :class:`Settings` and the
    development broker's settings."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


class Settings(EnvOverFile):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    codec: CodecSettings = Field(default_factory=CodecSettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    process: ProcessSettings = Field(default_factory=ProcessSettings)
    cases: CasesSettings = Field(default_factory=CasesSettings)
    cities: dict[str, CitySettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        problems = [p for key, city in self.cities.items() for p in self._city_problems(key, city)]
        problems += [
            f"router.green_cities names {name!r}, which has no cities.{name} block"
            for name in self.router.green_cities
            if name not in self.cities
        ]
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def _city_problems(self, key: str, city: CitySettings) -> list[str]:
        """Every cross-field problem of ``cities.<key>``; endpoints shown without userinfo."""
        problems = []
        shown = redact_url(city.endpoint)
        if not is_allowed(city.endpoint, self.delivery.endpoint_allowlist):
            problems.append(
                f"cities.{key}.endpoint {shown!r} is not in delivery.endpoint_allowlist"
            )
        problem = endpoint_problem(city.endpoint, city.allow_plaintext)
        if problem is not None:
            problems.append(f"cities.{key}.endpoint {shown!r}: {problem}")
        poll_interval_s = self.delivery.max_poll_interval_ms / 1000
        if city.retry.budget_s >= poll_interval_s:
            problems.append(
                f"cities.{key}.retry.budget_s ({city.retry.budget_s:g}) must be shorter than "
                f"delivery.max_poll_interval_ms ({poll_interval_s:g} s)"
            )
        secret = city.credentials.secret
        host = urlsplit(city.endpoint).hostname or ""
        dev = secret is not None and secret.get_secret_value().startswith("dev-only-")
        if dev and not is_loopback(host):
            problems.append(
                f"cities.{key}.credentials.secret is a development-only secret but the "
                "endpoint is not on loopback: configure the real secret"
            )
        return problems

    def city(self, key: str) -> CitySettings:
        return self.cities[key]

    def file_problems(self, cities: Iterable[str] | None = None) -> list[str]:
        """Every secret file of the given (default: enabled) cities that cannot be used, as
        ``cities.<key>.credentials.secret_file: <why>``. ``check-config`` and ``run`` refuse
        them; the file is read here, so a missing mount fails at start, not at the first
        delivery."""
        keys = cities if cities is not None else [k for k, c in self.cities.items() if c.enabled]
        return [
            f"cities.{key}.credentials.secret_file: {problem}"
            for key in keys
            if (problem := self.cities[key].credentials.secret_file_problem()) is not None
        ]

    def connector_of(self, key: str) -> str:
        return self.cities[key].connector or key


def redact_url(url: str) -> str:
    """``url`` without its userinfo (``http://admin:pw@host/`` -> ``http://***@host/``), for
    every message or log line that shows an endpoint."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_problem(url: str, allow_plaintext: bool) -> str | None:
    """Why a bureau endpoint is refused (credentials in it, plain HTTP off loopback...), or
    None. The message never repeats the userinfo."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return "is not a valid URL (bad port?)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if "@" in parts.netloc:
        return (
            "carries credentials (user:password@): they would be sent as HTTP Basic auth and "
            "shown in logs; put them in credentials (secret or secret_file) instead"
        )
    if parts.scheme == "http":
        if not is_loopback(parts.hostname):
            return "plain HTTP is refused for a non-loopback bureau: use https"
        if not allow_plaintext:
            return "plain HTTP needs allow_plaintext: true (loopback only, for the simulator)"
    return None


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def valid_host(host: str) -> bool:
    """An IP address literal or an RFC 1123 host name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    labels = host.rstrip(".").split(".")
    return 0 < len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


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
    """The built-in defaults: ``defaults/config.yaml`` over the cities of the city table."""
    text = resources.files("gateway").joinpath("defaults/config.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return _deep_merge({"cities": default_cities_config()}, data)


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


def _unwrap(annotation: Any) -> Any:
    """The model class or ``dict`` value type an annotation leads to (None for a leaf)."""
    origin = get_origin(annotation)
    if origin is dict:
        return ("dict", get_args(annotation)[1])
    if origin is not None and origin is not Literal:
        for arg in get_args(annotation):
            inner = _unwrap(arg)
            if inner is not None:
                return inner
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _env_path_ok(node: Any, parts: list[str]) -> bool:
    """True when ``parts`` (an env name split at ``__``) names a setting, or a whole subtree."""
    if not parts:
        return True
    if isinstance(node, tuple):  # ("dict", value type): any key, then the value type
        return _env_path_ok(_unwrap(node[1]) if _unwrap(node[1]) else None, parts[1:])
    if node is None:  # a leaf, or a dict of plain values (credentials.extra)
        return False
    field = node.model_fields.get(parts[0].lower())
    if field is None:
        return False
    inner = _unwrap(field.annotation)
    if inner is None:
        return len(parts) == 1 or (get_origin(field.annotation) is dict and len(parts) == 2)
    return _env_path_ok(inner, parts[1:])


def _env_names(node: Any, data: Any, prefix: str) -> Iterable[str]:
    """Every leaf setting's environment variable name (for did-you-mean)."""
    if isinstance(node, tuple):
        keys = data.keys() if isinstance(data, dict) else ()
        for key in keys:
            inner = _unwrap(node[1])
            sub = data[key] if isinstance(data, dict) else None
            yield from _env_names(inner, sub, f"{prefix}__{str(key).upper()}")
        return
    if node is None:
        yield prefix
        return
    for name, field in node.model_fields.items():
        sub = data.get(name) if isinstance(data, dict) else None
        yield from _env_names(_unwrap(field.annotation), sub, f"{prefix}__{name.upper()}")


def unknown_env(environ: Mapping[str, str], data: Mapping[str, Any]) -> list[str]:
    """``GREENCHANNEL_*`` variables that name no setting, each with a did-you-mean."""
    names = [n.removeprefix("__") for n in _env_names(Settings, dict(data), "")]
    names += sorted(TOOL_ENV)
    problems = []
    for var in sorted(environ):
        if not var.upper().startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].upper()
        if rest in TOOL_ENV or rest.startswith(TOOL_ENV_PREFIXES):
            continue
        if _env_path_ok(Settings, rest.split("__")):
            continue
        close = difflib.get_close_matches(rest, names, n=1, cutoff=0.6)
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
        problems.append(f"unknown environment variable {var}: it names no setting{hint}")
    return problems


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
    # ``broker:`` configures the development broker (gateway.dev.broker.BrokerSettings), not the
    # gateway: a file shared with the dev tools may hold it.
    data.pop("broker", None)
    data = _deep_merge(data, overrides)
    unknown = unknown_env(os.environ, data)
    if unknown:
        raise ConfigError("invalid environment:\n  " + "\n  ".join(unknown))
    bootstrap = os.environ.get(f"{ENV_PREFIX}BOOTSTRAP_SERVERS")
    if bootstrap:
        data = _deep_merge(data, {"kafka": {"bootstrap_servers": bootstrap}})
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from exc
    except SettingsError as exc:  # an unparsable GREENCHANNEL_* value (its text is not shown)
        raise ConfigError(f"invalid environment override: {exc}") from exc
