"""Callback receivers: one HTTP(S) server per bureau that calls back with case updates.

Per request, in this order (each refusal answered in the city's own format through the
connector's ``callback_answer``, nothing reaching Kafka):

1. the city's token bucket (``cities.<c>.inbound.rate_per_s``/``burst``): ``rate_limited``;
2. method and path (``connector.callback_path``): 404;
3. ``connector.parse_callback`` verifies the city's signature scheme: ``bad_signature``,
   ``unknown_client``, ``malformed``;
4. the signed timestamp within ``max_skew_s`` of our clock: ``stale``;
5. the nonce not seen within twice the skew (remembered only once the signature verified, so
   nobody can poison the memory): ``replayed``;
6. each event becomes a ``CaseUpdate`` (source ``CALLBACK``) on ``{prefix}cases.inbound.v1``,
   keyed by escalation id, and the producer is flushed before we answer ``ok``; if Kafka
   does not take them we answer ``unavailable`` and the bureau calls again.

A bureau that repeats a callback (ours answered ``ok`` but the answer was lost) produces the
same updates again: the keeper applies each state change once. Time is injected.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http.server import ThreadingHTTPServer
from typing import Any

from gateway.avro.codec import Codec
from gateway.cases.updates import from_event
from gateway.config import Settings
from gateway.errors import GreenChannelError, InboundRefused, KafkaUnavailable, RecordError
from gateway.httpd import BureauHandler
from gateway.kafka.clients import Producer
from gateway.ops.observer import Observer
from gateway.policies.ratelimit import TokenBucket
from gateway.sdk import BureauResponse, CallbackInbound, CaseEvent, Credentials, InboundRequest
from gateway.topics import Topics

log = logging.getLogger(__name__)
MAX_BODY = 256 * 1024
NONCES_MAX = 50_000


class NonceMemory:
    """Nonces seen within a window (thread-safe, bounded)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_time(self, nonce: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) > NONCES_MAX:
                self._seen = {n: t for n, t in self._seen.items() if t > now}
            if self._seen.get(nonce, 0.0) > now:
                return False
            self._seen[nonce] = now + self.window_s
            return True


class CityReceiver:
    """The checks and the hand-over to Kafka for one city (no sockets: :meth:`handle`)."""

    def __init__(
        self,
        city: str,
        connector: CallbackInbound,
        credentials: Credentials,
        settings: Settings,
        send: Callable[[str, bytes, bytes], None],
        codec: Codec,
        observer: Observer,
        clock: Callable[[], float],
    ) -> None:
        inbound = settings.cities[city].inbound
        self.city = city
        self.connector = connector
        self.credentials = credentials
        self.topic = Topics(settings.topics.prefix).case_inbound
        self.send = send
        self.codec = codec
        self.observer = observer
        self.clock = clock
        self.skew_s = inbound.max_skew_s
        self.limiter = TokenBucket(inbound.rate_per_s, inbound.burst, clock)
        self.nonces = NonceMemory(2 * inbound.max_skew_s)

    def handle(self, request: InboundRequest) -> BureauResponse:
        outcome = self._outcome(request)
        if outcome == "not_found":
            return BureauResponse(404, {"content-type": "text/plain"}, b"not found")
        self.observer.on_case_callback(self.city, outcome)
        if outcome != "ok":
            log.warning("cases: callback refused", extra={"city": self.city, "reason": outcome})
        return self.connector.callback_answer(outcome)

    def _outcome(self, request: InboundRequest) -> str:
        if self.limiter.reserve() > 0:
            return "rate_limited"
        if request.method != "POST" or request.path != self.connector.callback_path:
            return "not_found"
        try:
            callback = self.connector.parse_callback(request, self.credentials)
        except InboundRefused as exc:
            return exc.reason
        now = self.clock()
        if abs(now - callback.timestamp_ms / 1000) > self.skew_s:
            return "stale"
        if not self.nonces.first_time(callback.nonce, now):
            return "replayed"
        return self._store(callback.events, int(now * 1000))

    def _store(self, events: tuple[CaseEvent, ...], now_ms: int) -> str:
        try:
            for event in events:
                update = from_event(event, city=self.city, observed_at_ms=now_ms, source="CALLBACK")
                value = self.codec.encode("case_update", update)
                self.send(self.topic, event.escalation_id.encode(), value)
        except RecordError as exc:
            log.warning("cases: callback event not encodable (%s)", exc.reason)
            return "malformed"
        except GreenChannelError as exc:
            log.warning("cases: callback not stored (%s): the bureau will call again", exc.reason)
            return "unavailable"
        return "ok"


class _Handler(BureauHandler):
    server: _Server
    timeout = 30

    def serve(self) -> None:
        if self.declared_length() > MAX_BODY:
            self.send_error(413)
            return
        body = self.request_body()
        path, _, query = self.path.partition("?")
        answer = self.server.receiver.handle(
            InboundRequest(self.command, path, self.request_headers(), body, query)
        )
        self.respond(answer.status, answer.headers, answer.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], receiver: CityReceiver) -> None:
        super().__init__(address, _Handler)
        self.receiver = receiver

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed TLS handshake or a dropped connection: logged, not printed."""
        log.info("cases: %s callback connection failed", self.receiver.city, exc_info=True)


class CallbackReceivers:
    """Every callback city's server; ``start`` binds them, ``port(city)`` says where."""

    def __init__(
        self,
        settings: Settings,
        connectors: Mapping[str, CallbackInbound],
        codec: Codec,
        observer: Observer,
        *,
        clock: Callable[[], float] = time.time,
        flush_timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.producer = Producer(settings.kafka, linger_ms=5)
        self._flush_lock = threading.Lock()
        self.flush_timeout_s = flush_timeout_s
        self.receivers = {
            city: CityReceiver(
                city,
                connector,
                _credentials(settings, city),
                settings,
                self._send,
                codec,
                observer,
                clock,
            )
            for city, connector in connectors.items()
        }
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []
        self.ready = threading.Event()

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        future = self.producer.send(topic, value, key=key)
        try:
            future.get(self.flush_timeout_s)
        except GreenChannelError:
            raise
        except Exception as exc:
            raise KafkaUnavailable(f"callback not stored: {type(exc).__name__}") from exc

    def start(self) -> CallbackReceivers:
        for city, receiver in self.receivers.items():
            inbound = self.settings.cities[city].inbound
            server = _Server((inbound.listen_host, inbound.listen_port), receiver)
            if inbound.tls_cert_file is not None and inbound.tls_key_file is not None:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.load_cert_chain(str(inbound.tls_cert_file), str(inbound.tls_key_file))
                # the handshake happens on the handler's thread (setup), not in the accept loop
                server.socket = ctx.wrap_socket(
                    server.socket, server_side=True, do_handshake_on_connect=False
                )
            self._servers[city] = server
            thread = threading.Thread(
                target=server.serve_forever, name=f"callbacks-{city}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.ready.set()
        return self

    def port(self, city: str) -> int:
        return int(self._servers[city].server_address[1])

    def url(self, city: str) -> str:
        server = self._servers[city]
        scheme = "https" if isinstance(server.socket, ssl.SSLSocket) else "http"
        host = self.settings.cities[city].inbound.listen_host
        return f"{scheme}://{host}:{self.port(city)}{self.receivers[city].connector.callback_path}"

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.server_close()
        self._servers.clear()
        self.producer.close()

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set (for the app's loop threads)."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()


def _credentials(settings: Settings, city: str) -> Credentials:
    creds = settings.cities[city].credentials
    return Credentials(creds.client_id, creds.resolved_secret(), dict(creds.extra))
