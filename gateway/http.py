"""HTTP to bureaus: one httpx client per city, bounded calls, the SSRF guard, OAuth2 tokens.

Every attempt is bounded twice (``cities.<c>.deadline_s`` and ``cities.<c>.max_answer_bytes``):

* **An overall deadline**: connect + TLS + write + the whole answer. Every socket operation of
  the attempt (on a fresh or a pooled connection) gets ``min(timeout_s, time left)`` as its
  timeout, so a bureau that trickles its answer a byte at a time is cut at the deadline, not
  after one ``timeout_s`` per byte. A cut is :class:`~gateway.errors.BureauUnavailable` with
  reason ``deadline`` (the breaker counts it as a failure).
* **A cap on the answer's size**: the body is streamed and reading stops at the cap (a
  ``Content-Length`` over it is refused before reading). An answer over the cap is
  :class:`~gateway.errors.IrregularAnswer` (the bureau answered, but not something we keep).

Transport errors and timeouts become :class:`~gateway.errors.BureauUnavailable`. Redirects are
followed by hand, at most ``MAX_REDIRECTS`` hops, and only to ``host:port`` pairs on the
configured allowlist (a redirect elsewhere is refused, like an unreachable bureau); all hops
share the attempt's deadline. Client certificates (mTLS) and a private CA come from the city's
``tls`` settings (:func:`tls_context`, the one place TLS is configured).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import urljoin

import httpcore
import httpx

from gateway.config import CitySettings, is_allowed
from gateway.errors import BureauUnavailable, ConfigError, IrregularAnswer
from gateway.sdk import BureauRequest, BureauResponse, Connector, RequestContext

MAX_REDIRECTS = 3
TOKEN_REFRESH_MARGIN_S = 30.0


class Transport(Protocol):
    def send(self, request: BureauRequest) -> BureauResponse: ...

    def close(self) -> None: ...


class _Deadline(threading.local):
    """The monotonic deadline of the attempt running on this thread (None: no attempt)."""

    at: float | None = None

    def clamp(self, timeout: float | None, expired: type[Exception]) -> float | None:
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise expired("attempt deadline reached")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read/write waits at most until the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, timeout), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: _Deadline) -> None:
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _BoundedTransport(httpx.HTTPTransport):
    """httpx's transport (its exception mapping included) over the deadline-aware sockets."""

    def __init__(self, ctx: ssl.SSLContext, max_connections: int, deadline: _Deadline) -> None:
        super().__init__(verify=ctx, limits=httpx.Limits(max_connections=max_connections))
        self._pool = httpcore.ConnectionPool(
            ssl_context=ctx,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            network_backend=_DeadlineBackend(deadline),
        )


class HttpxTransport:
    """Sends BureauRequests to one city's endpoint, each attempt bounded in time and size."""

    def __init__(
        self,
        city: str,
        settings: CitySettings,
        allowlist: list[str],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.city = city
        self.base = settings.endpoint.rstrip("/")
        self.allowlist = allowlist
        self.deadline_s = settings.deadline_s
        self.max_answer_bytes = settings.max_answer_bytes
        self._monotonic = monotonic
        self._deadline = _Deadline()
        try:
            ctx = tls_context(settings)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cities.{city}.tls: cannot load TLS files: {exc}") from exc
        self._client = httpx.Client(
            timeout=httpx.Timeout(min(settings.timeout_s, settings.deadline_s)),
            follow_redirects=False,
            transport=_BoundedTransport(ctx, settings.concurrency + 2, self._deadline),
        )

    def send(self, request: BureauRequest) -> BureauResponse:
        url = self.base + request.path
        self._deadline.at = self._monotonic() + self.deadline_s
        try:
            for _ in range(MAX_REDIRECTS + 1):
                if not is_allowed(url, self.allowlist):
                    raise BureauUnavailable(
                        f"{self.city}: refusing {url!r}: not on the endpoint allowlist",
                        reason="redirect_blocked",
                    )
                status, headers, body = self._exchange(request, url)
                if 300 <= status < 400 and status != 304 and "location" in headers:
                    url = urljoin(url, headers["location"])
                    continue
                return BureauResponse(status, headers, body)
        finally:
            self._deadline.at = None
        raise BureauUnavailable(f"{self.city}: too many redirects", reason="redirect_blocked")

    def _exchange(self, request: BureauRequest, url: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with self._client.stream(
                request.method, url, headers=dict(request.headers), content=request.body
            ) as resp:
                headers = {k.lower(): v for k, v in resp.headers.items()}
                return resp.status_code, headers, self._read_capped(resp, headers)
        except httpx.TimeoutException as exc:
            if self._deadline.at is not None and self._monotonic() >= self._deadline.at:
                raise BureauUnavailable(
                    f"{self.city}: no whole answer within the {self.deadline_s:g} s deadline",
                    reason="deadline",
                ) from exc
            raise BureauUnavailable(
                f"{self.city}: timeout: {type(exc).__name__}", reason="timeout"
            ) from exc
        except httpx.HTTPError as exc:
            raise BureauUnavailable(
                f"{self.city}: transport error: {type(exc).__name__}", reason="transport"
            ) from exc

    def _read_capped(self, resp: httpx.Response, headers: dict[str, str]) -> bytes:
        cap = self.max_answer_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise IrregularAnswer(
                f"{self.city}: answer declares {int(declared)} bytes (cap {cap})",
                reason="answer_too_large",
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise IrregularAnswer(
                    f"{self.city}: answer over {cap} bytes; stopped reading",
                    reason="answer_too_large",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._client.close()


def tls_context(settings: CitySettings) -> ssl.SSLContext:
    """The TLS client context of one city: httpx's trust store or ``tls.ca_file``; mTLS cert."""
    tls = settings.tls
    if tls.ca_file is not None:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
    else:
        ctx = httpx.create_ssl_context()  # httpx's default trust store, as before
    if tls.cert_file is not None and tls.key_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


class TokenCache:
    """OAuth2 client-credentials tokens for one city, refreshed before expiry and on demand."""

    def __init__(
        self, connector: Connector, transport: Transport, clock: Callable[[], float]
    ) -> None:
        self._connector = connector
        self._transport = transport
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    def get(self, ctx: RequestContext) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - TOKEN_REFRESH_MARGIN_S:
                self._fetch(ctx)
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def _fetch(self, ctx: RequestContext) -> None:
        try:
            response = self._transport.send(self._connector.token_request(ctx))
        except IrregularAnswer as exc:  # the token endpoint, not the escalation, misbehaves
            raise BureauUnavailable(f"token endpoint: {exc}", reason="token") from exc
        if response.status >= 500 or response.status == 429:
            raise BureauUnavailable(f"token endpoint answered {response.status}", reason="token")
        try:
            token, expires_in = self._connector.interpret_token(response)
        except ValueError as exc:
            raise BureauUnavailable(f"token endpoint: {exc}", reason="token") from exc
        self._token = token
        self._expires_at = self._clock() + expires_in
