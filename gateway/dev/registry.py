"""A Confluent-compatible schema registry for tests and development (in memory, Avro only).

Start it with ``greenchannel registry --port 18081`` (or ``python -m gateway.dev.registry``).
It answers the calls of Confluent's Schema Registry REST API (v1) that clients make, with
Confluent's status codes and error bodies (``{"error_code": 40401, "message": "..."}``)::

    GET    /                                              {}
    GET    /schemas/types                                 ["AVRO"]
    GET    /schemas                                       [{subject, version, id, schema}]
    GET    /schemas/ids/{id}                              {schema}                     40403
    GET    /schemas/ids/{id}/schema                       the schema itself            40403
    GET    /schemas/ids/{id}/subjects                     [subject]                    40403
    GET    /schemas/ids/{id}/versions                     [{subject, version}]         40403
    GET    /subjects                                      [subject]
    POST   /subjects/{s}                                  lookup: {subject, id, version, schema}
                                                          40401 subject, 40403 schema not found
    DELETE /subjects/{s}[?permanent=true]                 [version]          40401 40404 40405
    GET    /subjects/{s}/versions                         [version]                    40401
    POST   /subjects/{s}/versions                         register: {id}     409 42201 42205
    GET    /subjects/{s}/versions/{v}                     {subject, version, id, schema}
    GET    /subjects/{s}/versions/{v}/schema              the schema itself
    GET    /subjects/{s}/versions/{v}/referencedby        []
    DELETE /subjects/{s}/versions/{v}[?permanent=true]    version            40406 40407
    POST   /compatibility/subjects/{s}/versions[/{v}]     {is_compatible[, messages]}
    GET    /config[/{s}]   PUT /config[/{s}]   DELETE /config[/{s}]        42203 40408
    GET    /mode[/{s}]     PUT /mode[/{s}]     DELETE /mode/{s}            42204 40409
    GET    /contexts                                      ["."]

``{v}`` is ``latest``, ``-1`` or 1..2^31-1 (anything else: 42202, checked before the subject
exists: 40401, then the version: 40402). A ``schemaType`` other than AVRO, references, or an
unparsable schema is 42201. ``?deleted=true`` shows soft-deleted subjects and versions;
``?verbose=true`` adds ``messages`` to compatibility answers; ``?defaultToGlobal=true`` makes
``/config/{s}`` and ``/mode/{s}`` fall back to the global setting. Compatibility levels (NONE,
BACKWARD (default), FORWARD, FULL and their ``_TRANSITIVE`` forms) are checked with
:func:`gateway.avro.schema_rules.check_backward`. An identical schema gets the same global id
under every subject. Unknown paths are 404 and known paths with another method 405, both with a
JSON error body. Serves on 127.0.0.1 (port 0 picks a free one), HTTP/1.1 keep-alive,
``TCP_NODELAY``.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fastavro import parse_schema

from gateway.avro.registry import CONTENT_TYPE
from gateway.avro.schema_rules import check_backward

LEVELS = frozenset(
    {
        "NONE",
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
    }
)
MODES = frozenset({"READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT"})
MAX_VERSION = 2**31 - 1


class RegistryError(Exception):
    """An error answer: HTTP status and Confluent error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def _version_not_found(version: int) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found.")


def _schema_not_found(schema_id: int) -> RegistryError:
    return RegistryError(404, 40403, f"Schema {schema_id} not found")


@dataclass
class _Version:
    number: int
    schema_id: int
    deleted: bool = False


