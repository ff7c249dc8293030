"""Fakes for the delivery loops' unit tests: clock, connector, transport, producer, consumer,
observer and liveness registry. No broker, no sockets."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.avro.codec import Codec
from gateway.config import CodecSettings, Settings, load_settings
from gateway.dev.samples import SampleFactory
from gateway.errors import KafkaUnavailable
from gateway.kafka.clients import Headers, Record, TopicPartition
from gateway.routing.escalation import build_escalation
from gateway.sdk import (
    BureauRequest,
    BureauResponse,
    Escalation,
    Outcome,
    RequestContext,
    TokenGrant,
)
from gateway.topics import Topics

CODEC = Codec(CodecSettings())
TOPICS = Topics("u.")
FAST_RETRY = {
    "max_attempts": 3,
    "initial_s": 0.001,
    "max_wait_s": 0.002,
    "jitter_s": 0.0,
    "budget_s": 5.0,
    "retry_after_cap_s": 0.003,
}


class Clock:
    """Stands still unless moved (``now += s``), or moves ``step`` seconds at every reading."""

    def __init__(self, now: float = 1_790_000_000.0, step: float = 0.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@dataclass
class FakeConnector:
    """A bureau connector whose answers are scripted: ``interpret`` returns ``outcomes`` in
    order (the last one repeats); ``translate`` may raise ``translate_error``."""

    outcomes: list[Outcome | Exception] = field(default_factory=list)
    translate_error: Exception | None = None
    name: str = "wuhu"
    city_code: str = "340200"
    family: str = "fake"
    token_grant: TokenGrant | None = None
    requires_client_cert: bool = False
    requests: list[tuple[str, RequestContext]] = field(default_factory=list)

    def translate(self, escalation: Escalation, ctx: RequestContext) -> BureauRequest:
        if self.translate_error is not None:
            raise self.translate_error
        self.requests.append((escalation.escalation_id, ctx))
        headers = {"X-Idempotency-Key": escalation.escalation_id}
        return BureauRequest("POST", "/c", headers, escalation.escalation_id.encode())

    def interpret(self, response: BureauResponse) -> Outcome:
        item = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(item, Exception):
            raise item
        return item

    def token_request(self, ctx: RequestContext) -> BureauRequest:
        raise NotImplementedError

    def interpret_token(self, response: BureauResponse) -> tuple[str, float]:
        raise NotImplementedError


class FakeTransport:
    """Answers 200 unless told to raise (a list consumed one per call; the last repeats)."""

    def __init__(self, errors: Iterable[Exception | None] = (None,)) -> None:
        self.errors = list(errors)
        self.sent: list[BureauRequest] = []
        self.closed = False

    def send(self, request: BureauRequest) -> BureauResponse:
        self.sent.append(request)
        error = self.errors.pop(0) if len(self.errors) > 1 else self.errors[0]
        if error is not None:
            raise error
        return BureauResponse(200, {}, b'{"ok": true}')

    def close(self) -> None:
        self.closed = True


@dataclass
class Sent:
    topic: str
    value: bytes
    key: bytes | None
    headers: Headers

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode()
        return None


class FakeProducer:
    """Records what is sent; ``fail`` raises that many times before succeeding
    (``fail=-1``: always)."""

    def __init__(self, fail: int = 0, error: Exception | None = None) -> None:
        self.fail = fail
        self.error = error or KafkaUnavailable("send to x: KafkaTimeoutError")
        self.sent: list[Sent] = []
        self.tries = 0
        self.broken: str | None = None
        self._lock = threading.Lock()

    def send_async(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        on_done: Callable[[Exception | None], None],
    ) -> None:
        """Acknowledges (or fails) at once, on the caller's thread."""
        with self._lock:
            self.tries += 1
            error: Exception | None = None
            if self.fail:
                self.fail -= 1 if self.fail > 0 else 0
                error = self.error
            else:
                self.sent.append(Sent(topic, value, key, list(headers or ())))
        on_done(error)

    def flush(self, timeout_s: float | None = None) -> None:
        return None

    def fatal_state(self) -> str | None:
        """Set ``broken`` to play kafka-python's idempotent producer after a fatal refusal."""
        return self.broken

    def to(self, topic: str) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.topic == topic]

    def close(self) -> None:
        return None


