"""The operations HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` is liveness: the poll loops' heartbeats and, when given, the progress registry
(:class:`gateway.ops.liveness.Liveness`: a loop that aborts the same batch again and again, a
thread that is gone, a commit point that stopped moving). Never from Kafka or bureau
reachability: a broker outage must not make the orchestrator kill a healthy process.
``/readyz`` is 200 once every component reports ready (partitions assigned, producer up).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.ops.liveness import Liveness


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self) -> tuple[socket.socket, object]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class OpsServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        heartbeats: Callable[[], Mapping[str, float]],
        ready: Callable[[], Mapping[str, bool]],
        *,
        liveness_s: float = 60.0,
        progress: Liveness | None = None,
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
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
                    self._json(200 if ok else 503, body)
                elif path == "/readyz":
                    parts = dict(ready())
                    ok = bool(parts) and all(parts.values())
                    self._json(200 if ok else 503, {"ok": ok, "components": parts})
                else:
                    self._json(404, {"error": "not found"})

            def _json(self, status: int, body: object) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = _Server((host, port), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="ops-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> OpsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
