"""A misbehaving bureau of our own (raw sockets on 127.0.0.1) and a deliverer to aim at it.

:class:`HostileBureau` speaks just enough HTTP/1.1 to read a request and then does whatever
the test scripted for that escalation (keyed by the ``X-Idempotency-Key`` header, which the
JSON+HMAC cities send): trickle, stall, reset, lie about lengths, answer 300 KB case numbers.
Each escalation's script is a list of behaviours used one per attempt; once the list is spent
the bureau answers like a healthy one (opens one case per idempotency key, answers with its
case number), so an escalation that was only made to *wait* ends receipted and a test can
tell "waiting" from "lost". It serves Beijing, Hangzhou and Nanjing (by request path).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.app import App
from gateway.avro.codec import Codec
from gateway.cities import CITIES, city_key
from gateway.config import Settings, load_settings
from gateway.dev.samples import SampleFactory
from gateway.errors import RecordError
from gateway.kafka.clients import Producer, Record
from gateway.ops.metrics import Metrics
from gateway.routing.escalation import build_escalation
from gateway.topics import Topics, TopicSpec
from tests.helpers import header, read_all, wait_until  # noqa: F401 (kit.wait_until)

_CITY = {c.key: c for c in CITIES}


@dataclass(frozen=True)
class Profile:
    """Where a city's answer keeps its code and case number, and the 'accepted' code."""

    path: str
    code_field: str
    case_path: tuple[str, ...]
    ok: str

    def answer(self, code: str, case_number: object = None) -> dict[str, Any]:
        body: dict[str, Any] = {self.code_field: code, "msg": "ok"}
        if case_number is not None:
            node = body
            for part in self.case_path[:-1]:
                node = node.setdefault(part, {})
            node[self.case_path[-1]] = case_number
        return body


PROFILES = {
    "beijing": Profile("/api/12315/v1/complaints", "code", ("data", "slbh"), "0000"),
    "hangzhou": Profile("/openapi/v2/complaint/submit", "resultCode", ("caseNo",), "SUCCESS"),
    "nanjing": Profile("/12315/api/tousu", "status", ("result", "ajbh"), "0"),
}
_BY_PATH = {p.path: (city, p) for city, p in PROFILES.items()}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    city: str
    profile: Profile

    @property
    def key(self) -> str:
        return self.headers.get("x-idempotency-key", "")


Behaviour = Callable[["HostileBureau", socket.socket, Request], bool]
"""Answers (or misbehaves) on the connection; True to keep the connection for another request."""


@dataclass
class Seen:
    attempts: int = 0
    cut_after_s: list[float] = field(default_factory=list)
    """For trickled answers: how long after the request the client gave up."""


class HostileBureau:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._scripts: dict[str, list[Behaviour]] = {}
        self.seen: dict[str, Seen] = defaultdict(Seen)
        self.cases: dict[str, str] = {}
        self.opened: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hostile-bureau", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, key: str, *behaviours: Behaviour) -> None:
        with self._lock:
            self._scripts[key] = list(behaviours)

    def start(self) -> HostileBureau:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def open_case(self, req: Request) -> str:
        """One case per idempotency key (a duplicate gets the same case number)."""
        with self._lock:
            if req.key not in self.cases:
                self.cases[req.key] = f"{req.city[:2].upper()}-{len(self.cases) + 1:06d}"
                self.opened.append(req.key)
            return self.cases[req.key]

    # -- serving ------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        buf = b""
        try:
            while True:
                req, buf = _read_request(conn, buf)
                if req is None:
                    return
                with self._lock:
                    self.seen[req.key].attempts += 1
                    script = self._scripts.get(req.key)
                    behaviour = script.pop(0) if script else ok()
                if not req.city:  # a redirect somewhere we do not serve
                    behaviour = respond(404, b"no such page")
                if not behaviour(self, conn, req):
                    return
        except OSError:
            return
        finally:
            conn.close()


