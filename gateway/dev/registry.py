"""A minimal Confluent-compatible schema registry for tests and development (in memory).

Endpoints (Confluent REST API v1, Avro only, BACKWARD compatibility against the latest version
checked with :func:`gateway.avro.schema_rules.check_backward`)::

    POST /subjects/{subject}/versions                         register -> {"id"}
    GET  /schemas/ids/{id}                                    -> {"schema"}
    GET  /subjects                                            -> [subject, ...]
    GET  /subjects/{subject}/versions                         -> [1, 2, ...]
    GET  /subjects/{subject}/versions/{version|latest}        -> {"subject","version","id","schema"}
    POST /compatibility/subjects/{subject}/versions/latest    -> {"is_compatible"}

An identical schema gets the same global id under every subject, as in Confluent's registry.
Serves on 127.0.0.1 (port 0 picks a free one) with HTTP/1.1 keep-alive and ``TCP_NODELAY``.
Run alone with ``python -m gateway.dev.registry --port 18081``.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from fastavro import parse_schema

from gateway.avro.registry import CONTENT_TYPE
from gateway.avro.schema_rules import check_backward


class _Error(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class RegistryStore:
    """Schemas by global id and subjects' version lists (ids), behind one lock."""

    schemas: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, subject: str, text: str) -> int:
        raw, canonical = _parse(text)
        with self.lock:
            versions = self.subjects.get(subject, [])
            existing = self.ids.get(canonical)
            if existing is not None and existing in versions:
                return existing
            if versions:
                latest = json.loads(self.schemas[versions[-1] - 1])
                problems = check_backward(raw, latest)
                if problems:
                    raise _Error(
                        409,
                        409,
                        "Schema being registered is incompatible with an "
                        f"earlier schema: {'; '.join(problems[:5])}",
                    )
            if existing is None:
                self.schemas.append(text)
                existing = self.ids[canonical] = len(self.schemas)
            self.subjects.setdefault(subject, []).append(existing)
            return existing

    def by_id(self, schema_id: int) -> str:
        with self.lock:
            if not 1 <= schema_id <= len(self.schemas):
                raise _Error(404, 40403, "Schema not found")
            return self.schemas[schema_id - 1]

    def version(self, subject: str, version: str) -> dict[str, Any]:
        with self.lock:
            versions = self.subjects.get(subject)
            if not versions:
                raise _Error(404, 40401, f"Subject '{subject}' not found.")
            number = len(versions) if version in ("latest", "-1") else _int(version, 42202)
            if not 1 <= number <= len(versions):
                raise _Error(404, 40402, "Version not found.")
            schema_id = versions[number - 1]
            return {
                "subject": subject,
                "version": number,
                "id": schema_id,
                "schema": self.schemas[schema_id - 1],
            }

    def compatible(self, subject: str, text: str) -> bool:
        raw, _ = _parse(text)
        latest = json.loads(self.version(subject, "latest")["schema"])
        return not check_backward(raw, latest)


def _parse(text: str) -> tuple[Any, str]:
    try:
        raw = json.loads(text)
        parse_schema(json.loads(text))
    except Exception as exc:
        raise _Error(422, 42201, f"Invalid schema: {type(exc).__name__}: {exc}") from exc
    return raw, json.dumps(raw, sort_keys=True, separators=(",", ":"))


def _int(text: str, code: int) -> int:
    if not text.lstrip("-").isdigit():
        raise _Error(422, code, f"not a number: {text}")
    return int(text)


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/subjects/([^/]+)/versions/?$"), "register"),
    ("GET", re.compile(r"^/schemas/ids/(\d+)/?$"), "by_id"),
    ("GET", re.compile(r"^/subjects/?$"), "subjects"),
    ("GET", re.compile(r"^/subjects/([^/]+)/versions/?$"), "versions"),
    ("GET", re.compile(r"^/subjects/([^/]+)/versions/([^/]+)/?$"), "version"),
    ("POST", re.compile(r"^/compatibility/subjects/([^/]+)/versions/([^/]+)/?$"), "compatibility"),
]


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

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._body() if method == "POST" else {}
            for verb, pattern, action in _ROUTES:
                match = pattern.match(path) if verb == method else None
                if match:
                    args = [unquote(g) for g in match.groups()]
                    self._send(200, getattr(self, f"_{action}")(body, *args))
                    return
            raise _Error(404, 404, f"no route for {method} {path}")
        except _Error as exc:
            self._send(exc.status, {"error_code": exc.code, "message": str(exc)})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            raise _Error(400, 400, "request body is not JSON") from exc
        if not isinstance(body, dict):
            raise _Error(400, 400, "request body must be a JSON object")
        if body.get("schemaType", "AVRO") != "AVRO":
            raise _Error(422, 42202, "only AVRO schemas are supported here")
        return body

    def _schema(self, body: dict[str, Any]) -> str:
        text = body.get("schema")
        if not isinstance(text, str):
            raise _Error(422, 42201, "Invalid schema: missing 'schema' string")
        return text

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # actions

    def _register(self, body: dict[str, Any], subject: str) -> dict[str, Any]:
        return {"id": self.server.store.register(subject, self._schema(body))}

    def _by_id(self, body: dict[str, Any], schema_id: str) -> dict[str, Any]:
        return {"schema": self.server.store.by_id(int(schema_id))}

    def _subjects(self, body: dict[str, Any]) -> list[str]:
        with self.server.store.lock:
            return sorted(self.server.store.subjects)

    def _versions(self, body: dict[str, Any], subject: str) -> list[int]:
        with self.server.store.lock:
            versions = self.server.store.subjects.get(subject)
        if not versions:
            raise _Error(404, 40401, f"Subject '{subject}' not found.")
        return list(range(1, len(versions) + 1))

    def _version(self, body: dict[str, Any], subject: str, version: str) -> dict[str, Any]:
        return self.server.store.version(subject, version)

    def _compatibility(self, body: dict[str, Any], subject: str, version: str) -> dict[str, Any]:
        if version not in ("latest", "-1"):
            self.server.store.version(subject, version)  # 404 when missing
        return {"is_compatible": self.server.store.compatible(subject, self._schema(body))}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: RegistryStore


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
