"""A small HTTP/1.1 client for bureau calls: standard library only, one request per call.

:class:`Pool` keeps each origin's idle keep-alive connections (LIFO, at most ``max_idle``) and
the TLS session of its last connection, so a new connection resumes it instead of a full
handshake. :meth:`Pool.request` writes the request in one ``sendall`` and reads the answer:
status line and headers (at most ``MAX_HEAD_BYTES``; 1xx answers skipped), then the body framed
by ``Transfer-Encoding: chunked``, ``Content-Length`` or the end of the connection, decoded
when ``Content-Encoding`` is gzip or deflate (other codings are passed through, as httpx does).

Every socket operation (connect, TLS handshake, write, each read) waits at most
``min(timeout_s, time left before the deadline)``; the deadline passed raises ``TimeoutError``.
The body is read only up to ``cap`` bytes (decoded): :class:`TooLarge`, also for a
``Content-Length`` over the cap, before reading it. An answer that is not HTTP/1.x as this
client reads it (or a request it refuses to write: a header name or value that could split the
request) is :class:`ProtocolError`; socket and TLS failures are ``OSError``. After any failure,
or an answer that ends with the connection, the connection is closed, never pooled.

Used by :mod:`gateway.http`, which owns the policy (allowlist, redirects, error taxonomy).
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
"""Largest status line + headers block read."""
READ_BYTES = 64 * 1024
DEFAULT_HEADERS = (("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate"))
"""Sent unless the request sets them (as httpx did, whose place this client took)."""

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?:[ \t](.*))?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
_UNSAFE_TARGET = re.compile(r"[^!-~]")


class ProtocolError(Exception):
    """The answer is not HTTP/1.x this client can read, or the request cannot be written."""


class TooLarge(Exception):
    """The body is over the cap: ``declared`` is its Content-Length when that said so."""

    def __init__(self, declared: int | None) -> None:
        super().__init__(declared)
        self.declared = declared


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ``", "``."""
    body: bytes


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def arm(sock: socket.socket, timeout: float) -> None:
    """``sock.settimeout(timeout)`` unless it is set so already (it is, while more than
    ``timeout_s`` is left before the deadline): CPython's settimeout is a system call that
    releases the GIL, and a deliverer's many workers queue for the GIL after each."""
    if sock.gettimeout() != timeout:
        sock.settimeout(timeout)


class _Clock:
    """The attempt's deadline: each socket operation's timeout."""

    __slots__ = ("deadline", "monotonic", "timeout_s")

    def __init__(self, deadline: float, timeout_s: float, monotonic: Callable[[], float]) -> None:
        self.deadline, self.timeout_s, self.monotonic = deadline, timeout_s, monotonic

    def timeout(self) -> float:
        left = self.deadline - self.monotonic()
        if left <= 0:
            raise TimeoutError("attempt deadline reached")
        return min(self.timeout_s, left)


