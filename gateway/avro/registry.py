"""Client of a Confluent-compatible schema registry (REST API v1), with caches.

Only what the codec needs: register a schema under a subject (named by
:func:`subject_name`, Confluent's strategies), fetch a
schema by id, read a subject's latest version and ask whether a schema is compatible with it.
Schemas by id never change, so they are cached forever; so are registrations.

Errors are wrapped at this boundary:

* transport errors, timeouts, 408/429/5xx -> :class:`TransientError` (``registry_unavailable``):
  the registry may come back, nothing is dead-lettered for it;
* unknown subject / version / schema id (404) -> :class:`UnknownSchema`;
* bad credentials (401/403) -> :class:`ConfigError`;
* an incompatible (409) or invalid (422) schema, or any other answer -> :class:`FatalError`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from gateway.errors import ConfigError, FatalError, TransientError, UnknownSchema

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
if TYPE_CHECKING:
    import httpx

_NOT_FOUND = {40401: "unknown_subject", 40402: "unknown_version", 40403: "unknown_schema"}


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    subject: str
    version: int
    schema_id: int
    schema: str
    """The schema's JSON text as the registry stores it."""


SubjectNameStrategy = Literal["TopicNameStrategy", "RecordNameStrategy", "TopicRecordNameStrategy"]


def subject_for(topic: str) -> str:
    """The default (TopicNameStrategy) subject of a topic's values."""
    return f"{topic}-value"


def subject_name(strategy: SubjectNameStrategy, topic: str, record_name: str) -> str:
    """The subject of a record value written to ``topic``, as Confluent's serializers name it:
    ``<topic>-value`` (TopicNameStrategy), ``<record full name>`` (RecordNameStrategy) or
    ``<topic>-<record full name>`` (TopicRecordNameStrategy)."""
    if strategy == "TopicNameStrategy":
        return subject_for(topic)
    if strategy == "RecordNameStrategy":
        return record_name
    return f"{topic}-{record_name}"


def schema_json(schema: str | Mapping[str, Any]) -> str:
    return schema if isinstance(schema, str) else json.dumps(schema, ensure_ascii=False)


class SchemaRegistry:
    """A small synchronous registry client; safe to share between threads.

    httpx is imported when the first client is made: a process without a registry (the default
    ``single_object`` wire format) never loads it (~2 MiB; ~5 MiB where ``rich`` is installed,
    which httpx then imports for its command line)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        auth: tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._http_error = httpx.HTTPError
        self._client = httpx.Client(
            base_url=self.url,
            timeout=timeout_s,
            auth=auth,
            transport=transport,
            headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE},
        )
        self._by_id: dict[int, str] = {}
        self._registered: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema: str | Mapping[str, Any]) -> int:
        """Register (or find) ``schema`` under ``subject``; returns its global schema id."""
        text = schema_json(schema)
        cached = self._registered.get((subject, text))
        if cached is not None:
            return cached
        body = self._request("POST", f"/subjects/{_q(subject)}/versions", {"schema": text})
        schema_id = _int(body, "id")
        with self._lock:
            self._registered[(subject, text)] = schema_id
            self._by_id.setdefault(schema_id, text)
        return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        """The JSON text of schema ``schema_id``; :class:`UnknownSchema` if it does not exist."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        body = self._request("GET", f"/schemas/ids/{int(schema_id)}")
        if body.get("schemaType", "AVRO") != "AVRO":
            raise UnknownSchema(f"schema id {schema_id} is not an Avro schema", reason="not_avro")
        text = _str(body, "schema")
        with self._lock:
            self._by_id[schema_id] = text
        return text

    def latest(self, subject: str) -> RegisteredSchema:
        body = self._request("GET", f"/subjects/{_q(subject)}/versions/latest")
        return RegisteredSchema(
            subject=subject,
            version=_int(body, "version"),
            schema_id=_int(body, "id"),
            schema=_str(body, "schema"),
        )

    def is_compatible(self, subject: str, schema: str | Mapping[str, Any]) -> bool:
        """Whether ``schema`` may be registered after the subject's latest version (its
        compatibility mode, BACKWARD by default). True for a subject with no versions yet."""
        path = f"/compatibility/subjects/{_q(subject)}/versions/latest"
        try:
            body = self._request("POST", path, {"schema": schema_json(schema)})
        except UnknownSchema as exc:
            if exc.reason in ("unknown_subject", "unknown_version"):
                return True
            raise
        value = body.get("is_compatible")
        if not isinstance(value, bool):
            raise FatalError(
                "schema registry: compatibility answer without is_compatible",
                reason="registry_protocol",
            )
        return value

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SchemaRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        what = f"schema registry {method} {path}"
        try:
            resp = self._client.request(method, path, json=payload)
        except self._http_error as exc:
            raise TransientError(
                f"{what}: {type(exc).__name__}: {exc}", reason="registry_unavailable"
            ) from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 300:
            raise _status_error(what, resp.status_code, body)
        if not isinstance(body, dict):
            raise FatalError(f"{what}: answer is not a JSON object", reason="registry_protocol")
        return body


def _status_error(what: str, status: int, body: Any) -> Exception:
    code = body.get("error_code") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    text = f"{what}: HTTP {status}" + (f" ({code}: {message})" if code else "")
    if status in (408, 429) or status >= 500:
        return TransientError(text, reason="registry_unavailable")
    if status == 404:
        return UnknownSchema(text, reason=_NOT_FOUND.get(code or 0, "unknown_schema"))
    if status in (401, 403):
        return ConfigError(text, reason="registry_auth")
    if status == 409:
        return FatalError(text, reason="schema_incompatible")
    if status == 422:
        return FatalError(text, reason="schema_invalid")
    return FatalError(text, reason="registry_error")


def _q(subject: str) -> str:
    return quote(subject, safe="")


def _int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FatalError(
            f"schema registry: answer without integer {key!r}", reason="registry_protocol"
        )
    return value


def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise FatalError(
            f"schema registry: answer without string {key!r}", reason="registry_protocol"
        )
    return value
