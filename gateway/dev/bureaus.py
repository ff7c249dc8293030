"""The bureau simulator: one real HTTP(S) server per city on 127.0.0.1, plus an admin endpoint.

Each city speaks and *verifies* its own protocol (see :mod:`gateway.dev.bureau_protocols` and
:mod:`gateway.dev.bureau_profiles`): HMAC signatures with timestamp skew and nonce replay,
WS-Security digests, SM3 signs, OAuth2 tokens that expire, mTLS client certificates. Invalid
data gets the city's business error, a repeated idempotency key the same case number, too many
requests a 429 with Retry-After. Knobs (:class:`~gateway.dev.bureau_city.Faults`) change while
running, from Python or over HTTP.

Many cities: :func:`stamp_cities` makes copies of cities' config blocks (``beijing-00``...,
``connector: beijing``, each on its own port); a city without a profile of its own is played
with its connector's, so one simulator serves any number of cities of each protocol
(``bench.deliver --cities 100``).

Python::

    sim = BureauSimulator(settings, "var/bureaus/tls").start()   # ports from cities.*.endpoint
    sim.city("wuhu").set_faults(error_5xx_ratio=0.3, latency_ms=200)
    sim.cases("wuhu"); sim.city("wuhu").arrivals(); sim.stop()

Admin HTTP (``admin_port``, JSON)::

    GET    /cities                     every city: endpoint, family, faults, counters (requests,
                                       cases..., connections, tls_handshakes, tls_resumed)
    GET    /totals                     every counter summed over all cities (cheap to poll)
    GET    /cities/<c>                 one city
    GET    /cities/<c>/cases           [{case_number, key, arrived_at}]  (no personal data)
    GET    /cities/<c>/arrivals        [{at, status, path}] every request, to measure rates
    POST   /cities/<c>/faults          {"outage": true, ...} -> the new faults (400 on a bad knob)
    POST   /cities/<c>/reset           knobs back to the baseline
    DELETE /cities/<c>/cases           forget cases, keys, arrivals and counters

:class:`RemoteBureaus` is the client for that API (other processes: demo, e2e tests).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from gateway.config import Settings
from gateway.dev.bureau_city import Arrival, Case, CityBureau, Faults
from gateway.dev.bureau_profiles import profile_for
from gateway.dev.bureau_protocols import BureauProfile, Incoming
from gateway.errors import ConfigError
from gateway.httpd import BureauHandler

if TYPE_CHECKING:
    from gateway.dev.bureau_tls import TlsFiles

DEFAULT_TLS_DIR = Path("var/bureaus/tls")
DEFAULT_ADMIN_PORT = 18100


def stamp_cities(
    blocks: Mapping[str, Mapping[str, Any]], copies: int, ports: Iterator[int]
) -> dict[str, dict[str, Any]]:
    """``copies`` simulated cities for each ``cities.<key>`` block: ``<key>-00``, ``<key>-01``...,
    each a copy of its block (credentials, TLS, rate) on its own loopback port, with
    ``connector: <key>``: the gateway delivers to it with that city's connector and the
    simulator answers with that city's profile (benchmarks with many cities, ``bench.deliver
    --cities``)."""
    stamped: dict[str, dict[str, Any]] = {}
    for key, block in blocks.items():
        scheme = urlsplit(str(block["endpoint"])).scheme
        for n in range(copies):
            endpoint = f"{scheme}://127.0.0.1:{next(ports)}"
            stamped[f"{key}-{n:02d}"] = {**block, "connector": key, "endpoint": endpoint}
    return stamped


class _Server(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server: daemon threads, TCP_NODELAY, lazy TLS handshake per thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.ssl_context: ssl.SSLContext | None = None
        self.city: CityBureau | None = None
        self.simulator: BureauSimulator | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN, which can stall on DNS: skip it.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.city is not None:
            self.city.count("connections")
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        with self._conns_lock:
            self._conns.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: failed handshakes and dropped connections are part of the job."""

    def drop_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _CityHandler(BureauHandler):
    timeout = 60  # idle keep-alive connections are closed after this
    server: _Server

    def handle(self) -> None:
        """Count each TLS handshake (done in ``setup``: ``tls_handshakes``) and those that
        resumed a session (``tls_resumed``), so a benchmark sees connections and sessions reused."""
        if isinstance(self.request, ssl.SSLSocket) and self.server.city is not None:
            self.server.city.count("tls_handshakes")
            if self.request.session_reused:
                self.server.city.count("tls_resumed")
        super().handle()

    def serve(self) -> None:
        body = self.request_body()
        parts = urlsplit(self.path)
        assert self.server.city is not None
        req = Incoming(
            self.command, parts.path, self.request_headers(), body, self._peer_cn(), parts.query
        )
        answer = self.server.city.handle(req)
        if answer is None:
            self.close_connection = True
            return
        self.respond(answer.status, answer.headers, answer.body)

    def _peer_cn(self) -> str | None:
        if not isinstance(self.request, ssl.SSLSocket):
            return None
        cert = self.request.getpeercert() or {}
        for rdn in cert.get("subject", ()):
            for pair in rdn:
                if isinstance(pair, tuple) and pair[0] == "commonName":
                    return str(pair[1])
        return None


