"""The operations HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

Two parts, kept apart:

* **What is answered** (:func:`health_routes`): ``/healthz`` is liveness: the poll loops'
  heartbeats and, when given, the progress registry (:class:`gateway.ops.liveness.Liveness`:
  a loop that aborts the same batch again and again, a thread that is gone, a commit point
  that stopped moving). Never from Kafka or bureau reachability: a broker outage must not make
  the orchestrator kill a healthy process; ``/readyz`` is 200 once every component reports ready
  (partitions assigned, producer up); ``/metrics`` is the Prometheus exposition.
* **How it is served** (:class:`OpsServer`): a small, bounded HTTP/1.1 server. One thread
  reads request heads from every connection without blocking (a selector); only a complete
  head is handed to one of ``WORKERS`` answering threads, so idle or slow clients cost a
  descriptor, never a thread. At most ``max_connections`` connections are held; when full,
  the one that has waited longest is closed to make room (a flood of idle clients cannot
  starve a health probe). A client must send its whole request head within
  ``request_timeout_s`` (one deadline for the idle wait and the headers together, so a client
  that drips a byte at a time is cut off too); the head is capped at ``MAX_HEAD_BYTES``; one
  request is answered per connection (``Connection: close``); only ``GET`` and ``HEAD`` on the
  three paths are served (405 for other methods, 404 for other paths); nothing from the
  request is logged.
"""

from __future__ import annotations

import contextlib
import io
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.errors import ConfigError
from gateway.ops.liveness import Liveness

MAX_HEAD_BYTES = 16 * 1024
"""Longest request head (request line and headers) the ops endpoint reads."""
POLL_S = 0.2
"""How often the reading loop looks at deadlines and the stop flag."""
WORKERS = 4
"""Threads that answer complete requests (``/metrics`` is the only slow one)."""
SEND_BUFFER_BYTES = 512 * 1024
"""Socket send buffer for answers (the kernel may cap it)."""

Answer = tuple[int, bytes, str]
"""(status, body, content type) of one ops request."""
Routes = Mapping[str, Callable[[], Answer]]


def _json(status: int, body: object) -> Answer:
    return status, json.dumps(body).encode(), "application/json"


def health_routes(
    registry: CollectorRegistry,
    heartbeats: Callable[[], Mapping[str, float]],
    ready: Callable[[], Mapping[str, bool]],
    liveness_s: float,
    progress: Liveness | None = None,
) -> dict[str, Callable[[], Answer]]:
    """The answers of the three paths (the health decisions live here, not in the server)."""

    def metrics() -> Answer:
        return 200, generate_latest(registry), CONTENT_TYPE_LATEST

    def healthz() -> Answer:
        ages = dict(heartbeats())
        ok = bool(ages) and all(a <= liveness_s for a in ages.values())
        body: dict[str, object] = {"ok": ok, "heartbeat_age_s": ages}
        if progress is not None:
            status = progress.status()
            ok = ok and all(c.ok for c in status.values())
            body["ok"] = ok
            body["progress"] = {
                name: {"ok": c.ok, "age_s": c.age_s, "reason": c.reason}
                for name, c in status.items()
            }
        return _json(200 if ok else 503, body)

    def readyz() -> Answer:
        parts = dict(ready())
        ok = bool(parts) and all(parts.values())
        return _json(200 if ok else 503, {"ok": ok, "components": parts})

    return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}


