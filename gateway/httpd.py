"""The request handler of the HTTP(S) servers bureaus call: the case callback receivers
(:mod:`gateway.cases.receiver`) and, in development, the bureau simulator (:mod:`gateway.dev`).

HTTP/1.1 with keep-alive; GET and POST both go to :meth:`BureauHandler.serve`. On a TLS socket
wrapped with ``do_handshake_on_connect=False`` the handshake runs in :meth:`setup`, on the
connection's own thread and bounded by ``HANDSHAKE_TIMEOUT_S``, so a client that never
finishes it cannot hold up the accept loop. No access log (the servers record what they need).
Standard library only.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any

HANDSHAKE_TIMEOUT_S = 10.0


class BureauHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT_S)
            self.request.do_handshake()
        super().setup()

    def do_POST(self) -> None:
        self.serve()

    def do_GET(self) -> None:
        self.serve()

    def serve(self) -> None:
        raise NotImplementedError

    def declared_length(self) -> int:
        """The request's ``Content-Length`` (0 when it has none)."""
        return int(self.headers.get("content-length") or 0)

    def request_body(self) -> bytes:
        length = self.declared_length()
        return self.rfile.read(length) if length else b""

    def request_headers(self) -> dict[str, str]:
        """The request's headers, names in lower case."""
        return {name.lower(): value for name, value in self.headers.items()}

    def respond(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Answer with ``status``, ``headers`` and ``body`` (its ``Content-Length`` added)."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return
