"""Follow a (compacted) topic from its beginning, on a thread of its own.

Used for the schema store (:mod:`gateway.avro.store`): no consumer group and no commits, every
partition assigned and read from the beginning; :meth:`TopicFollower.start` returns once the
records that existed at start were handed over, then a thread keeps following.
:meth:`TopicFollower.catch_up` lets another thread wait until everything written before the
call has been handed over (the follower reads up to the end offsets it sees then).

Following, the thread takes what the consumer has fetched without waiting (``poll(0)``; the
fetches go on in kafka-python's I/O thread) and then waits ``idle_s`` on its condition, which
a catch-up request ends at once. A blocking poll could not be cut short: at 50 ms a poll the
follower alone cost every gateway process ~21 ms of CPU a second (an idle deliverer: 45 -> 24
ms/s), and a longer poll would have made each catch-up wait for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaConsumer
from kafka import TopicPartition as _KTP

from gateway.config import KafkaSettings
from gateway.errors import GreenChannelError
from gateway.kafka.clients import _wrap, check_connection, client_config

log = logging.getLogger(__name__)
OnRecord = Callable[[bytes | None, bytes | None], None]
"""Called with each record's key and value, on the follower's thread."""


class TopicFollower:
    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        on_record: OnRecord,
        *,
        idle_s: float = 0.5,
        poll_ms: int = 50,
    ) -> None:
        self.topic = topic
        self._settings = settings
        self._on_record = on_record
        self._idle_s = idle_s
        self._poll_ms = poll_ms
        """How long each poll of a catch-up (reading to the end offsets) may wait."""
        self._consumer: KafkaConsumer | None = None
        self._tps: list[_KTP] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._requested = 0
        self._served = 0

    def start(self, timeout_s: float) -> bool:
        """Read what the topic holds now, then follow it; False when the topic does not exist."""
        check_connection(self._settings)
        conf = client_config(self._settings) | {
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "isolation_level": "read_committed",
        }
        try:
            consumer = KafkaConsumer(**conf)
            partitions = consumer.partitions_for_topic(self.topic)
        except Exception as exc:
            raise _wrap(f"follow {self.topic}", exc) from exc
        if not partitions:
            consumer.close()
            return False
        self._consumer = consumer
        self._tps = [_KTP(self.topic, p) for p in sorted(partitions)]
        consumer.assign(self._tps)
        consumer.seek_to_beginning(*self._tps)
        self._read_to_end(time.monotonic() + timeout_s)
        self._thread = threading.Thread(target=self._run, name="schema-store", daemon=True)
        self._thread.start()
        return True

    def catch_up(self, timeout_s: float) -> bool:
        """Wait until every record written before this call was handed over (or timeout)."""
        if self._thread is None:
            return False
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._requested += 1
            ticket = self._requested
            self._cond.notify_all()  # the follower's idle wait ends
            while self._served < ticket:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    return self._served >= ticket
        return True

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                ticket = self._requested
            try:
                if ticket > self._served:
                    self._read_to_end(time.monotonic() + 30)
                    with self._cond:
                        self._served = ticket
                        self._cond.notify_all()
                else:
                    self._poll(0)
                    with self._cond:
                        if self._requested <= self._served and not self._stop.is_set():
                            self._cond.wait(self._idle_s)
            except GreenChannelError as exc:  # broker trouble: keep trying, the store waits
                log.warning("schema store: following %s: %s", self.topic, exc)
                self._stop.wait(1.0)

    def _poll(self, timeout_ms: int | None = None) -> None:
        assert self._consumer is not None
        try:
            batches = self._consumer.poll(
                timeout_ms=self._poll_ms if timeout_ms is None else timeout_ms
            )
        except Exception as exc:
            raise _wrap(f"follow {self.topic}", exc) from exc
        for records in batches.values():
            for r in records:
                self._on_record(r.key, r.value)

    def _read_to_end(self, deadline: float) -> None:
        assert self._consumer is not None
        try:
            ends = self._consumer.end_offsets(self._tps)
        except Exception as exc:
            raise _wrap(f"end offsets of {self.topic}", exc) from exc
        while time.monotonic() < deadline:
            if all(self._consumer.position(tp) >= ends[tp] for tp in self._tps):
                return
            self._poll()
        log.warning("schema store: %s not read to its end in time", self.topic)