def _read_request(conn: socket.socket, buf: bytes) -> tuple[Request | None, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        rest += chunk
    city, profile = _BY_PATH.get(path, ("", PROFILES["beijing"]))
    return Request(method, path, headers, rest[:length], city, profile), rest[length:]


# -- answers ------------------------------------------------------------------------------------


def raw(status: int, body: bytes = b"", headers: dict[str, str | None] | None = None) -> bytes:
    """An HTTP/1.1 answer; a header given as None is left out (e.g. no Content-Length)."""
    head = [f"HTTP/1.1 {status} X"]
    hdrs: dict[str, str | None] = {
        "Content-Length": str(len(body)),
        "Content-Type": "application/json",
    }
    hdrs.update(headers or {})
    head += [f"{k}: {v}" for k, v in hdrs.items() if v is not None]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def respond(
    status: int, body: bytes = b"", headers: dict[str, str | None] | None = None
) -> Behaviour:
    """A well-formed HTTP answer with this status, body and headers."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        conn.sendall(raw(status, body, headers))
        return True

    return run


def ok() -> Behaviour:
    """A healthy bureau: open (or find) the case, answer 200 with its number."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        case = bureau.open_case(req)
        body = json.dumps(req.profile.answer(req.profile.ok, case)).encode()
        conn.sendall(raw(200, body))
        return True

    return run


def answer_with_case(case_number: object, code: str | None = None) -> Behaviour:
    """200 with the city's 'accepted' code (or ``code``) and this case number (None: absent)."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        body = json.dumps(req.profile.answer(code or req.profile.ok, case_number)).encode()
        conn.sendall(raw(200, body))
        return True

    return run


def duplicate(code: str) -> Behaviour:
    """The bureau already has a case for this key: answer ``code`` (its duplicate code)."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        body = json.dumps(req.profile.answer(code, bureau.open_case(req))).encode()
        conn.sendall(raw(200, body))
        return True

    return run


def json_answer(status: int, answer: Callable[[Profile], Any]) -> Behaviour:
    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        conn.sendall(raw(status, json.dumps(answer(req.profile)).encode()))
        return True

    return run


def stall(seconds: float) -> Behaviour:
    """Read the request, say nothing for ``seconds``, then close."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        _wait_closed(conn, seconds)
        return False

    return run


def trickle_body(every_s: float = 0.1, length: int = 4000) -> Behaviour:
    """Status and headers at once, then the body one byte every ``every_s`` (minutes long)."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        conn.sendall(raw(200, b"", {"Content-Length": str(length)}))
        _trickle(bureau, conn, req, b"x" * length, every_s)
        return False

    return run


def trickle_headers(every_s: float = 0.2) -> Behaviour:
    """The status line and headers one byte every ``every_s``, never finishing."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 4000 + b"\r\n"
        _trickle(bureau, conn, req, head, every_s)
        return False

    return run


def _trickle(
    bureau: HostileBureau, conn: socket.socket, req: Request, data: bytes, every_s: float
) -> None:
    started = time.monotonic()
    try:
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])
            if _wait_closed(conn, every_s):
                break
    except OSError:
        pass
    with bureau._lock:
        bureau.seen[req.key].cut_after_s.append(time.monotonic() - started)


def _wait_closed(conn: socket.socket, seconds: float) -> bool:
    """Sleep up to ``seconds``; True as soon as the client closed or reset the connection."""
    conn.settimeout(seconds)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        conn.settimeout(30)


def huge_body(size: int, *, declare: bool = True, chunked: bool = False) -> Behaviour:
    """A ``size``-byte answer sent as fast as the client reads it (stops when it hangs up)."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        if chunked:
            head = raw(200, b"", {"Content-Length": None, "Transfer-Encoding": "chunked"})
        else:
            head = raw(200, b"", {"Content-Length": str(size) if declare else None})
        sent = 0
        block = b"{" + b" " * 65534 + b"}"
        try:
            conn.sendall(head)
            while sent < size:
                part = block[: min(len(block), size - sent)]
                conn.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part)
                sent += len(part)
            if chunked:
                conn.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        with bureau._lock:
            bureau.seen[req.key].cut_after_s.append(float(sent))
        return False

    return run


def declared_length(length: int) -> Behaviour:
    """Headers claim a body of ``length`` bytes; nothing follows."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        conn.sendall(raw(200, b"", {"Content-Length": str(length)}))
        _wait_closed(conn, 10)
        return False

    return run


def truncated(sent: int = 20, declared: int = 500) -> Behaviour:
    """Promise ``declared`` bytes, send ``sent``, hang up."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        body = json.dumps(req.profile.answer(req.profile.ok, "X" * 400)).encode()
        conn.sendall(raw(200, b"", {"Content-Length": str(declared)}) + body[:sent])
        return False

    return run


def reset() -> Behaviour:
    """Read the request and answer with a TCP reset."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False

    return run


def hang_up() -> Behaviour:
    """Read the request and close without a byte."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        return False

    return run


def garbage(data: bytes) -> Behaviour:
    """Send these bytes instead of an HTTP answer and close."""

    def run(bureau: HostileBureau, conn: socket.socket, req: Request) -> bool:
        conn.sendall(data)
        return False

    return run


# -- deliverer and records ----------------------------------------------------------------------

HOSTILE_CITY: dict[str, Any] = {
    "timeout_s": 1.0,
    "deadline_s": 2.0,
    "max_answer_bytes": 64 * 1024,
    "concurrency": 4,
    "retry": {
        "initial_s": 0.05,
        "max_wait_s": 0.5,
        "jitter_s": 0.05,
        "budget_s": 20.0,
        "retry_after_cap_s": 1.0,
    },
    "breaker": {"failure_threshold": 50, "open_s": 0.5, "max_open_s": 1.0},
}


