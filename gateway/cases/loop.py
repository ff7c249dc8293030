"""One transactional consume-produce loop, shared by the case intake and the case keeper.

As the router (``gateway/routing/router.py``): one poll = one Kafka transaction (outputs +
consumed offsets), so every output appears exactly once for ``read_committed`` readers, also
across crashes; a batch whose transaction fails is aborted and re-read. Subclasses turn a batch
into outputs (:meth:`outputs`) and learn when it committed (:meth:`committed`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.deadletters.headers import dead_letter_headers
from gateway.errors import GreenChannelError
from gateway.kafka.append import Outgoing
from gateway.kafka.clients import Consumer, Producer, Record, TopicPartition, offset_ranges
from gateway.ops.observer import Observer
from gateway.ops.watchdog import Watchdog
from gateway.topics import Topics

log = logging.getLogger(__name__)


class TransactionalLoop:
    name = "cases"
    stage = "cases"
    """The ``gc-dlq-stage`` of this loop's dead letters (:meth:`dead_letter`)."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        observer: Observer,
        watchdog: Watchdog,
        *,
        group_id: str,
        instance_id: str = "0",
        clock: Callable[[], float] = time.time,
        on_assigned: Callable[[list[TopicPartition]], None] | None = None,
        on_revoked: Callable[[list[TopicPartition]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topics.prefix)
        self.codec = codec
        self.observer = observer
        self.watchdog = watchdog
        self.clock = clock
        self.ready = threading.Event()
        self._user_assigned = on_assigned
        self._user_revoked = on_revoked
        self.consumer = Consumer(
            settings.kafka,
            group_id=group_id,
            topics=self.input_topics(),
            max_poll_records=2000,
            on_assigned=self._assigned,
            on_revoked=self._revoked,
        )
        # one transactional id per replica: the consumer group's name and the instance id
        transactional_id = f"{group_id}-{instance_id}"
        self.producer = Producer(settings.kafka, transactional_id=transactional_id, linger_ms=5)

    def _assigned(self, tps: list[TopicPartition]) -> None:
        if self._user_assigned is not None:
            self._user_assigned(tps)
        self.ready.set()

    def _revoked(self, tps: list[TopicPartition]) -> None:
        if self._user_revoked is not None:
            self._user_revoked(tps)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def input_topics(self) -> list[str]:
        """What the loop consumes (``self.topics`` and ``self.settings`` are set)."""
        raise NotImplementedError

    def output_topics(self) -> list[str]:
        raise NotImplementedError

    def dead_letter(
        self, topic: str, record: Record, error: Exception, reason: str, city: str, now: int
    ) -> Outgoing:
        """``record`` as a dead letter to ``topic`` (stage :attr:`stage`, ``gc-dlq-city`` when
        ``city`` is known, not ""), its key and value kept."""
        extra = {"city": city} if city else None
        headers = dead_letter_headers(
            record, stage=self.stage, error=error, reason=reason, now_ms=now, extra=extra
        )
        return (topic, record.key, record.value or b"", headers)

    def outputs(self, records: list[Record]) -> list[Outgoing] | None:
        """The batch's outputs; None: not now (the batch is read again, nothing committed)."""
        raise NotImplementedError

    def committed(self) -> None:
        """The batch's transaction committed (apply what :meth:`outputs` prepared)."""

    def aborted(self) -> None:
        """The batch's transaction was aborted (forget what :meth:`outputs` prepared)."""

    def run(self, stop: threading.Event) -> None:
        with self.watchdog.guard("init_transactions"):
            self.producer.init_transactions()
        with self.watchdog.guard("load_metadata"):
            self.producer.load_metadata(self.output_topics())
        try:
            while not stop.is_set():
                self.watchdog.beat(self.name)
                records = self.consumer.poll(100)
                if records:
                    self.process(records)
        finally:
            self.consumer.close()
            self.producer.close()

    def process(self, records: list[Record]) -> bool:
        outputs = self.outputs(records)
        first, following = offset_ranges(records)
        if outputs is None:
            for tp, offset in first.items():
                self.consumer.seek(tp, offset)
            return False
        try:
            with self.watchdog.guard("transaction"):
                self.producer.begin()
                self.producer.send_all(outputs)
                self.producer.send_offsets(following, self.consumer.group_metadata())
                self.producer.commit()
        except GreenChannelError as exc:
            log.warning("%s: transaction failed, aborting and re-reading: %s", self.name, exc)
            self.aborted()
            with self.watchdog.guard("abort_transaction"):
                self.producer.abort()  # a failed abort is fatal
            for tp, offset in first.items():
                self.consumer.seek(tp, offset)
            return False
        self.committed()
        return True
