"""HTTP to bureaus: one client per city, bounded calls, the SSRF guard, OAuth2 tokens.

Every attempt is bounded twice (``cities.<c>.deadline_s`` and ``cities.<c>.max_answer_bytes``):

* **An overall deadline**: connect + TLS + write + the whole answer. Every socket operation of
  the attempt (on a fresh or a pooled connection, :mod:`gateway.http_client`) gets
  ``min(timeout_s, time left)`` as its timeout, so a bureau that trickles its answer a byte at a time is cut at the deadline, not
  after one ``timeout_s`` per byte. A cut is :class:`~gateway.errors.BureauUnavailable` with
  reason ``deadline`` (the breaker counts it as a failure).
* **A cap on the answer's size**: the body is streamed and reading stops at the cap (a
  ``Content-Length`` over it is refused before reading). An answer over the cap is
  :class:`~gateway.errors.IrregularAnswer` (the bureau answered, but not something we keep).

Transport errors and timeouts become :class:`~gateway.errors.BureauUnavailable`. Redirects are
followed by hand, at most ``MAX_REDIRECTS`` hops, and only to ``host:port`` pairs on the
configured allowlist (a redirect elsewhere is refused, like an unreachable bureau); all hops
share the attempt's deadline. Client certificates (mTLS) and a private CA come from the city's
``tls`` settings.

TLS policy: :func:`check_transport` refuses, naming the key, a configuration that cannot meet
what the city's connector declares (:class:`~gateway.sdk.TransportPolicy`: client certificate,
minimum TLS version); :func:`client_certificate` loads and checks the certificate and key at
start (readable, the key matches, not expired) and :func:`client_context` builds the one TLS
context a city's client uses (never below TLS 1.2).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import SplitResult, urljoin, urlsplit

import certifi

from gateway.config import CitySettings, Settings, TlsSettings, is_allowed, redact_url
from gateway.errors import BureauUnavailable, ConfigError, IrregularAnswer
from gateway.http_client import Answer, Origin, Pool, ProtocolError, TooLarge
from gateway.sdk import BureauRequest, BureauResponse, Connector, RequestContext, TransportPolicy

MAX_REDIRECTS = 3
TOKEN_REFRESH_MARGIN_S = 30.0


class Transport(Protocol):
    def send(self, request: BureauRequest) -> BureauResponse: ...

    def close(self) -> None: ...


class HttpTransport:
    """Sends BureauRequests to one city's endpoint, each attempt bounded in time and size.

    One keep-alive connection pool per city (:class:`gateway.http_client.Pool`): connections
    are reused across attempts, and a new one resumes the last TLS session."""

    def __init__(
        self,
        city: str,
        settings: CitySettings,
        allowlist: list[str],
        policy: TransportPolicy | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.city = city
        self.base = settings.endpoint.rstrip("/")
        self.allowlist = allowlist
        self.deadline_s = settings.deadline_s
        self.max_answer_bytes = settings.max_answer_bytes
        self._monotonic = monotonic
        try:
            ctx = client_context(settings.tls, policy or TransportPolicy())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cities.{city}.tls: cannot load TLS files: {type(exc).__name__}: {exc}"
            ) from exc
        self.pool = Pool(
            ctx,
            max_idle=settings.concurrency + 2,
            timeout_s=min(settings.timeout_s, settings.deadline_s),
            monotonic=monotonic,
        )
        self._allowed: set[str] = set()
        """URL prefixes (scheme://netloc) already checked against the allowlist."""

    def send(self, request: BureauRequest) -> BureauResponse:
        url = self.base + request.path
        deadline = self._monotonic() + self.deadline_s
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if not self._may_call(url, parts):
                raise BureauUnavailable(
                    f"{self.city}: refusing {redact_url(url)!r}: not on the endpoint "
                    "allowlist or carries credentials",
                    reason="redirect_blocked",
                )
            answer = self._exchange(request, parts, deadline)
            status, headers = answer.status, answer.headers
            if 300 <= status < 400 and status != 304 and "location" in headers:
                url = urljoin(url, headers["location"])
                continue
            return BureauResponse(status, headers, answer.body)
        raise BureauUnavailable(f"{self.city}: too many redirects", reason="redirect_blocked")

    def _may_call(self, url: str, parts: SplitResult) -> bool:
        """On the allowlist (http or https only) and without credentials in the URL."""
        if "@" in parts.netloc:
            return False
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin in self._allowed:
            return True
        if not is_allowed(url, self.allowlist):
            return False
        self._allowed.add(origin)
        return True

    def _exchange(self, request: BureauRequest, parts: SplitResult, deadline: float) -> Answer:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        origin = Origin(parts.scheme, parts.hostname or "", parts.port or _PORTS[parts.scheme])
        try:
            return self.pool.request(
                request.method,
                origin,
                target,
                list(request.headers.items()),
                request.body,
                deadline=deadline,
                cap=self.max_answer_bytes,
            )
        except TooLarge as exc:
            cap = self.max_answer_bytes
            if exc.declared is not None:
                raise IrregularAnswer(
                    f"{self.city}: answer declares {exc.declared} bytes (cap {cap})",
                    reason="answer_too_large",
                ) from None
            raise IrregularAnswer(
                f"{self.city}: answer over {cap} bytes; stopped reading",
                reason="answer_too_large",
            ) from None
        except TimeoutError as exc:
            if self._monotonic() >= deadline:
                raise BureauUnavailable(
                    f"{self.city}: no whole answer within the {self.deadline_s:g} s deadline",
                    reason="deadline",
                ) from exc
            raise BureauUnavailable(
                f"{self.city}: timeout: {type(exc).__name__}", reason="timeout"
            ) from exc
        except (OSError, ProtocolError) as exc:
            raise BureauUnavailable(
                f"{self.city}: transport error: {type(exc).__name__}", reason="transport"
            ) from exc

    def close(self) -> None:
        self.pool.close()


_PORTS = {"http": 80, "https": 443}


# --- TLS policy ----------------------------------------------------------------------------

TLS_VERSION = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def _no_password() -> bytes:
    # An encrypted key must not make OpenSSL prompt on a terminal: it fails to load instead.
    return b""


def _file_stamp(path: str | None) -> tuple[object, ...]:
    """What identifies a file's content for the context cache (raises OSError if unreadable)."""
    if path is None:
        return ()
    st = Path(path).stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def client_context(tls: TlsSettings, policy: TransportPolicy) -> ssl.SSLContext:
    """The TLS context for one city: its CA (or the certifi bundle), the higher of the
    connector's and the config's minimum version, and the client certificate when configured.

    Cities whose TLS settings come to the same (the same files, unchanged since: device, inode,
    size and mtime; the same minimum version) share one context, which is never changed after
    it is built. Loading the CA bundle costs ~25 ms of CPU and ~0.7 MiB per context: a
    deliverer of 100 cities (and its start-up checks) built 200 of them, 5 s of CPU before the
    first delivery and ~70 MiB kept."""
    cafile = str(tls.ca_file) if tls.ca_file is not None else certifi.where()
    certfile = str(tls.cert_file) if tls.cert_file is not None else None
    keyfile = str(tls.key_file) if tls.cert_file is not None and tls.key_file is not None else None
    wanted = max(TLS_VERSION[policy.min_tls], TLS_VERSION[tls.min_version or policy.min_tls])
    minimum = max(wanted, ssl.TLSVersion.TLSv1_2)
    stamps = (_file_stamp(cafile), _file_stamp(certfile), _file_stamp(keyfile))
    return _shared_context(cafile, certfile, keyfile, minimum, stamps)


@functools.lru_cache(maxsize=256)
def _shared_context(
    cafile: str,
    certfile: str | None,
    keyfile: str | None,
    minimum: ssl.TLSVersion,
    stamps: tuple[tuple[object, ...], ...],  # part of the key only: the files as they are now
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = minimum
    if certfile is not None:
        ctx.load_cert_chain(certfile, keyfile, password=_no_password)
    return ctx


def transport_problems(key: str, city: CitySettings, policy: TransportPolicy) -> list[str]:
    """Why ``cities.<key>`` cannot meet its connector's transport policy (empty: it can)."""
    problems = []
    scheme = urlsplit(city.endpoint).scheme
    if policy.client_cert:
        if scheme != "https":
            problems.append(
                f"cities.{key}.endpoint: the {key} bureau requires a client certificate (mTLS), "
                "which needs https"
            )
        if city.tls.cert_file is None:
            problems.append(
                f"cities.{key}.tls.cert_file: the {key} bureau requires a client certificate "
                "(mTLS): set tls.cert_file (and tls.key_file)"
            )
    wanted = city.tls.min_version
    if wanted is not None and TLS_VERSION[wanted] < TLS_VERSION[policy.min_tls]:
        problems.append(
            f"cities.{key}.tls.min_version: {wanted} is below what the {key} bureau requires "
            f"({policy.min_tls})"
        )
    return problems


def check_transport(
    settings: Settings, connectors: Mapping[str, Connector], cities: Iterable[str]
) -> None:
    """Raise ConfigError listing every city whose config cannot meet its connector's policy."""
    problems = [
        problem
        for key in cities
        for problem in transport_problems(
            key, settings.city(key), connectors[settings.connector_of(key)].transport
        )
    ]
    if problems:
        raise ConfigError("transport policy not met:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    city: str
    path: Path
    not_before_s: float
    not_after_s: float


_PEM_CERT = re.compile(re.escape(ssl.PEM_HEADER) + r".+?" + re.escape(ssl.PEM_FOOTER), re.DOTALL)


def _validity(path: Path) -> tuple[dt.datetime, dt.datetime]:
    """notBefore and notAfter (UTC) of the first certificate in the PEM file ``path``.

    Read from its DER encoding (RFC 5280: Certificate > TBSCertificate > Validity); the file
    may also hold the key or a chain, as ``load_cert_chain`` allows. Raises ValueError."""
    pem = _PEM_CERT.search(path.read_text("ascii", errors="replace"))
    if pem is None:
        raise ValueError("no PEM certificate")
    der = ssl.PEM_cert_to_DER_cert(pem.group())
    try:
        certificate = _der_element(der, 0)[1]
        fields = _der_children(_der_children(certificate)[0][1])  # TBSCertificate
        if fields[0][0] == 0xA0:  # [0] version (absent in a v1 certificate)
            fields = fields[1:]
        validity = _der_children(fields[3][1])  # after serialNumber, signature, issuer
        return _der_time(*validity[0]), _der_time(*validity[1])
    except IndexError:
        raise ValueError("not an X.509 certificate") from None


def _der_children(body: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) elements inside the content of a DER SEQUENCE."""
    children, i = [], 0
    while i < len(body):
        tag, content, i = _der_element(body, i)
        children.append((tag, content))
    return children


def _der_element(der: bytes, i: int) -> tuple[int, bytes, int]:
    """The element at ``der[i]``: its tag, its content and the index after it."""
    if i + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length, i = der[i], der[i + 1], i + 2
    if length & 0x80:
        n = length & 0x7F
        if not 0 < n <= 4 or i + n > len(der):
            raise ValueError("bad DER length")
        length, i = int.from_bytes(der[i : i + n], "big"), i + n
    if i + length > len(der):
        raise ValueError("truncated DER")
    return tag, der[i : i + length], i + length


def _der_time(tag: int, content: bytes) -> dt.datetime:
    """A UTCTime (0x17: YYMMDDHHMMSSZ, years 1950-2049) or GeneralizedTime (0x18)."""
    text = content.decode("ascii")
    if tag == 0x17:
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    elif tag != 0x18:
        raise ValueError(f"not a certificate time (tag {tag:#x})")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)


def _readable(key: str, path: Path) -> str | None:
    if not path.exists():
        return f"{key}: {path} does not exist"
    if not path.is_file():
        return f"{key}: {path} is not a regular file"
    try:
        path.read_bytes()
    except OSError as exc:
        return f"{key}: {path} cannot be read: {type(exc).__name__}"
    return None


def client_certificate(
    key: str, tls: TlsSettings, now_s: float
) -> tuple[ClientCertificate | None, list[str]]:
    """Load and check ``cities.<key>.tls`` now: files readable, the CA and the certificate
    parse, the key matches the certificate, the certificate is valid at ``now_s``.

    Returns the client certificate (None when there is none) and the problems found, each
    naming its key. Nothing is printed from the files themselves."""
    problems = [
        p
        for name in ("ca_file", "cert_file", "key_file")
        if (path := getattr(tls, name)) is not None
        and (p := _readable(f"cities.{key}.tls.{name}", path)) is not None
    ]
    if any(".tls.cert_file" in p or ".tls.key_file" in p for p in problems):
        return None, problems
    if problems:  # only the CA file is unusable: still check the client certificate
        tls = tls.model_copy(update={"ca_file": None})
    try:
        client_context(tls, TransportPolicy())
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        what = getattr(exc, "reason", None) or type(exc).__name__
        if "KEY_VALUES_MISMATCH" in str(exc):
            what = "the key does not match the certificate"
        return None, [f"cities.{key}.tls: cannot load the TLS files: {what}"]
    if tls.cert_file is None:
        return None, []
    try:
        not_before, not_after = _validity(tls.cert_file)
    except (OSError, ValueError) as exc:
        return None, [f"cities.{key}.tls.cert_file: cannot read the certificate: {exc}"]
    cert = ClientCertificate(key, tls.cert_file, not_before.timestamp(), not_after.timestamp())
    if now_s >= cert.not_after_s:
        problems.append(f"cities.{key}.tls.cert_file: the certificate expired ({not_after})")
    elif now_s < cert.not_before_s:
        problems.append(
            f"cities.{key}.tls.cert_file: the certificate is not valid yet ({not_before})"
        )
    return cert, problems


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


def preflight(
    settings: Settings,
    connectors: Mapping[str, Connector],
    cities: Iterable[str],
    now_s: float,
    *,
    missing_tls_ok: bool = False,
    missing_secrets_ok: bool = False,
) -> tuple[list[ClientCertificate], list[str]]:
    """The start-up checks of delivery (``run``, ``deliver`` and ``check-config``): transport
    policy, secret files, TLS files. Raises ConfigError naming every bad key; returns the
    client certificates found and notes: files missing here, when ``missing_tls_ok`` /
    ``missing_secrets_ok`` (``check-config`` may run where the TLS mounts are not, and with
    ``--elsewhere`` where no mount is). A file that exists but is unusable is always refused."""
    keys = list(cities)
    check_transport(settings, connectors, keys)
    problems: list[str] = []
    certs: list[ClientCertificate] = []
    notes: list[str] = []
    for problem in settings.file_problems(keys):
        missing = problem.endswith("does not exist")
        (notes if missing and missing_secrets_ok else problems).append(problem)
    for key in keys:
        cert, found = client_certificate(key, settings.city(key).tls, now_s)
        for problem in found:
            missing = problem.endswith("does not exist")
            (notes if missing and missing_tls_ok else problems).append(problem)
        if cert is not None:
            certs.append(cert)
    if problems:
        raise ConfigError("cannot deliver with this configuration:\n  " + "\n  ".join(problems))
    return certs, notes