class Deliverer:
    """The delivery engine in this process for the hostile cities (real Kafka, real HTTP)."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.app = App(
            settings,
            route=False,
            deliver=True,
            cities=list(PROFILES),
            metrics=Metrics(self.registry),
        )
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.exit_code = self.app.run(shutdown_timeout_s=10, with_ops=False)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def outcomes(self) -> float:
        """Escalations with a final outcome so far (accepted + dead-lettered, all cities)."""
        total = 0.0
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name in (
                    "greenchannel_delivered_total",
                    "greenchannel_delivery_dead_letters_total",
                ):
                    total += sample.value
        return total

    def workers_alive(self) -> bool:
        engine = self.app.engine
        assert engine is not None
        pool = engine.workers  # started, and no worker thread gone
        return pool.threads() >= pool.size and not pool.dead_workers()


@dataclass
class Live:
    settings: Settings
    bureau: HostileBureau
    deliverer: Deliverer
    published: int = 0


@dataclass(frozen=True)
class _LimitedSpec(TopicSpec):
    max_message_bytes: int = 0

    @property
    def configs(self) -> dict[str, str]:
        return super().configs | {"max.message.bytes": str(self.max_message_bytes)}


@contextmanager
def live(kafka_bootstrap: str, *, dlq_max_bytes: int | None = None, **city: Any) -> Iterator[Live]:
    """Topics under a fresh prefix, a hostile bureau for the three cities and a deliverer.

    ``dlq_max_bytes`` lowers the escalation dead-letter topic's ``max.message.bytes``."""
    from tests.conftest import TopicFactory

    topics = TopicFactory(kafka_bootstrap)
    specs = topics.topics.all(load_settings().router.green_cities)
    if dlq_max_bytes is not None:
        specs = [
            _LimitedSpec(
                s.name,
                s.partitions,
                s.retention_ms,
                s.role,
                s.cleanup_policy,
                max_message_bytes=dlq_max_bytes,
            )
            if s.name == topics.topics.dlq_escalations
            else s
            for s in specs
        ]
    topics.create_specs(specs)
    bureau = HostileBureau().start()
    cities = {c: {"endpoint": bureau.endpoint} | HOSTILE_CITY | city for c in PROFILES}
    settings = load_settings(
        None,
        kafka={"bootstrap_servers": kafka_bootstrap},
        topics={"prefix": topics.prefix},
        cities=cities,
        delivery={"group_id": f"{topics.prefix}deliver"},
    )
    try:
        with deliverer(settings) as d:
            yield Live(settings, bureau, d)
    finally:
        bureau.stop()
        topics.cleanup()


@contextmanager
def deliverer(settings: Settings) -> Iterator[Deliverer]:
    d = Deliverer(settings)
    d.thread.start()
    try:
        yield d
    finally:
        d.app.stop.set()
        d.thread.join(30)


class Publisher:
    """Escalations for the hostile cities, published straight to their topics."""

    def __init__(self, settings: Settings, seed: int = 7) -> None:
        self.settings = settings
        self.codec = Codec(settings.codec)
        self.topics = Topics(settings.topics.prefix)
        self.producer = Producer(settings.kafka, linger_ms=1)
        self.factory = SampleFactory(seed=seed, major_share=1.0, green_share=1.0)
        self.sent: dict[str, str] = {}
        """escalation id -> city"""

    def escalation(self, city: str, **fields: Any) -> dict[str, Any]:
        sample = self.factory.next(major=True, city=_CITY[city]).record
        assert city_key(sample["city_code"]) == city
        esc = build_escalation(
            sample, city=city, rule_id="hostile", now_ms=int(time.time() * 1000), working_days=10
        )
        esc["escalation_id"] = f"esc-{uuid.uuid4().hex}"
        esc["created_at"] = int(time.time() * 1000)
        esc.update(fields)
        return esc

    def publish(self, esc: dict[str, Any]) -> str:
        value = self.codec.encode("escalation", esc)
        topic = self.topics.escalations(esc["city"])
        self.producer.send(topic, value, key=esc["complaint_id"].encode())
        self.sent[esc["escalation_id"]] = esc["city"]
        return str(esc["escalation_id"])

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()


@dataclass
class Outcome:
    receipts: dict[str, list[dict[str, Any]]]
    """escalation id -> its receipts"""
    dead: dict[str, list[Record]]
    """escalation id -> its dead letters (``key:<record key>`` for a cut one)"""


def read_outcomes(settings: Settings, expect: int, timeout_s: float = 60) -> Outcome:
    """Every receipt and escalation dead letter so far (waits for at least ``expect``)."""
    codec = Codec(settings.codec)
    topics = Topics(settings.topics.prefix)
    records = read_all(
        settings.kafka.bootstrap_servers,
        [topics.receipts, topics.dlq_escalations],
        expect=expect,
        timeout_s=timeout_s,
        idle_s=1.0,
    )
    receipts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    dead: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if r.topic == topics.receipts:
            receipt = codec.decode_as("receipt", r.value or b"")
            receipts[receipt["escalation_id"]].append(receipt)
        else:
            try:
                esc_id = codec.decode_as("escalation", r.value or b"")["escalation_id"]
            except RecordError:  # a cut dead letter: filed under its record key
                esc_id = "key:" + (r.key or b"").decode()
            dead[esc_id].append(r)
    return Outcome(receipts, dead)


def dlq_header(record: Record, name: str) -> str | None:
    return header(record, f"gc-dlq-{name}")