class _Conn:
    __slots__ = ("buf", "new", "origin", "sock")

    def __init__(self, sock: socket.socket, origin: Origin) -> None:
        self.sock, self.origin = sock, origin
        self.buf = bytearray()
        self.new = True
        """No answer read on it yet (its TLS session is kept after the first one)."""

    def recv(self, clock: _Clock) -> bytes:
        arm(self.sock, clock.timeout())
        return self.sock.recv(READ_BYTES)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def stale(self) -> bool:
        """An idle connection the server closed (or wrote to) meanwhile: never reused."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class Pool:
    """Keep-alive connections of one client (a city), thread-safe."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        *,
        max_idle: int,
        timeout_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ssl_context = ssl_context
        self.max_idle = max_idle
        self.timeout_s = timeout_s
        self._monotonic = monotonic
        self._idle: dict[Origin, list[_Conn]] = {}
        self._sessions: dict[Origin, ssl.SSLSession] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.connections_opened = 0
        """New connections (each a TLS handshake on https), for tests and benchmarks."""

    def request(
        self,
        method: str,
        origin: Origin,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        deadline: float,
        cap: int,
    ) -> Answer:
        clock = _Clock(deadline, self.timeout_s, self._monotonic)
        data = _request_bytes(method, origin, target, headers, body)
        conn = self._checkout(origin, clock)
        try:
            arm(conn.sock, clock.timeout())
            conn.sock.sendall(data)
            answer, reusable = _read_answer(conn, clock, cap, head=method == "HEAD")
        except BaseException:
            conn.close()
            raise
        self._checkin(conn, reusable)
        return answer

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()

    # -- connections ------------------------------------------------------------------------
    def _checkout(self, origin: Origin, clock: _Clock) -> _Conn:
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connect(origin, clock)
            if not conn.stale():
                return conn
            conn.close()

    def _checkin(self, conn: _Conn, reusable: bool) -> None:
        if conn.new and isinstance(conn.sock, ssl.SSLSocket):
            session = conn.sock.session  # after an answer: TLS 1.3 tickets come after the handshake
            if session is not None:
                with self._lock:
                    self._sessions[conn.origin] = session
        conn.new = False
        with self._lock:
            idle = self._idle.setdefault(conn.origin, [])
            if reusable and not self._closed and len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def _connect(self, origin: Origin, clock: _Clock) -> _Conn:
        if origin.scheme == "https" and self.ssl_context is None:
            raise ProtocolError("https without a TLS context")
        sock = socket.create_connection((origin.host, origin.port), timeout=clock.timeout())
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if origin.scheme == "https":
                assert self.ssl_context is not None
                with self._lock:
                    session = self._sessions.get(origin)
                sock.settimeout(clock.timeout())
                sock = self.ssl_context.wrap_socket(
                    sock, server_hostname=origin.host, session=session
                )
        except BaseException:
            sock.close()
            raise
        with self._lock:
            self.connections_opened += 1
        return _Conn(sock, origin)


# -- writing ------------------------------------------------------------------------------------


def _request_bytes(
    method: str, origin: Origin, target: str, headers: list[tuple[str, str]], body: bytes
) -> bytes:
    if _UNSAFE_TARGET.search(target):
        raise ProtocolError("request target with a space or a non-ASCII character")
    names = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {origin.host_header}")
    lines += [f"{n}: {v}" for n, v in DEFAULT_HEADERS if n.lower() not in names]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ProtocolError("illegal header name or value")
        lines.append(f"{name}: {value}")
    if "content-length" not in names and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("ascii") + body


# -- reading ------------------------------------------------------------------------------------


def _read_answer(conn: _Conn, clock: _Clock, cap: int, *, head: bool) -> tuple[Answer, bool]:
    """The answer, and whether the connection may carry another request."""
    while True:
        version, status, headers = _read_head(conn, clock)
        if not 100 <= status < 200 or status == 101:
            break
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection and (version == 1 or "keep-alive" in connection)
    if head or status in (204, 304) or 100 <= status < 200:
        return Answer(status, headers, b""), keep and not conn.buf
    chunks, framed = _body(conn, clock, headers, cap)
    body = _capped(_decoded(chunks, headers.get("content-encoding", "")), cap)
    return Answer(status, headers, body), keep and framed and not conn.buf


def _read_head(conn: _Conn, clock: _Clock) -> tuple[int, int, dict[str, str]]:
    start = 0
    while (match := _HEAD_END.search(conn.buf, start)) is None:
        if len(conn.buf) > MAX_HEAD_BYTES:
            raise ProtocolError("answer head over 64 KiB")
        start = max(0, len(conn.buf) - 3)
        data = conn.recv(clock)
        if not data:
            raise ProtocolError("the server closed the connection without a complete answer")
        conn.buf += data
    if match.start() > MAX_HEAD_BYTES:
        raise ProtocolError("answer head over 64 KiB")
    raw = bytes(conn.buf[: match.start()])
    del conn.buf[: match.end()]
    lines = raw.split(b"\n")
    status = _STATUS.fullmatch(lines[0].rstrip(b"\r"))
    if status is None:
        raise ProtocolError("not an HTTP/1.x status line")
    return int(status.group(1)), int(status.group(2)), _headers(lines[1:])