class _Listener:
    """A city's listening socket, which a ``refuse`` outage closes and re-opens on the same port."""

    def __init__(self, city: CityBureau, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.city, self.host, self.port, self.tls = city, host, port, tls
        self._server: _Server | None = None
        self._lock = threading.Lock()

    def set_listening(self, on: bool) -> None:
        with self._lock:
            if on and self._server is None:
                self._server = _serve(self.host, self.port, _CityHandler, self.city, self.tls)
                self.port = self._server.server_address[1]
            elif not on and self._server is not None:
                _close(self._server)
                self._server = None


def _serve(
    host: str,
    port: int,
    handler: type[BaseHTTPRequestHandler],
    city: CityBureau | None,
    tls: ssl.SSLContext | None,
) -> _Server:
    server = _Server((host, port), handler)
    server.city, server.ssl_context = city, tls
    name = f"bureau-{city.name if city else 'admin'}"
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name=name, daemon=True)
    thread.start()
    return server


def _close(server: _Server) -> None:
    server.shutdown()
    server.server_close()
    server.drop_connections()


def _server_tls(files: TlsFiles, mtls: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.server_cert, files.server_key)
    if mtls:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(files.ca)
    return context


def default_tls_dir(settings: Settings) -> Path:
    """The folder of the first configured ``tls.ca_file``, else ``var/bureaus/tls``."""
    for city in settings.cities.values():
        if city.tls.ca_file is not None:
            return city.tls.ca_file.parent
    return DEFAULT_TLS_DIR


