"""Receipts and dead letters written without a blocking round trip per record.

A lane worker hands a record's outcome writes (a receipt; a dead letter; both) to
:class:`Writes` and goes on with its next record: the producer puts the writes in flight
together into shared produce requests (its ``linger_ms``). A :class:`WriteGroup` holds one
record's writes; the record is final once the group is sealed and *every* write in it is
acknowledged by Kafka, and only then may the engine commit past it.

A write that fails for a transient or record-level reason (broker away, a timeout, a record
the broker refuses) is sent again with capped exponential backoff (``WRITE_BACKOFF_S``) by the
retry thread (started at the first failure, gone when nothing waits), until it succeeds or the
engine stops: it holds only its own record (the commit point of its partition waits; the
engine's progress check turns ``/healthz`` unhealthy if it never succeeds), never another
record, city or the process. On stop the record is not final: it is handed back uncommitted and
redelivered (the bureau deduplicates by idempotency key).

A write that fails *fatally* is never retried: a :class:`~gateway.errors.FatalError` from the
producer (authorisation, fencing, an unexpected non-retriable error), or a producer left in a
fatal state (kafka-python's idempotent producer after a broker refusal such as
``MessageSizeTooLarge``: every later send would fail the same way, forever). ``on_fatal`` is
called (the engine stops and the process exits 1, ``docs/errors.md``); the record stays
unfinished, so nothing is committed past it and it is delivered again after the restart.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import BrokerRejected, FatalError
from gateway.kafka.clients import Headers
from gateway.ops.observer import Observer
from gateway.pii import trim

log = logging.getLogger(__name__)
WRITE_BACKOFF_S = (0.2, 30.0)
"""First and longest wait between two tries of a failed receipt / dead-letter write."""
_STOP_CHECK_S = 0.05
"""How often the retry thread looks at the stop event while writes wait for their retry."""


class AsyncProducer(Protocol):
    """The slice of :class:`gateway.kafka.clients.Producer` the writes use."""

    def send_async(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        on_done: Callable[[Exception | None], None],
    ) -> None: ...

    def fatal_state(self) -> str | None: ...


class WriteGroup:
    """One record's writes: ``done(True)`` once sealed and every write acknowledged,
    ``done(False)`` when one of them could not be written (stop, a fatal failure); exactly once,
    on whichever thread settles the last write. ``on_written`` callbacks run just before
    ``done(True)``."""

    __slots__ = ("_done", "_failed", "_lock", "_open", "on_written")

    def __init__(self, done: Callable[[bool], None]) -> None:
        self._done = done
        self._open = 1  # the seal
        self._failed = False
        self._lock = threading.Lock()
        self.on_written: list[Callable[[], None]] = []

    def add(self) -> None:
        with self._lock:
            self._open += 1

    def settle(self, ok: bool, on_written: Callable[[], None] | None = None) -> None:
        """One write ended (``ok``: acknowledged), or the record's handling did (the seal: no
        more writes will be added; ``ok`` False when the record is not final anyway)."""
        with self._lock:
            self._open -= 1
            self._failed = self._failed or not ok
            if on_written is not None:
                self.on_written.append(on_written)
            if self._open:
                return
            final = not self._failed
        if final:
            for callback in self.on_written:
                try:
                    callback()
                except Exception as exc:  # metrics or a log line must not lose the completion
                    log.error("outcome callback failed: %s", type(exc).__name__)
        self._done(final)


@dataclass(slots=True)
class _Write:
    city: str
    kind: str
    topic: str
    value: bytes
    key: bytes | None
    headers: Headers
    group: WriteGroup
    on_written: Callable[[], None] | None
    wait_s: float
    tries: int = field(default=0)


class Writes:
    """Sends outcome writes asynchronously and retries the failed ones; see the module doc."""

    def __init__(
        self,
        producer: AsyncProducer,
        observer: Observer,
        *,
        stop: threading.Event,
        backoff_s: tuple[float, float] = WRITE_BACKOFF_S,
        on_fatal: Callable[[FatalError], None] = lambda exc: None,
    ) -> None:
        self.producer = producer
        self.observer = observer
        self.stop = stop
        self.backoff_s = backoff_s
        self.on_fatal = on_fatal
        self._due: list[tuple[float, int, _Write]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def send(
        self,
        group: WriteGroup,
        city: str,
        kind: str,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        """Add one write to ``group`` and send it; ``on_written`` runs once it is acknowledged."""
        group.add()
        write = _Write(city, kind, topic, value, key, headers, group, on_written, self.backoff_s[0])
        self._send(write)

    def _send(self, w: _Write) -> None:
        w.tries += 1
        self.producer.send_async(
            w.topic,
            w.value,
            key=w.key,
            headers=w.headers,
            on_done=lambda exc: self._settled(w, exc),
        )

    def _settled(self, w: _Write, exc: Exception | None) -> None:
        if exc is None:
            w.group.settle(True, w.on_written)
            return
        self.observer.on_outcome_write_failed(w.city, w.kind)
        what = w.kind.replace("_", " ")
        fatal = self._fatal(exc)
        if fatal is not None:
            log.critical(
                "%s: %s write to %s failed fatally (%s); stopping delivery (exit 1): "
                "the record stays uncommitted and is delivered again after the restart",
                w.city,
                what,
                w.topic,
                trim(str(fatal), 300),
            )
            self.on_fatal(fatal)
            w.group.settle(False)
            return
        log.warning(
            "%s: %s write to %s failed (%s: %s); retrying in %.1fs",
            w.city,
            what,
            w.topic,
            type(exc).__name__,
            trim(str(exc), 200),
            w.wait_s,
        )
        self._schedule(w)

    def _fatal(self, exc: Exception) -> FatalError | None:
        """The failure as a FatalError when retrying cannot help, else ``None``."""
        state = self.producer.fatal_state()
        if state is not None:
            return FatalError(
                f"the producer is in a fatal state after {state} (last: {type(exc).__name__})"
            )
        if isinstance(exc, BrokerRejected):
            # Delivery never sends past the limits it read at start: a refusal means they
            # changed under it (or the record is malformed), and kafka-python's idempotent
            # producer is unusable after one anyway. Exit; the restart re-reads the limits.
            return FatalError(f"the broker refused the write: {exc}")
        return exc if isinstance(exc, FatalError) else None

    # -- retries ------------------------------------------------------------------------------
    def _schedule(self, w: _Write) -> None:
        with self._cond:
            if not self.stop.is_set():
                heapq.heappush(self._due, (time.monotonic() + w.wait_s, next(self._seq), w))
                w.wait_s = min(w.wait_s * 2, self.backoff_s[1])
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._retry, name="deliver-write-retry", daemon=True
                    )
                    self._thread.start()
                self._cond.notify()
                return
        w.group.settle(False)

    def _retry(self) -> None:
        while (w := self._next()) is not None:
            self._send(w)

    def _next(self) -> _Write | None:
        """The next write whose retry is due (waiting for it); None once nothing waits or the
        engine stops (the waiting writes then end unwritten)."""
        with self._cond:
            while self._due and not self.stop.is_set():
                left = self._due[0][0] - time.monotonic()
                if left <= 0:
                    return heapq.heappop(self._due)[2]
                self._cond.wait(min(left, _STOP_CHECK_S))
            abandoned = [w for _, _, w in self._due]
            self._due.clear()
            self._thread = None
        for w in abandoned:
            w.group.settle(False)
        return None

    def waiting(self) -> int:
        """Writes waiting for their retry."""
        with self._cond:
            return len(self._due)