def _headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    last = ""
    for line in lines:
        text = _text(line.rstrip(b"\r"))
        if text[:1] in (" ", "\t"):  # obsolete line folding
            if not last:
                raise ProtocolError("header continuation without a header")
            headers[last] = f"{headers[last]} {text.strip()}".strip()
            continue
        name, colon, value = text.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError("malformed header line")
        last = name.lower()
        value = value.strip(" \t")
        headers[last] = f"{headers[last]}, {value}" if last in headers else value
    return headers


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _body(
    conn: _Conn, clock: _Clock, headers: dict[str, str], cap: int
) -> tuple[Iterator[bytes], bool]:
    """The raw body's chunks, and whether its end is framed (False: until the connection
    closes, which it then cannot carry another request)."""
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise ProtocolError(f"unsupported transfer encoding {coding[:40]!r}")
        return _chunked(conn, clock), True
    length = headers.get("content-length")
    if length is not None:
        values = {v.strip() for v in length.split(",")}
        if len(values) != 1 or not (value := values.pop()).isdigit() or len(value) > 18:
            raise ProtocolError("malformed Content-Length")
        size = int(value)
        if size > cap:
            raise TooLarge(size)
        return _sized(conn, clock, size), True
    return _until_close(conn, clock), False


def _sized(conn: _Conn, clock: _Clock, size: int) -> Iterator[bytes]:
    while len(conn.buf) < size:
        data = conn.recv(clock)
        if not data:
            raise ProtocolError("the server closed the connection before the whole body")
        conn.buf += data
    body = bytes(conn.buf[:size])
    del conn.buf[:size]
    yield body


def _until_close(conn: _Conn, clock: _Clock) -> Iterator[bytes]:
    if conn.buf:
        yield bytes(conn.buf)
        conn.buf.clear()
    while data := conn.recv(clock):
        yield data


def _line(conn: _Conn, clock: _Clock) -> bytes:
    while (end := conn.buf.find(b"\n")) < 0:
        if len(conn.buf) > 4096:
            raise ProtocolError("chunk header over 4 KiB")
        data = conn.recv(clock)
        if not data:
            raise ProtocolError("the server closed the connection inside a chunked body")
        conn.buf += data
    line = bytes(conn.buf[:end]).rstrip(b"\r")
    del conn.buf[: end + 1]
    return line


def _chunked(conn: _Conn, clock: _Clock) -> Iterator[bytes]:
    while True:
        match = _CHUNK.fullmatch(_line(conn, clock))
        if match is None:
            raise ProtocolError("malformed chunk size")
        size = int(match.group(1), 16)
        if size == 0:
            while _line(conn, clock):  # trailers, up to the empty line
                pass
            return
        while size:
            if not conn.buf:
                data = conn.recv(clock)
                if not data:
                    raise ProtocolError("the server closed the connection inside a chunk")
                conn.buf += data
            part = bytes(conn.buf[:size])
            del conn.buf[: len(part)]
            size -= len(part)
            yield part
        if _line(conn, clock):
            raise ProtocolError("chunk not followed by CRLF")


def _decoded(chunks: Iterator[bytes], encoding: str) -> Iterator[bytes]:
    codings = [c.strip().lower() for c in encoding.split(",")]
    codings = [c for c in codings if c in ("gzip", "x-gzip", "deflate")]
    if not codings:
        return chunks
    if len(codings) > 1:
        raise ProtocolError("more than one content coding")
    return _inflate(chunks, gzip=codings[0] != "deflate")


def _inflate(chunks: Iterator[bytes], *, gzip: bool) -> Iterator[bytes]:
    """Decoded in bounded steps (a decompression bomb is cut by the cap); ``deflate`` may be
    zlib-wrapped or raw, as browsers and httpx accept."""
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
    may_be_raw = not gzip
    try:
        for raw in chunks:
            chunk = raw
            while chunk:
                try:
                    out = decoder.decompress(chunk, READ_BYTES)
                except zlib.error:
                    if not may_be_raw:
                        raise
                    decoder, may_be_raw = zlib.decompressobj(-zlib.MAX_WBITS), False
                    continue
                may_be_raw = False
                yield out
                chunk = decoder.unconsumed_tail
        yield decoder.flush()
    except zlib.error:
        raise ProtocolError("the body does not decode") from None


def _capped(chunks: Iterator[bytes], cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > cap:
            raise TooLarge(None)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)