class BureauSimulator:
    """All simulated bureaus of a :class:`~gateway.config.Settings`, started and stopped together.

    ``cities``: which ones (default: every configured city with a profile). ``ephemeral_ports``:
    bind port 0 instead of the configured ports (tests; read :meth:`endpoint`). ``admin_port``:
    serve the admin API there (``0`` = any free port, ``None`` = no admin API).
    """

    def __init__(
        self,
        settings: Settings,
        tls_dir: Path | str = DEFAULT_TLS_DIR,
        *,
        cities: Iterable[str] | None = None,
        ephemeral_ports: bool = False,
        admin_port: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings, self.tls_dir = settings, Path(tls_dir)
        names = list(cities) if cities is not None else list(settings.cities)
        self._cities: dict[str, CityBureau] = {}
        self._listeners: dict[str, _Listener] = {}
        self._ephemeral, self._admin_port, self._seed = ephemeral_ports, admin_port, seed
        self._admin: _Server | None = None
        for name in names:
            self._cities[name] = self._make_city(name)

    def _make_city(self, name: str) -> CityBureau:
        if name not in self.settings.cities:
            raise ConfigError(f"the simulator was asked for {name!r}, which has no cities block")
        conf = self.settings.cities[name]
        client = (conf.credentials.client_id, conf.credentials.resolved_secret())
        baseline = CityBureau.baseline(conf.rate_per_s, conf.burst)
        city = CityBureau(self._profile(name), client, baseline, seed=self._seed)
        # the bureau's side of the case lifecycle: polls and handling results are answered;
        # cases only move when a test or the demo starts a lifecycle with its plan
        from gateway.dev.bureau_lifecycle import BureauLifecycle, LifecyclePlan

        BureauLifecycle(city, client, LifecyclePlan(), seed=self._seed)
        return city

    def _profile(self, name: str) -> BureauProfile:
        """The city's own profile, else (a stamped copy, :func:`stamp_cities`) its connector's."""
        try:
            return profile_for(name)
        except ConfigError:
            connector = self.settings.cities[name].connector
            if connector is None or connector == name:
                raise
            return profile_for(connector)

    def start(self) -> BureauSimulator:
        files = self._tls_files()
        for name, city in self._cities.items():
            parts = urlsplit(self.settings.cities[name].endpoint)
            tls = (
                _server_tls(files, city.profile.mtls) if files and parts.scheme == "https" else None
            )
            port = 0 if self._ephemeral else (parts.port or 80)
            listener = _Listener(city, parts.hostname or "127.0.0.1", port, tls)
            listener.set_listening(True)
            city.on_listening(listener.set_listening)
            self._listeners[name] = listener
        if self._admin_port is not None:
            self._admin = _serve("127.0.0.1", self._admin_port, _AdminHandler, None, None)
            self._admin.simulator = self
        return self

    def _tls_files(self) -> TlsFiles | None:
        """Certificates for the HTTPS cities (made on first use; needs ``cryptography``)."""
        if not any(self._scheme(name) == "https" for name in self._cities):
            return None
        from gateway.dev.bureau_tls import ensure_tls

        mtls = [n for n, c in self._cities.items() if c.profile.mtls]
        client_cn = self.settings.cities[mtls[0]].credentials.client_id if mtls else "greenchannel"
        return ensure_tls(self.tls_dir, client_cn)

    def _scheme(self, name: str) -> str:
        return urlsplit(self.settings.cities[name].endpoint).scheme

    def stop(self) -> None:
        for city in self._cities.values():
            city.release()
            if city.lifecycle is not None:
                city.lifecycle.stop()
        for listener in self._listeners.values():
            listener.set_listening(False)
        self._listeners.clear()
        if self._admin is not None:
            _close(self._admin)
            self._admin = None

    def __enter__(self) -> BureauSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def names(self) -> list[str]:
        return list(self._cities)

    def city(self, name: str) -> CityBureau:
        return self._cities[name]

    def cases(self, name: str) -> list[Case]:
        return self._cities[name].cases()

    def endpoint(self, name: str) -> str:
        """Base URL the city really listens on (differs from config with ephemeral ports)."""
        scheme = urlsplit(self.settings.cities[name].endpoint).scheme
        listener = self._listeners[name]
        return f"{scheme}://{listener.host}:{listener.port}"

    @property
    def admin_url(self) -> str | None:
        if self._admin is None:
            return None
        return f"http://127.0.0.1:{self._admin.server_address[1]}"

    def totals(self) -> dict[str, int]:
        """Every counter summed over all cities."""
        out: dict[str, int] = {}
        for city in self._cities.values():
            for key, n in city.counters().items():
                out[key] = out.get(key, 0) + n
        return out

    def describe(self, name: str) -> dict[str, Any]:
        city = self._cities[name]
        return {
            "name": name,
            "endpoint": self.endpoint(name),
            "family": city.profile.family,
            "faults": asdict(city.faults()),
            "counters": city.counters(),
        }


class _AdminHandler(BureauHandler):
    timeout = 60
    server: _Server

    def serve(self) -> None:
        self._route(self.command)

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        sim = self.server.simulator
        assert sim is not None
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        body = self.request_body()
        try:
            status, payload = _admin(sim, method, parts, body)
        except (ValueError, TypeError) as exc:
            status, payload = 400, {"error": str(exc)}
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.respond(status, {"content-type": "application/json"}, data)


def _admin(sim: BureauSimulator, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
    if parts == ["healthz"]:
        return 200, {"ok": True}
    if parts == ["totals"] and method == "GET":
        return 200, {"counters": sim.totals()}
    if parts == ["cities"] and method == "GET":
        return 200, {"cities": [sim.describe(n) for n in sim.names()]}
    if len(parts) < 2 or parts[0] != "cities" or parts[1] not in sim.names():
        return 404, {"error": "unknown city or path"}
    route = _CITY_ROUTES.get((method, *parts[2:]))
    if route is None:
        return 404, {"error": "unknown path"}
    return 200, route(sim, sim.city(parts[1]), body)


def _set_faults(city: CityBureau, body: bytes) -> dict[str, Any]:
    knobs = json.loads(body or b"{}")
    if not isinstance(knobs, dict):
        raise ValueError("faults must be a JSON object")
    return {"faults": asdict(city.set_faults(**knobs))}


def _clear(city: CityBureau) -> dict[str, Any]:
    city.clear()
    return {"cleared": True}


_Route = Callable[[BureauSimulator, CityBureau, bytes], Any]
_CITY_ROUTES: dict[tuple[str, ...], _Route] = {
    ("GET",): lambda sim, city, _: sim.describe(city.name),
    ("GET", "cases"): lambda _, city, __: {"cases": [_public_case(c) for c in city.cases()]},
    ("GET", "arrivals"): lambda _, city, __: {"arrivals": [asdict(a) for a in city.arrivals()]},
    ("POST", "faults"): lambda _, city, body: _set_faults(city, body),
    ("POST", "reset"): lambda _, city, __: {"faults": asdict(city.reset_faults())},
    ("DELETE", "cases"): lambda _, city, __: _clear(city),
}


def _public_case(case: Case) -> dict[str, Any]:
    return {"case_number": case.case_number, "key": case.key, "arrived_at": case.arrived_at}


class RemoteBureaus:
    """Client for the admin API of a simulator running in another process."""

    def __init__(self, admin_url: str = f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}") -> None:
        self._http = httpx.Client(base_url=admin_url, timeout=10.0)

    def close(self) -> None:
        self._http.close()

    def cities(self) -> list[dict[str, Any]]:
        return list(self._get("/cities")["cities"])

    def city(self, name: str) -> RemoteCity:
        return RemoteCity(self, name)

    def totals(self) -> dict[str, int]:
        """Every counter summed over all cities (one small answer, however many cities)."""
        return dict(self._get("/totals")["counters"])

    def _get(self, path: str) -> Any:
        response = self._http.get(path)
        response.raise_for_status()
        return response.json()

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        response = self._http.request(method, path, json=payload)
        if response.status_code == 400:
            raise ValueError(response.json().get("error", "bad request"))
        response.raise_for_status()
        return response.json()


class RemoteCity:
    """Same knobs and observations as :class:`CityBureau`, over the admin API."""

    def __init__(self, remote: RemoteBureaus, name: str) -> None:
        self._remote, self.name = remote, name

    def set_faults(self, **knobs: Any) -> Faults:
        return Faults(**self._remote._call("POST", f"/cities/{self.name}/faults", knobs)["faults"])

    def reset_faults(self) -> Faults:
        return Faults(**self._remote._call("POST", f"/cities/{self.name}/reset")["faults"])

    def faults(self) -> Faults:
        return Faults(**self._remote._get(f"/cities/{self.name}")["faults"])

    def counters(self) -> dict[str, int]:
        return dict(self._remote._get(f"/cities/{self.name}")["counters"])

    def cases(self) -> list[dict[str, Any]]:
        return list(self._remote._get(f"/cities/{self.name}/cases")["cases"])

    def case_count(self) -> int:
        return len(self.cases())

    def arrivals(self) -> list[Arrival]:
        return [
            Arrival(**a) for a in self._remote._get(f"/cities/{self.name}/arrivals")["arrivals"]
        ]

    def clear(self) -> None:
        self._remote._call("DELETE", f"/cities/{self.name}/cases")