class _Handler(BaseHTTPRequestHandler):
    """Answers one request whose head has already been read (``rfile`` holds it)."""

    protocol_version = "HTTP/1.1"
    server_version = "greenchannel-ops"
    sys_version = ""
    routes: ClassVar[Routes] = {}
    head = b""

    def setup(self) -> None:
        self.connection = self.request
        self.rfile = io.BytesIO(self.head)
        self.wfile = self.connection.makefile("wb")

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def log_message(self, format: str, *args: object) -> None:
        return  # the request line is client data: never logged

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _not_allowed(self) -> None:
        self._send(405, b'{"error": "method not allowed"}', "application/json", True, "GET, HEAD")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

    def _answer(self, body: bool) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._send(404, b'{"error": "not found"}', "application/json", body)
            return
        status, payload, ctype = route()
        self._send(status, payload, ctype, body)

    def _send(
        self, status: int, payload: bytes, ctype: str, body: bool, allow: str | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        if allow is not None:
            self.send_header("Allow", allow)
        self.end_headers()
        if body:
            self.wfile.write(payload)


@dataclass
class _Pending:
    """A connection whose request head has not fully arrived yet."""

    conn: socket.socket
    addr: Any
    deadline: float
    head: bytes = b""


class OpsServer:
    """The bounded ops HTTP server (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        heartbeats: Callable[[], Mapping[str, float]],
        ready: Callable[[], Mapping[str, bool]],
        *,
        liveness_s: float = 60.0,
        max_connections: int = 64,
        request_timeout_s: float = 5.0,
        workers: int = WORKERS,
        routes: Routes | None = None,
        progress: Liveness | None = None,
    ) -> None:
        served = routes or health_routes(registry, heartbeats, ready, liveness_s, progress)
        self._routes = served
        self._max_open = max_connections
        self._timeout_s = request_timeout_s
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="ops-http")
        self._stopping = threading.Event()
        self._sock = _listen(host, port, backlog=128)
        self._sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._queued = 0
        """Complete requests handed to the workers and not finished yet."""
        self.thread = threading.Thread(target=self._loop, name="ops-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> OpsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self.thread.is_alive():
            self.thread.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # the reading loop: one thread, every connection non-blocking until its head is complete

    def _loop(self) -> None:
        self._selector.register(self._sock, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(POLL_S):
                    if key.fileobj is self._sock:
                        self._accept()
                    else:
                        self._read(cast(socket.socket, key.fileobj))
                self._expire(time.monotonic())
        finally:
            for pending in list(self._pending.values()):
                self._drop(pending)
            self._selector.close()
            self._sock.close()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. out of descriptors: try again on the next event
            if len(self._pending) >= self._max_open:
                # full: make room by closing the connection that has waited longest, so a
                # flood of idle clients cannot starve a health probe
                self._drop(min(self._pending.values(), key=lambda p: p.deadline))
            conn.setblocking(False)
            pending = _Pending(conn, addr, time.monotonic() + self._timeout_s)
            self._pending[conn.fileno()] = pending
            self._selector.register(conn, selectors.EVENT_READ)

    def _read(self, conn: socket.socket) -> None:
        pending = self._pending.get(conn.fileno())
        if pending is None:
            return
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(pending)
            return
        pending.head += chunk
        if b"\r\n\r\n" in pending.head or b"\n\n" in pending.head:
            self._selector.unregister(conn)
            del self._pending[conn.fileno()]
            with self._lock:
                if self._queued >= self._max_open:  # answers queue up: shed this one
                    conn.close()
                    return
                self._queued += 1
            self._pool.submit(self._answer, pending)
        elif len(pending.head) > MAX_HEAD_BYTES:
            self._drop(pending)

    def _expire(self, now: float) -> None:
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            self._drop(pending)

    def _drop(self, pending: _Pending) -> None:
        self._pending.pop(pending.conn.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(pending.conn)
        pending.conn.close()

    # the answering workers

    def _answer(self, pending: _Pending) -> None:
        conn = pending.conn
        try:
            conn.setblocking(True)
            conn.settimeout(self._timeout_s)  # a client that does not read its answer
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # an answer fits the send buffer: a client that reads slowly cannot hold a worker
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            handler = type(
                "OpsHandler", (_Handler,), {"routes": self._routes, "head": pending.head}
            )
            handler(conn, pending.addr, self)
        except OSError:
            pass  # the client went away
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
            conn.close()
            with self._lock:
                self._queued -= 1


def check_bind(host: str, port: int) -> None:
    """ConfigError naming the keys when the ops endpoint could not listen on ``host:port``."""
    _listen(host, port, backlog=1).close()


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket on ``host:port``; ConfigError naming the keys when that fails."""
    if not 0 <= port <= 65_535:  # getaddrinfo would wrap it around silently
        raise ConfigError(f"observability.host/observability.port: port {port} is out of range")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
    except (OSError, OverflowError) as exc:
        raise ConfigError(
            f"observability.host/observability.port: cannot listen on {host}:{port}: "
            f"{type(exc).__name__}: {exc.strerror if isinstance(exc, OSError) else exc}"
        ) from exc
    return sock
