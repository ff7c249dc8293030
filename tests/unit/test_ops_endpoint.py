"""The ops endpoint (/metrics /healthz /readyz) under abuse: a real server on 127.0.0.1, raw sockets.

Finding 5 of the fail-closed issue: a thread per connection and no idle timeout let 400 idle,
half-sent connections grow the process from 50 to 449 threads.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from gateway.errors import ConfigError
from gateway.ops.health import OpsServer

pytestmark = pytest.mark.unit


def threads() -> int:
    """Threads of this process, as the kernel counts them."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return threading.active_count()


@pytest.fixture
def ops() -> Iterator[OpsServer]:
    registry = CollectorRegistry()
    Counter("greenchannel_probe_total", "a metric to serve", registry=registry).inc()
    server = OpsServer(
        "127.0.0.1",
        0,
        registry,
        lambda: {"router": 0.5},
        lambda: {"router": True},
        max_connections=64,
        request_timeout_s=1.0,
    ).start()
    yield server
    server.stop()


def request(port: int, method: str, path: str, timeout: float = 10) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path)
    return conn.getresponse()


def wait_until(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_400_idle_half_sent_connections_do_not_grow_threads_or_starve_a_probe(
    ops: OpsServer,
) -> None:
    assert request(ops.port, "GET", "/healthz").status == 200  # the workers exist now
    before = threads()
    idle = []
    try:
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", ops.port), timeout=10)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            idle.append(s)
        during = threads()
        started = time.monotonic()
        probe = request(ops.port, "GET", "/readyz")
        waited = time.monotonic() - started
        assert probe.status == 200
        assert b'"ok": true' in probe.read()
    finally:
        for s in idle:
            s.close()
    assert during <= before + 2, (before, during)  # old server: one thread per connection
    assert waited < 5, f"a probe waited {waited:.1f} s behind idle connections"


def test_a_client_that_drips_its_headers_is_cut_off_at_the_deadline(ops: OpsServer) -> None:
    s = socket.create_connection(("127.0.0.1", ops.port), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\n")
    started = time.monotonic()
    closed = False
    try:
        for _ in range(100):  # one header byte every 0.2 s: each under any per-read timeout
            s.sendall(b"X")
            time.sleep(0.2)
    except OSError:
        closed = True
    else:
        s.settimeout(5)
        closed = s.recv(1) == b""
    finally:
        s.close()
    assert closed
    assert time.monotonic() - started < 10  # 1 s deadline (+ the 0.2 s poll), not 20 s


def test_an_idle_connection_is_closed_after_the_request_timeout(ops: OpsServer) -> None:
    s = socket.create_connection(("127.0.0.1", ops.port), timeout=10)
    started = time.monotonic()
    assert s.recv(1) == b""  # closed by the server, no answer
    assert time.monotonic() - started < 5
    s.close()


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_get_and_head_are_served_on_the_three_paths(ops: OpsServer, path: str) -> None:
    got = request(ops.port, "GET", path)
    assert got.status == 200
    body = got.read()
    assert body
    assert got.getheader("Connection") == "close"
    head = request(ops.port, "HEAD", path)
    assert head.status == 200
    assert head.read() == b""
    assert int(head.getheader("Content-Length") or 0) > 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_are_refused(ops: OpsServer, method: str) -> None:
    got = request(ops.port, method, "/metrics")
    assert got.status == 405
    assert got.getheader("Allow") == "GET, HEAD"


@pytest.mark.parametrize("path", ["/", "/metrics/../etc/passwd", "/debug", "/healthz/x"])
def test_other_paths_are_not_found(ops: OpsServer, path: str) -> None:
    assert request(ops.port, "GET", path).status == 404


def test_an_oversized_request_head_is_dropped(ops: OpsServer) -> None:
    s = socket.create_connection(("127.0.0.1", ops.port), timeout=10)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 64 * 1024)
        s.settimeout(5)
        data = s.recv(100)
    except OSError:
        data = b""  # reset while we were still sending
    finally:
        s.close()
    assert not data.startswith(b"HTTP/1.1 200")
    assert request(ops.port, "GET", "/healthz").status == 200


@pytest.mark.parametrize(("host", "port"), [("192.0.2.1", 0), ("127.0.0.1", 70000)])
def test_an_address_it_cannot_listen_on_is_a_config_error_naming_the_keys(
    host: str, port: int
) -> None:
    with pytest.raises(ConfigError, match=r"observability\.host/observability\.port"):
        OpsServer(host, port, CollectorRegistry(), dict, dict)
