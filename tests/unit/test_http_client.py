"""The bureau HTTP/1.1 client (:mod:`gateway.http_client`) against a scripted raw-socket server
on 127.0.0.1: framing, content codings, connection reuse, stale connections, refusals, TLS
session resumption. The hostile answers (trickles, stalls, huge bodies) are in
``tests/hostile/test_answers_http.py``."""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.http_client import Answer as HttpAnswer
from gateway.http_client import Origin, Pool, ProtocolError, TooLarge, arm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class AndClose(bytes):
    """An answer after which the server hangs up."""


class Server:
    """Answers each request on a connection with the next scripted answer."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tls = tls
        self.script: list[bytes | None] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self.resumed = 0
        self.close_after_answer = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)
            self.resumed += conn.session_reused
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                answer = self.script.pop(0) if self.script else ok(b"{}")
                if answer is None:
                    return
                conn.sendall(answer)
                if self.close_after_answer or isinstance(answer, AndClose):
                    return

    def close(self) -> None:
        self.listener.close()


def ok(body: bytes, *headers: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def call(
    pool: Pool, server: Server, *, cap: int = 1 << 20, headers: list[tuple[str, str]] | None = None
) -> HttpAnswer:
    origin = Origin("https" if server.tls else "http", "127.0.0.1", server.port)
    deadline = time.monotonic() + 5
    return pool.request("POST", origin, "/c?x=1", headers or [], b"{}", deadline=deadline, cap=cap)


def test_a_request_is_one_well_formed_message_and_the_connection_is_reused(
    server: Server,
) -> None:
    pool = Pool(None, max_idle=2, timeout_s=2)
    for _ in range(3):
        assert call(pool, server, headers=[("X-Key", "k1")]).body == b"{}"
    head = server.requests[0].decode()
    assert head.startswith("POST /c?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head and "X-Key: k1\r\n" in head
    assert head.endswith("Content-Length: 2\r\n\r\n{}")
    assert server.connections == 1 and pool.connections_opened == 1
    pool.close()


def test_chunked_bodies_with_extensions_and_trailers_are_joined(server: Server) -> None:
    server.script = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Trailer: t\r\n\r\n"
    ]
    pool = Pool(None, max_idle=2, timeout_s=2)
    assert call(pool, server).body == b"abcdefg"
    assert call(pool, server).body == b"{}" and server.connections == 1


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send
    ],
    ids=["gzip", "zlib deflate", "raw deflate"],
)
def test_gzip_and_deflate_answers_are_decoded(
    server: Server, coding: str, encode: Callable[[bytes], bytes]
) -> None:
    server.script = [ok(encode(b'{"code": "0000"}'), f"Content-Encoding: {coding}")]
    assert call(Pool(None, max_idle=2, timeout_s=2), server).body == b'{"code": "0000"}'


def test_a_compressed_answer_is_capped_by_its_decoded_size(server: Server) -> None:
    server.script = [ok(gzip.compress(b"0" * (10 << 20)), "Content-Encoding: gzip")]
    with pytest.raises(TooLarge) as err:
        call(Pool(None, max_idle=2, timeout_s=2), server, cap=64 * 1024)
    assert err.value.declared is None


def test_a_declared_length_over_the_cap_is_refused_before_reading(server: Server) -> None:
    server.script = [b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n"]
    with pytest.raises(TooLarge) as err:
        call(Pool(None, max_idle=2, timeout_s=2), server, cap=4096)
    assert err.value.declared == 999999999


def test_interim_answers_are_skipped_and_headers_folded_and_joined(server: Server) -> None:
    server.script = [
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\nSet-Cookie: a\nSet-Cookie: b\nX-Long: one\n two\n"
        b"Content-Length: 2\n\n{}"
    ]
    answer = call(Pool(None, max_idle=2, timeout_s=2), server)
    assert answer.status == 201 and answer.body == b"{}"
    assert answer.headers["set-cookie"] == "a, b" and answer.headers["x-long"] == "one two"


@pytest.mark.parametrize(
    "answer",
    [
        b"HELLO THERE\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{}",  # then hangs up
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: compress\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Encoding: gzip\r\n\r\nnope",
    ],
    ids=["not http", "two lengths", "truncated", "bad chunk", "unknown te", "bad line", "bad gz"],
)
def test_unreadable_answers_are_protocol_errors_and_never_pooled(
    server: Server, answer: bytes
) -> None:
    server.script = [AndClose(answer)]
    pool = Pool(None, max_idle=2, timeout_s=2)
    with pytest.raises(ProtocolError):
        call(pool, server)
    assert call(pool, server).body == b"{}" and pool.connections_opened == 2


def test_an_answer_read_until_close_or_marked_close_is_not_pooled(server: Server) -> None:
    server.script = [AndClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close")]
    pool = Pool(None, max_idle=2, timeout_s=2)
    assert call(pool, server).body == b"until close"
    server.script = [AndClose(ok(b"{}", "Connection: close"))]
    assert call(pool, server).body == b"{}"
    assert call(pool, server).body == b"{}" and pool.connections_opened == 3


def test_an_idle_connection_the_server_closed_is_not_reused(server: Server) -> None:
    server.close_after_answer = True
    pool = Pool(None, max_idle=2, timeout_s=2)
    assert call(pool, server).body == b"{}"
    time.sleep(0.05)  # the idle time in which the server closes is the scenario itself
    server.close_after_answer = False
    assert call(pool, server).body == b"{}" and pool.connections_opened == 2


def test_a_pooled_connection_hung_up_on_mid_request_fails_that_attempt(server: Server) -> None:
    server.script = [ok(b"{}"), None]  # the engine retries it: a transport error
    pool = Pool(None, max_idle=2, timeout_s=2)
    assert call(pool, server).body == b"{}"
    with pytest.raises(ProtocolError):
        call(pool, server)
    assert call(pool, server).body == b"{}" and pool.connections_opened == 2


@pytest.mark.parametrize(
    "header", [("X-Bad", "v\r\nInjected: 1"), ("Bad Name", "v"), ("X-Nul", "a\x00b")]
)
def test_a_header_that_could_split_the_request_is_refused_unsent(
    server: Server, header: tuple[str, str]
) -> None:
    with pytest.raises(ProtocolError):
        call(Pool(None, max_idle=2, timeout_s=2), server, headers=[header])
    assert server.requests == []


def test_the_deadline_bounds_every_read(server: Server) -> None:
    server.script = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{"]  # never finishes
    pool = Pool(None, max_idle=2, timeout_s=5)
    origin = Origin("http", "127.0.0.1", server.port)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        pool.request("GET", origin, "/", [], b"", deadline=started + 0.3, cap=100)
    assert time.monotonic() - started < 1.5


def test_a_new_connection_resumes_the_last_tls_session(tmp_path: Path) -> None:
    from gateway.dev.bureau_tls import ensure_tls

    files = ensure_tls(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    server = Server(server_ctx)
    client_ctx = ssl.create_default_context(cafile=str(files.ca))
    pool = Pool(client_ctx, max_idle=0, timeout_s=2)  # no idle connection: one per request
    for _ in range(3):
        assert call(pool, server).body == b"{}"
    assert pool.connections_opened == 3
    assert server.resumed >= 1, "every connection made a full TLS handshake"
    server.close()


def test_a_socket_timeout_is_set_only_when_it_changes() -> None:
    calls: list[float | None] = []

    class Sock:
        timeout: float | None = None

        def gettimeout(self) -> float | None:
            return self.timeout

        def settimeout(self, value: float | None) -> None:
            calls.append(value)
            self.timeout = value

    sock = Sock()
    for value in (2.0, 2.0, 2.0, 0.75, 0.75, 0.5):
        arm(sock, value)  # type: ignore[arg-type]
    assert calls == [2.0, 0.75, 0.5]
    assert sock.timeout == 0.5
