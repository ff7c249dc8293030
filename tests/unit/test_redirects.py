"""Redirects from a bureau are followed only to allowlisted host:port pairs and never with
credentials in the URL (which httpx would send as HTTP Basic auth); the refusal never prints
the password. A real HTTP server on 127.0.0.1 answers the redirects."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from gateway.config import CitySettings
from gateway.errors import BureauUnavailable
from gateway.http import HttpTransport
from gateway.sdk import BureauRequest

pytestmark = pytest.mark.unit
PASSWORD = "pw-5c1d9e"


class Redirecting(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_POST(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        target = {
            "/to-userinfo": f"http://admin:{PASSWORD}@127.0.0.1:{self.server.server_address[1]}/ok",
            "/to-elsewhere": "http://198.51.100.7:8080/ok",
            "/to-allowed": "/ok",
        }.get(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if target is None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        self.send_response(307)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    Redirecting.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def transport(server: ThreadingHTTPServer) -> HttpTransport:
    port = server.server_address[1]
    city = CitySettings(endpoint=f"http://127.0.0.1:{port}", allow_plaintext=True)
    return HttpTransport("wuhu", city, ["127.0.0.1:*"])


def post(path: str) -> BureauRequest:
    return BureauRequest("POST", path, {"Content-Type": "application/json"}, b"{}")


def test_an_allowlisted_redirect_is_followed(server: ThreadingHTTPServer) -> None:
    t = transport(server)
    try:
        assert t.send(post("/to-allowed")).status == 200
    finally:
        t.close()
    assert [p for p, _ in Redirecting.seen] == ["/to-allowed", "/ok"]


@pytest.mark.parametrize("path", ["/to-userinfo", "/to-elsewhere"])
def test_a_redirect_with_credentials_or_off_the_allowlist_is_refused(
    server: ThreadingHTTPServer, path: str
) -> None:
    t = transport(server)
    try:
        with pytest.raises(BureauUnavailable) as info:
            t.send(post(path))
    finally:
        t.close()
    assert info.value.reason == "redirect_blocked"
    assert PASSWORD not in str(info.value)
    assert [p for p, _ in Redirecting.seen] == [path]  # the redirect was not followed
    assert all(auth is None for _, auth in Redirecting.seen)
