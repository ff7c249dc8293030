"""HTTP to bureaus: one httpx client per city, the SSRF guard, and the OAuth2 token cache.

Transport errors and timeouts become :class:`~gateway.errors.BureauUnavailable`. Redirects are
followed by hand, at most ``MAX_REDIRECTS`` hops, and only to ``host:port`` pairs on the
configured allowlist (a redirect elsewhere is refused, like an unreachable bureau).
Client certificates (mTLS) and a private CA come from the city's ``tls`` settings.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urljoin

import httpx

from gateway.config import CitySettings, is_allowed
from gateway.errors import BureauUnavailable, ConfigError
from gateway.sdk import BureauRequest, BureauResponse, Connector, RequestContext

MAX_REDIRECTS = 3
TOKEN_REFRESH_MARGIN_S = 30.0


class Transport(Protocol):
    def send(self, request: BureauRequest) -> BureauResponse: ...

    def close(self) -> None: ...


class HttpxTransport:
    """Sends BureauRequests to one city's endpoint."""

    def __init__(self, city: str, settings: CitySettings, allowlist: list[str]) -> None:
        self.city = city
        self.base = settings.endpoint.rstrip("/")
        self.allowlist = allowlist
        verify: str | bool = True
        if settings.tls.ca_file is not None:
            verify = str(settings.tls.ca_file)
        cert: tuple[str, str] | None = None
        if settings.tls.cert_file is not None and settings.tls.key_file is not None:
            cert = (str(settings.tls.cert_file), str(settings.tls.key_file))
        try:
            self._client = httpx.Client(
                timeout=httpx.Timeout(settings.timeout_s),
                verify=_ssl_context(verify, cert),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=settings.concurrency + 2),
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cities.{city}.tls: cannot load TLS files: {exc}") from exc

    def send(self, request: BureauRequest) -> BureauResponse:
        url = self.base + request.path
        for _ in range(MAX_REDIRECTS + 1):
            if not is_allowed(url, self.allowlist):
                raise BureauUnavailable(
                    f"{self.city}: refusing {url!r}: not on the endpoint allowlist",
                    reason="redirect_blocked",
                )
            try:
                resp = self._client.request(
                    request.method, url, headers=dict(request.headers), content=request.body
                )
            except httpx.TimeoutException as exc:
                raise BureauUnavailable(
                    f"{self.city}: timeout: {type(exc).__name__}", reason="timeout"
                ) from exc
            except httpx.HTTPError as exc:
                raise BureauUnavailable(
                    f"{self.city}: transport error: {type(exc).__name__}", reason="transport"
                ) from exc
            if resp.is_redirect and "location" in resp.headers:
                url = urljoin(url, resp.headers["location"])
                continue
            return BureauResponse(
                resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content
            )
        raise BureauUnavailable(f"{self.city}: too many redirects", reason="redirect_blocked")

    def close(self) -> None:
        self._client.close()


def _ssl_context(verify: str | bool, cert: tuple[str, str] | None) -> ssl.SSLContext | bool:
    if verify is True and cert is None:
        return True
    ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
    if cert is not None:
        ctx.load_cert_chain(cert[0], cert[1])
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
        response = self._transport.send(self._connector.token_request(ctx))
        if response.status >= 500 or response.status == 429:
            raise BureauUnavailable(f"token endpoint answered {response.status}", reason="token")
        try:
            token, expires_in = self._connector.interpret_token(response)
        except ValueError as exc:
            raise BureauUnavailable(f"token endpoint: {exc}", reason="token") from exc
        self._token = token
        self._expires_at = self._clock() + expires_in