@dataclass
class RegistryStore:
    """Schemas by global id, subjects' versions, compatibility and mode, behind one lock."""

    schemas: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[_Version]] = field(default_factory=dict)
    compatibility: str = "BACKWARD"
    mode: str = "READWRITE"
    subject_compatibility: dict[str, str] = field(default_factory=dict)
    subject_mode: dict[str, str] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- reading --------------------------------------------------------------------------

    def by_id(self, schema_id: int) -> str:
        with self.lock:
            if not 1 <= schema_id <= len(self.schemas):
                raise _schema_not_found(schema_id)
            return self.schemas[schema_id - 1]

    def live(self, subject: str, deleted: bool = False) -> list[_Version]:
        """A subject's versions (soft-deleted ones too with ``deleted``); 40401 when none."""
        with self.lock:
            versions = [v for v in self.subjects.get(subject, []) if deleted or not v.deleted]
        if not versions:
            raise _subject_not_found(subject)
        return versions

    def version(self, subject: str, version: str, deleted: bool = False) -> dict[str, Any]:
        number = parse_version(version)
        with self.lock:
            versions = self.live(subject, deleted)
            found = (
                versions[-1]
                if number == -1
                else next((v for v in versions if v.number == number), None)
            )
            if found is None:
                raise _version_not_found(number)
            return self._entry(subject, found)

    def _entry(self, subject: str, v: _Version) -> dict[str, Any]:
        return {
            "subject": subject,
            "version": v.number,
            "id": v.schema_id,
            "schema": self.schemas[v.schema_id - 1],
        }

    def subject_names(self, prefix: str = "", deleted: bool = False) -> list[str]:
        with self.lock:
            return sorted(
                s
                for s, versions in self.subjects.items()
                if s.startswith(prefix) and any(deleted or not v.deleted for v in versions)
            )

    def usages(self, schema_id: int, deleted: bool = False) -> list[dict[str, Any]]:
        """``{subject, version}`` of every version that holds ``schema_id``; 40403 if none."""
        with self.lock:
            self.by_id(schema_id)
            return [
                {"subject": s, "version": v.number}
                for s in sorted(self.subjects)
                for v in self.subjects[s]
                if v.schema_id == schema_id and (deleted or not v.deleted)
            ]

    def lookup(self, subject: str, text: str, deleted: bool = False) -> dict[str, Any]:
        _, canonical = parse_avro(text)
        with self.lock:
            versions = self.live(subject, deleted)
            schema_id = self.ids.get(canonical)
            found = next((v for v in versions if v.schema_id == schema_id), None)
            if found is None:
                raise RegistryError(404, 40403, "Schema not found")
            return self._entry(subject, found)

    def level(self, subject: str | None) -> str:
        with self.lock:
            if subject is not None and subject in self.subject_compatibility:
                return self.subject_compatibility[subject]
            return self.compatibility

    def mode_of(self, subject: str | None) -> str:
        with self.lock:
            if subject is not None and subject in self.subject_mode:
                return self.subject_mode[subject]
            return self.mode

    # -- compatibility --------------------------------------------------------------------

    def problems(self, subject: str, text: str, against: list[_Version] | None = None) -> list[str]:
        """Why ``text`` may not follow the subject's versions under its compatibility level."""
        raw, _ = parse_avro(text)
        level = self.level(subject)
        with self.lock:
            versions = [v for v in self.subjects.get(subject, []) if not v.deleted]
            if against is None:
                against = versions if level.endswith("_TRANSITIVE") else versions[-1:]
            olds = [json.loads(self.schemas[v.schema_id - 1]) for v in against]
        out: list[str] = []
        for old in olds:
            if level.startswith(("BACKWARD", "FULL")):
                out += [f"BACKWARD: {p}" for p in check_backward(raw, old)]
            if level.startswith(("FORWARD", "FULL")):
                out += [f"FORWARD: {p}" for p in check_backward(old, raw)]
        return out

    # -- writing --------------------------------------------------------------------------

    def register(self, subject: str, text: str) -> int:
        raw, canonical = parse_avro(text)
        with self.lock:
            if self.mode_of(subject) in ("READONLY", "READONLY_OVERRIDE"):
                raise RegistryError(422, 42205, f"Subject {subject} is in read-only mode")
            versions = self.subjects.get(subject, [])
            existing = self.ids.get(canonical)
            if any(v.schema_id == existing and not v.deleted for v in versions):
                assert existing is not None
                return existing
            problems = self.problems(subject, text)
            if problems:
                raise RegistryError(
                    409,
                    409,
                    "Schema being registered is incompatible with an earlier schema for "
                    f'subject "{subject}", details: {problems[:5]}',
                )
            if existing is None:
                self.schemas.append(json.dumps(raw, ensure_ascii=False))
                existing = self.ids[canonical] = len(self.schemas)
            number = max((v.number for v in versions), default=0) + 1
            self.subjects.setdefault(subject, []).append(_Version(number, existing))
            return existing

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        with self.lock:
            versions = self.subjects.get(subject)
            if not versions:
                raise _subject_not_found(subject)
            if permanent:
                if any(not v.deleted for v in versions):
                    raise RegistryError(
                        404,
                        40405,
                        f"Subject '{subject}' was not deleted first before being permanently "
                        "deleted",
                    )
                del self.subjects[subject]
                self.subject_compatibility.pop(subject, None)
                self.subject_mode.pop(subject, None)
                return [v.number for v in versions]
            if all(v.deleted for v in versions):
                raise RegistryError(
                    404,
                    40404,
                    f"Subject '{subject}' was soft deleted.Set permanent=true to delete "
                    "permanently",
                )
            live = [v for v in versions if not v.deleted]
            for v in live:
                v.deleted = True
            return [v.number for v in live]

    def delete_version(self, subject: str, version: str, permanent: bool) -> int:
        number = parse_version(version)
        with self.lock:
            versions = self.live(subject, deleted=True)
            if number == -1:
                live = [v for v in versions if not v.deleted]
                if not live:
                    raise _subject_not_found(subject)
                found = live[-1]
            else:
                found_or_none = next((v for v in versions if v.number == number), None)
                if found_or_none is None:
                    raise _version_not_found(number)
                found = found_or_none
            if permanent:
                if not found.deleted:
                    raise RegistryError(
                        404,
                        40407,
                        f"Subject '{subject}' Version {found.number} was not deleted first "
                        "before being permanently deleted",
                    )
                versions.remove(found)
                self.subjects[subject] = versions
                if not versions:
                    del self.subjects[subject]
            elif found.deleted:
                raise RegistryError(
                    404,
                    40406,
                    f"Subject '{subject}' Version {found.number} was soft deleted.Set "
                    "permanent=true to delete permanently",
                )
            else:
                found.deleted = True
            return found.number


