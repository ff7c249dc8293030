"""Topic administration: a small typed wrapper around kafka-python's ``KafkaAdminClient``.

Built from :class:`~gateway.config.KafkaSettings` (security settings included). Every
kafka-python exception is wrapped at this boundary into :mod:`gateway.errors`:

* unreachable broker, timeouts, retriable broker errors -> ``KafkaUnavailable``
* authentication / authorisation failures, topic specs the cluster refuses -> ``ConfigError``
* anything else kafka-python raises -> ``FatalError`` (reason ``kafka_admin``)

``create_topics`` and ``delete_topics`` are idempotent: an existing topic is reported, not an
error; deleting a missing topic is a no-op.

kafka-python 3.0.12 leaks its IO thread when ``KafkaAdminClient()`` fails to bootstrap, and a
socket for every refused connection attempt: :meth:`Admin.wait_ready` first waits for a TCP
listener, then builds the client once, and closes the half-built client if bootstrap fails.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kafka import KafkaAdminClient
from kafka import errors as kerrors
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.net.compat import KafkaNetClient

from gateway.config import KafkaSettings
from gateway.errors import ConfigError, FatalError, GreenChannelError, KafkaUnavailable
from gateway.kafka.clients import check_connection, client_config
from gateway.topics import TopicSpec

__all__ = ["Admin", "TopicInfo", "client_config", "kafka_errors", "wrap_kafka_error"]

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
_CONFIG_ERRORS: tuple[type[Exception], ...] = (
    kerrors.AuthorizationError,
    kerrors.SaslAuthenticationFailedError,
    kerrors.InvalidReplicationFactorError,
    kerrors.InvalidPartitionsError,
    kerrors.InvalidConfigurationError,
    kerrors.PolicyViolationError,
    kerrors.KafkaConfigurationError,
)


@dataclass(frozen=True, slots=True)
class CreateReport:
    """What ``create_topics`` did: topics it created, and topics that were already there."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    drift: dict[str, str] = field(default_factory=dict)
    """Existing topics whose partition count differs from the spec (name -> explanation)."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as the cluster describes it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]

    @property
    def retention_ms(self) -> int | None:
        value = self.configs.get("retention.ms")
        return int(value) if value is not None else None


def wrap_kafka_error(exc: BaseException, action: str) -> GreenChannelError:
    """Map a kafka-python (or socket) exception to the gateway taxonomy."""
    message = f"{action}: {exc}"
    if isinstance(exc, _CONFIG_ERRORS):
        return ConfigError(f"{message} (check kafka.* settings and topic specs)")
    if isinstance(exc, OSError | TimeoutError):
        return KafkaUnavailable(message)
    if isinstance(exc, kerrors.KafkaError) and exc.retriable:
        return KafkaUnavailable(message)
    return FatalError(message, reason="kafka_admin")


@contextmanager
def kafka_errors(action: str) -> Iterator[None]:
    """Re-raise kafka-python and socket errors inside the block as gateway errors."""
    try:
        yield
    except GreenChannelError:
        raise
    except (kerrors.KafkaError, OSError, TimeoutError) as exc:
        raise wrap_kafka_error(exc, action) from exc


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]") or "localhost", int(port or 9092)


def wait_for_listener(bootstrap_servers: str, timeout_s: float) -> None:
    """Block until one bootstrap address accepts a TCP connection; KafkaUnavailable if none."""
    deadline = time.monotonic() + timeout_s
    addresses = [_host_port(a) for a in bootstrap_servers.split(",") if a.strip()]
    while True:
        for host, port in addresses:
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    return
            except OSError:
                continue
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(
                f"no Kafka listener at {bootstrap_servers} after {timeout_s:.0f} s"
            )
        time.sleep(0.2)


class Admin:
    """Typed topic administration for one cluster; use as a context manager or call close()."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._client: Any = None

    def __enter__(self) -> Admin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying client (idempotent)."""
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the cluster answers a metadata request; KafkaUnavailable after timeout_s."""
        deadline = time.monotonic() + timeout_s
        wait_for_listener(self.settings.bootstrap_servers, timeout_s)
        self._connect(max(1.0, deadline - time.monotonic()))
        with kafka_errors("describe cluster"):
            self._client.describe_cluster()

    def _connect(self, timeout_s: float) -> Any:
        if self._client is None:
            check_connection(self.settings, timeout_s)
            config = client_config(self.settings)
            created: list[Any] = []

            def network_client(**configs: Any) -> Any:
                created.append(KafkaNetClient(**configs))
                return created[-1]

            try:
                with kafka_errors(f"connect to {self.settings.bootstrap_servers}"):
                    self._client = KafkaAdminClient(
                        **(config | {"bootstrap_timeout_ms": int(timeout_s * 1000)}),
                        kafka_client=network_client,
                    )
            except GreenChannelError:
                for client in created:  # a failed bootstrap leaves its IO thread running
                    client.close()
                raise
        return self._client

    def _admin(self) -> Any:
        return self._connect(self.settings.request_timeout_ms / 1000)

    def list_topics(self, *, include_internal: bool = False) -> list[str]:
        """Sorted topic names; internal topics (``__consumer_offsets``…) only when asked."""
        with kafka_errors("list topics"):
            names: list[str] = self._admin().list_topics()
        return sorted(n for n in names if include_internal or not n.startswith("__"))

    def create_topics(self, specs: list[TopicSpec], replication_factor: int = 1) -> CreateReport:
        """Create the topics that do not exist yet and wait until they have leaders."""
        if not specs:
            return CreateReport()
        request = {
            s.name: {
                "num_partitions": s.partitions,
                "replication_factor": replication_factor,
                "configs": s.configs,
            }
            for s in specs
        }
        with kafka_errors("create topics"):
            response = self._admin().create_topics(request, raise_errors=False)
        report = self._create_report(response["topics"])
        if report.created:
            with kafka_errors("wait for new topics"):
                self._admin().wait_for_topics(report.created, timeout_ms=30_000)
        drift = self._drift([s for s in specs if s.name in report.existing])
        return CreateReport(report.created, report.existing, drift)

    @staticmethod
    def _create_report(results: list[dict[str, Any]]) -> CreateReport:
        created: list[str] = []
        existing: list[str] = []
        for result in results:
            code = result["error_code"]
            if code == 0:
                created.append(result["name"])
            elif code == _TOPIC_ALREADY_EXISTS:
                existing.append(result["name"])
            else:
                error = kerrors.for_code(code)(result.get("error_message") or result["name"])
                raise wrap_kafka_error(error, f"create topic {result['name']}")
        return CreateReport(sorted(created), sorted(existing))

    def _drift(self, specs: list[TopicSpec]) -> dict[str, str]:
        if not specs:
            return {}
        actual = {t.name: t for t in self.describe_topics([s.name for s in specs])}
        return {
            s.name: f"has {actual[s.name].partitions} partitions, spec says {s.partitions}"
            for s in specs
            if s.name in actual and actual[s.name].partitions != s.partitions
        }

    def delete_topics(self, names: list[str]) -> list[str]:
        """Delete topics; missing ones are skipped. Returns the names actually deleted."""
        if not names:
            return []
        with kafka_errors("delete topics"):
            response = self._admin().delete_topics(names, raise_errors=False)
        deleted: list[str] = []
        for result in response["topics"]:
            code = result["error_code"]
            if code == 0:
                deleted.append(result["name"])
            elif code != _UNKNOWN_TOPIC:
                error = kerrors.for_code(code)(result.get("error_message") or result["name"])
                raise wrap_kafka_error(error, f"delete topic {result['name']}")
        return sorted(deleted)

    def describe_topics(self, names: list[str]) -> list[TopicInfo]:
        """Partitions, replication factor and explicitly set configs of existing topics."""
        if not names:
            return []
        with kafka_errors("describe topics"):
            metadata = self._admin().describe_topics(names)
            resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
            configs = self._admin().describe_configs(resources)
        by_topic: dict[str, dict[str, Any]] = configs.get("topic", {})
        return [
            TopicInfo(
                name=t["name"],
                partitions=len(t["partitions"]),
                replication_factor=len(t["partitions"][0]["replica_nodes"]),
                configs={k: str(v["value"]) for k, v in by_topic.get(t["name"], {}).items()},
            )
            for t in metadata
            if t["error_code"] == 0
        ]

    def max_message_bytes(self, names: list[str]) -> dict[str, int]:
        """Each topic's effective ``max.message.bytes`` (the topic's own setting or the broker's
        ``message.max.bytes`` default): the largest record batch the broker accepts there."""
        if not names:
            return {}
        wanted = {"max.message.bytes": None}
        resources = [ConfigResource(ConfigResourceType.TOPIC, n, configs=wanted) for n in names]
        with kafka_errors("describe topic configs"):
            configs = self._admin().describe_configs(resources, config_filter="all")
        by_topic: dict[str, dict[str, Any]] = configs.get("topic", {})
        out: dict[str, int] = {}
        for name in names:
            entry = by_topic.get(name, {}).get("max.message.bytes")
            value = entry.get("value") if isinstance(entry, dict) else None
            if value is not None and str(value).isdigit():
                out[name] = int(value)
        return out

    def group_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """A consumer group's committed offsets as ``{(topic, partition): offset}`` ({} if none)."""
        with kafka_errors(f"list offsets of group {group}"):
            offsets = self._admin().list_group_offsets({group: None}).get(group, {})
        return {(tp.topic, tp.partition): o.offset for tp, o in offsets.items() if o.offset >= 0}