class FakeObserver:
    """Counts every event by name and arguments."""

    def __init__(self) -> None:
        self.events: Counter[tuple[Any, ...]] = Counter()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not name.startswith(("on_", "watch_")):
            raise AttributeError(name)

        def record(*args: Any) -> None:
            if name.startswith("watch_"):
                return
            key = (name, *(a for a in args if isinstance(a, str | bool)))
            with self._lock:
                self.events[key] += 1

        return record

    def count(self, *key: Any) -> int:
        with self._lock:
            return self.events[key]


class FakeLiveness:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.stale_after: dict[str, float] = {}
        self.last_beat: dict[str, float] = {}
        self.failures: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def register(self, name: str, stale_after_s: float) -> None:
        self.stale_after[name] = stale_after_s
        self.last_beat[name] = self.clock()

    def beat(self, name: str) -> None:
        with self._lock:
            self.last_beat[name] = self.clock()

    def fail(self, name: str, reason: str) -> None:
        with self._lock:
            self.failures.append((name, reason))


class FakeConsumer:
    """The slice of :class:`gateway.kafka.clients.Consumer` the engine uses."""

    def __init__(self, *, topics: list[str], on_assigned: Callable[..., None], **_: Any) -> None:
        self.assigned = [TopicPartition(t, 0) for t in topics]
        self.on_assigned = on_assigned
        self.queue: list[Record] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.paused_tps: set[TopicPartition] = set()
        self.closed = False
        self.positions: dict[TopicPartition, int] = {}
        self._first = True

    def poll(self, timeout_ms: int) -> list[Record]:
        if self._first:
            self._first = False
            self.on_assigned(self.assigned)
        out = [r for r in self.queue if r.tp not in self.paused_tps]
        self.queue = [r for r in self.queue if r.tp in self.paused_tps]
        for record in out:
            self.positions[record.tp] = max(self.positions.get(record.tp, 0), record.offset + 1)
        return out

    def position(self, tp: TopicPartition) -> int:
        """Like the real consumer: the offset after the last record returned for ``tp``."""
        return self.positions.get(tp, 0)

    def positions_of(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.position(tp) for tp in tps}

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def committed(self, tp: TopicPartition) -> int | None:
        for commit in reversed(self.commits):
            if tp in commit:
                return commit[tp]
        return None

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_tps)

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused_tps |= set(tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused_tps -= set(tps)

    def lag_by_topic(
        self, positions: dict[TopicPartition, int], next_offsets: Mapping[TopicPartition, int]
    ) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.closed = True


_factory = SampleFactory(seed=3, major_share=1.0, green_share=1.0)


def escalation_record(
    city: str = "wuhu", offset: int = 0, *, key: bytes | None = None, **fields: Any
) -> tuple[Record, dict[str, Any]]:
    """An encoded escalation for ``city`` as a consumed record, and its fields."""
    from gateway.cities import CITIES

    info = next(c for c in CITIES if c.key == city)
    sample = _factory.next(major=True, city=info).record
    esc = build_escalation(
        sample, city=city, rule_id="unit", now_ms=1_790_000_000_000, working_days=10
    )
    esc.update(fields)
    value = CODEC.encode("escalation", esc)
    record = Record(
        TOPICS.escalations(city),
        0,
        offset,
        key if key is not None else esc["complaint_id"].encode(),
        value,
        [],
        1_790_000_000_000,
    )
    return record, esc


def unit_settings(**city: Any) -> Settings:
    cities = {
        c: {
            "endpoint": "http://127.0.0.1:9",
            "concurrency": 2,
            "retry": FAST_RETRY,
            "burst": 10_000,
        }
        | city
        for c in ("wuhu", "hefei")
    }
    return load_settings(
        None,
        topics={"prefix": "u."},
        cities=cities,
        router={"green_cities": ["wuhu", "hefei"]},
        delivery={"stuck_after_s": 60},
    )