def parse_avro(text: str) -> tuple[Any, str]:
    """The schema as JSON and its canonical text (the key of its global id); 42201 if bad."""
    try:
        raw = json.loads(text)
        parse_schema(json.loads(text))
    except Exception as exc:
        raise RegistryError(
            422, 42201, f"Invalid schema: {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    return raw, json.dumps(raw, sort_keys=True, separators=(",", ":"))


def parse_version(text: str) -> int:
    """``latest`` / ``-1`` -> -1, else 1..2^31-1; 42202 otherwise (0 included)."""
    if text in ("latest", "-1"):
        return -1
    if text.isdigit() and 1 <= int(text) <= MAX_VERSION:
        return int(text)
    raise RegistryError(
        422,
        42202,
        f"The specified version '{text}' is not a valid version id. Allowed values are between "
        '[1, 2^31-1] and the string "latest"',
    )


# --- HTTP ---------------------------------------------------------------------------------------

_S = r"([^/]+)"
_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(rf"^{p}/?$"), actions)
    for p, actions in [
        ("", {"GET": "root"}),
        ("/schemas/types", {"GET": "types"}),
        ("/schemas", {"GET": "schemas"}),
        (r"/schemas/ids/(\d+)", {"GET": "by_id"}),
        (r"/schemas/ids/(\d+)/schema", {"GET": "by_id_raw"}),
        (r"/schemas/ids/(\d+)/subjects", {"GET": "id_subjects"}),
        (r"/schemas/ids/(\d+)/versions", {"GET": "id_versions"}),
        ("/subjects", {"GET": "subjects"}),
        (f"/subjects/{_S}", {"POST": "lookup", "DELETE": "delete_subject"}),
        (f"/subjects/{_S}/versions", {"GET": "versions", "POST": "register"}),
        (f"/subjects/{_S}/versions/{_S}", {"GET": "version", "DELETE": "delete_version"}),
        (f"/subjects/{_S}/versions/{_S}/schema", {"GET": "version_raw"}),
        (f"/subjects/{_S}/versions/{_S}/referencedby", {"GET": "referenced_by"}),
        (f"/compatibility/subjects/{_S}/versions", {"POST": "compatibility_all"}),
        (f"/compatibility/subjects/{_S}/versions/{_S}", {"POST": "compatibility"}),
        ("/config", {"GET": "config", "PUT": "set_config", "DELETE": "delete_config"}),
        (f"/config/{_S}", {"GET": "config", "PUT": "set_config", "DELETE": "delete_config"}),
        ("/mode", {"GET": "mode", "PUT": "set_mode"}),
        (f"/mode/{_S}", {"GET": "mode", "PUT": "set_mode", "DELETE": "delete_mode"}),
        ("/contexts", {"GET": "contexts"}),
    ]
]


@dataclass
class _Call:
    """One request: query flags and JSON body."""

    query: dict[str, list[str]]
    body: dict[str, Any]

    def flag(self, name: str) -> bool:
        return (self.query.get(name) or ["false"])[-1].lower() == "true"

    def arg(self, name: str, default: str = "") -> str:
        return (self.query.get(name) or [default])[-1]

    def schema(self) -> str:
        kind = self.body.get("schemaType", "AVRO")
        if kind != "AVRO":
            raise RegistryError(422, 42201, f"Invalid schema: unsupported schema type {kind!r}")
        if self.body.get("references"):
            raise RegistryError(422, 42201, "Invalid schema: references are not supported here")
        text = self.body.get("schema")
        if not isinstance(text, str):
            raise RegistryError(422, 42201, "Invalid schema: the 'schema' field is missing")
        return text


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.server.served(method, url.path)
        try:
            body = self._body() if method in ("POST", "PUT") else {}
            call = _Call(parse_qs(url.query), body)
            for pattern, actions in _ROUTES:
                match = pattern.match(url.path)
                if match is None:
                    continue
                action = actions.get(method)
                if action is None:
                    raise RegistryError(405, 405, "HTTP 405 Method Not Allowed")
                handler: Callable[..., Any] = getattr(self, f"_{action}")
                self._send(200, handler(call, *[unquote(g) for g in match.groups()]))
                return
            raise RegistryError(404, 404, "HTTP 404 Not Found")
        except RegistryError as exc:
            self._send(exc.status, {"error_code": exc.code, "message": str(exc)})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            raise RegistryError(400, 400, "Unrecognized request body: not JSON") from exc
        if not isinstance(body, dict):
            raise RegistryError(422, 422, "Unrecognized request body: not a JSON object")
        return body

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @property
    def store(self) -> RegistryStore:
        return self.server.store

    # -- schemas --------------------------------------------------------------------------

    def _root(self, call: _Call) -> dict[str, Any]:
        return {}

    def _types(self, call: _Call) -> list[str]:
        return ["AVRO"]

    def _contexts(self, call: _Call) -> list[str]:
        return ["."]

    def _schemas(self, call: _Call) -> list[dict[str, Any]]:
        deleted, latest_only = call.flag("deleted"), call.flag("latestOnly")
        out = []
        for subject in self.store.subject_names(call.arg("subjectPrefix"), deleted):
            versions = self.store.live(subject, deleted)
            for v in versions[-1:] if latest_only else versions:
                out.append(self.store.version(subject, str(v.number), deleted))
        return out

    def _by_id(self, call: _Call, schema_id: str) -> dict[str, Any]:
        return {"schema": self.store.by_id(int(schema_id))}

    def _by_id_raw(self, call: _Call, schema_id: str) -> Any:
        return json.loads(self.store.by_id(int(schema_id)))

    def _id_subjects(self, call: _Call, schema_id: str) -> list[str]:
        usages = self.store.usages(int(schema_id), call.flag("deleted"))
        return sorted({u["subject"] for u in usages})

    def _id_versions(self, call: _Call, schema_id: str) -> list[dict[str, Any]]:
        return self.store.usages(int(schema_id), call.flag("deleted"))

    # -- subjects -------------------------------------------------------------------------

    def _subjects(self, call: _Call) -> list[str]:
        return self.store.subject_names(call.arg("subjectPrefix"), call.flag("deleted"))

    def _lookup(self, call: _Call, subject: str) -> dict[str, Any]:
        return self.store.lookup(subject, call.schema(), call.flag("deleted"))

    def _delete_subject(self, call: _Call, subject: str) -> list[int]:
        return self.store.delete_subject(subject, call.flag("permanent"))

    def _versions(self, call: _Call, subject: str) -> list[int]:
        return [v.number for v in self.store.live(subject, call.flag("deleted"))]

    def _register(self, call: _Call, subject: str) -> dict[str, Any]:
        return {"id": self.store.register(subject, call.schema())}

    def _version(self, call: _Call, subject: str, version: str) -> dict[str, Any]:
        return self.store.version(subject, version, call.flag("deleted"))

    def _version_raw(self, call: _Call, subject: str, version: str) -> Any:
        return json.loads(self.store.version(subject, version, call.flag("deleted"))["schema"])

    def _referenced_by(self, call: _Call, subject: str, version: str) -> list[int]:
        self.store.version(subject, version)
        return []

    def _delete_version(self, call: _Call, subject: str, version: str) -> int:
        return self.store.delete_version(subject, version, call.flag("permanent"))

    # -- compatibility --------------------------------------------------------------------

    def _compatibility(self, call: _Call, subject: str, version: str) -> dict[str, Any]:
        parse_version(version)
        text = call.schema()
        try:
            entry = self.store.version(subject, version)
        except RegistryError as exc:
            if exc.code == 40401 and version in ("latest", "-1"):
                return self._answer(call, [])  # nothing to be compatible with yet
            raise
        found = [_Version(entry["version"], entry["id"])]
        return self._answer(call, self.store.problems(subject, text, found))

    def _compatibility_all(self, call: _Call, subject: str) -> dict[str, Any]:
        text = call.schema()
        with self.store.lock:
            versions = [v for v in self.store.subjects.get(subject, []) if not v.deleted]
        return self._answer(call, self.store.problems(subject, text, versions) if versions else [])

    def _answer(self, call: _Call, problems: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"is_compatible": not problems}
        if call.flag("verbose"):
            out["messages"] = problems
        return out

    # -- config and mode ------------------------------------------------------------------

    def _config(self, call: _Call, subject: str | None = None) -> dict[str, Any]:
        store = self.store
        configured = subject is None or subject in store.subject_compatibility
        if not configured and not call.flag("defaultToGlobal"):
            raise RegistryError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return {"compatibilityLevel": store.level(subject)}

    def _set_config(self, call: _Call, subject: str | None = None) -> dict[str, Any]:
        level = str(call.body.get("compatibility", "")).upper()
        if level not in LEVELS:
            raise RegistryError(422, 42203, "Invalid compatibility level")
        with self.store.lock:
            if subject is None:
                self.store.compatibility = level
            else:
                self.store.subject_compatibility[subject] = level
        return {"compatibility": level}

    def _delete_config(self, call: _Call, subject: str | None = None) -> dict[str, Any]:
        store = self.store
        with store.lock:
            if subject is None:
                old, store.compatibility = store.compatibility, "BACKWARD"
                return {"compatibilityLevel": old}
            if subject not in store.subject_compatibility and subject not in store.subjects:
                raise _subject_not_found(subject)
            old = store.subject_compatibility.pop(subject, store.compatibility)
            return {"compatibilityLevel": old}

    def _mode(self, call: _Call, subject: str | None = None) -> dict[str, Any]:
        store = self.store
        configured = subject is None or subject in store.subject_mode
        if not configured and not call.flag("defaultToGlobal"):
            raise RegistryError(
                404, 40409, f"Subject '{subject}' does not have subject-level mode configured"
            )
        return {"mode": store.mode_of(subject)}

    def _set_mode(self, call: _Call, subject: str | None = None) -> dict[str, Any]:
        mode = str(call.body.get("mode", "")).upper()
        if mode not in MODES:
            raise RegistryError(422, 42204, "Invalid mode")
        with self.store.lock:
            if subject is None:
                self.store.mode = mode
            else:
                self.store.subject_mode[subject] = mode
        return {"mode": mode}

    def _delete_mode(self, call: _Call, subject: str) -> dict[str, Any]:
        store = self.store
        with store.lock:
            if subject not in store.subject_mode and subject not in store.subjects:
                raise _subject_not_found(subject)
            return {"mode": store.subject_mode.pop(subject, store.mode)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: RegistryStore

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self._lock = threading.Lock()
        self._log: deque[tuple[str, str]] = deque(maxlen=10_000)

    def served(self, method: str, path: str) -> None:
        with self._lock:
            self._log.append((method, path))

    def requests(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._log)


class RegistryServer:
    """The registry on a background thread: ``with RegistryServer() as reg: reg.url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.store = RegistryStore()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def store(self) -> RegistryStore:
        return self._server.store

    def requests(self) -> list[tuple[str, str]]:
        """The requests served so far (the last 10,000), as (method, path), in order: what
        tests count."""
        return self._server.requests()

    def start(self) -> RegistryServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="dev-registry", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted."""
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18081)
    args = parser.parse_args(argv)
    server = RegistryServer(args.host, args.port)
    print(f"schema registry on {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
