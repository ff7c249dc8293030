"""The one place that talks to kafka-python.

The rest of the gateway sees a small typed surface: :class:`Record`, :class:`Consumer`
(poll / commit / pause / resume) and :class:`Producer` (send / transactions). Values are always
raw bytes: decoding happens in the processing loop so that a bad record is dead-lettered instead
of being re-fetched forever by a raising deserializer.

Defaults that kafka-python gets wrong for us are overridden here once: no auto-commit,
``earliest`` reset, ``read_committed`` isolation, cooperative-sticky assignment, idempotent
``acks=all`` producer. kafka-python errors are wrapped into :mod:`gateway.errors`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka import errors as kerrors
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as _KTP

from gateway.config import KafkaSettings
from gateway.errors import (
    BrokerRejected,
    ConfigError,
    FatalError,
    GreenChannelError,
    KafkaUnavailable,
)
from gateway.kafka import positions, unpack
from gateway.kafka.append import Outgoing, batch_appender
from gateway.kafka.compat import (
    QuietSelector,
    drop_parked_records,
    end_sender_flush,
    finish_interrupted_joins,
    first_connection_error,
    quick_transaction_retries,
    sender_flushes,
)
from gateway.kafka.partitioner import KeyHashPartitioner
from gateway.kafka.records import Headers, Record, TopicPartition, consumed

_REBALANCING = (
    kerrors.RebalanceInProgressError,
    kerrors.CommitFailedError,
    kerrors.IllegalGenerationError,
    kerrors.UnknownMemberIdError,
)
"""Commit failures a rebalance causes: the next poll() rejoins, then committing works again."""
_RECORD_REJECTIONS = (
    kerrors.MessageSizeTooLargeError,
    kerrors.RecordListTooLargeError,
    kerrors.InvalidRecordError,
    kerrors.InvalidTimestampError,
)
"""Produce failures caused by a record itself (record-attributable: bisect, dead-letter it)."""
_ABORTABLE = (
    *_REBALANCING,
    kerrors.TransactionAbortedError,
    kerrors.UnknownProducerIdError,
    kerrors.OutOfOrderSequenceNumberError,
)
"""Transaction failures that an abort clears (the group rebalanced under the transaction, the
broker lost the producer's state): stage-transient, the batch is re-read. Fencing and
authorisation are not here: they are fatal."""


def offset_ranges(
    records: Iterable[Record],
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Per partition of a batch: the first offset, and the next offset to consume (last + 1)."""
    first: dict[tuple[str, int], int] = {}
    last: dict[tuple[str, int], int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        offset = r.offset
        if offset < first.get(tp, offset + 1):
            first[tp] = offset
        if offset > last.get(tp, -1):
            last[tp] = offset
    return (
        {TopicPartition(*tp): o for tp, o in first.items()},
        {TopicPartition(*tp): o + 1 for tp, o in last.items()},
    )


def client_config(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security settings shared by consumers, producers and admin clients."""
    conf: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        # how long a client waits for a first broker at start: as long as for any request (the
        # admin client's rule), not kafka-python's own 30 s whatever the setting says
        "bootstrap_timeout_ms": settings.request_timeout_ms,
        "selector": QuietSelector,
    }
    missing = settings.missing_files()
    if missing:
        raise ConfigError("; ".join(missing))
    if settings.security_protocol.startswith("SASL_") and settings.sasl_password is None:
        raise ConfigError(
            "kafka.sasl_password is not set (e.g. GREENCHANNEL_KAFKA__SASL_PASSWORD): "
            f"required with kafka.security_protocol {settings.security_protocol}"
        )
    if settings.sasl_mechanism:
        conf["sasl_mechanism"] = settings.sasl_mechanism
        conf["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            conf["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        conf["ssl_check_hostname"] = settings.ssl_check_hostname
        for key, path in (
            ("ssl_cafile", settings.ssl_cafile),
            ("ssl_certfile", settings.ssl_certfile),
            ("ssl_keyfile", settings.ssl_keyfile),
        ):
            if path is not None:
                conf[key] = str(path)
    return conf


def check_connection(settings: KafkaSettings, timeout_s: float = 10.0) -> None:
    """Fail fast, naming the setting, when the broker rejects our TLS or SASL handshake.

    kafka-python itself retries such a failure until its bootstrap timeout and then reports only
    "Unable to bootstrap". PLAINTEXT needs no check; an unreachable broker passes (the clients'
    own retries and timeouts deal with it).
    """
    if settings.security_protocol == "PLAINTEXT":
        return
    timeout_ms = int(min(timeout_s * 1000, settings.request_timeout_ms))
    error = first_connection_error(client_config(settings), timeout_ms)
    if error is not None:
        raise _security_error(settings, error) from error


def _security_error(settings: KafkaSettings, error: BaseException) -> ConfigError:
    where = f"Kafka at {settings.bootstrap_servers} ({settings.security_protocol})"
    text = str(error)
    if isinstance(error, kerrors.SaslAuthenticationFailedError):
        return ConfigError(
            f"{where} rejected the credentials of SASL user {settings.sasl_username!r} "
            f"({settings.sasl_mechanism}): check kafka.sasl_username and kafka.sasl_password"
        )
    if isinstance(error, kerrors.UnsupportedSaslMechanismError):
        return ConfigError(f"{where}: kafka.sasl_mechanism is not enabled there: {text}")
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ConfigError(
            f"{where}: TLS verification of the broker failed ({text}): check kafka.ssl_cafile "
            "(and kafka.ssl_check_hostname for a name mismatch)"
        )
    return ConfigError(
        f"{where}: handshake failed ({type(error).__name__}: {text}): "
        "check kafka.security_protocol and the kafka.ssl_* / kafka.sasl_* settings"
    )


def _wrap(action: str, exc: Exception) -> Exception:
    if isinstance(exc, _RECORD_REJECTIONS):
        return BrokerRejected(f"{action}: {type(exc).__name__}: {exc}")
    if isinstance(exc, _ABORTABLE):
        reason = "rebalance" if isinstance(exc, _REBALANCING) else "transaction_aborted"
        return KafkaUnavailable(f"{action}: {type(exc).__name__}: {exc}", reason=reason)
    if isinstance(exc, kerrors.KafkaError) and getattr(exc, "retriable", False):
        return KafkaUnavailable(f"{action}: {type(exc).__name__}: {exc}")
    if isinstance(exc, kerrors.KafkaTimeoutError | kerrors.KafkaConnectionError):
        return KafkaUnavailable(f"{action}: {type(exc).__name__}: {exc}")
    return FatalError(f"{action}: {type(exc).__name__}: {exc}")


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        on_assigned: Callable[[list[TopicPartition]], None],
        on_revoked: Callable[[list[TopicPartition]], None],
    ) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        self._on_revoked([TopicPartition(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        self._on_assigned([TopicPartition(tp.topic, tp.partition) for tp in assigned])


def _noop(_: list[TopicPartition]) -> None:
    return None


class Consumer:
    """A group consumer of raw bytes with manual commits."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        topics: Sequence[str] = (),
        pattern: str | None = None,
        instance_id: str | None = None,
        read_committed: bool = True,
        max_poll_records: int = 500,
        max_poll_interval_ms: int = 300_000,
        session_timeout_ms: int = 30_000,
        on_assigned: Callable[[list[TopicPartition]], None] = _noop,
        on_revoked: Callable[[list[TopicPartition]], None] = _noop,
        **extra: Any,
    ) -> None:
        conf = client_config(settings) | {
            "group_id": group_id,
            "group_instance_id": instance_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "isolation_level": "read_committed" if read_committed else "read_uncommitted",
            "partition_assignment_strategy": [CooperativeStickyAssignor],
            "max_poll_records": max_poll_records,
            "max_poll_interval_ms": max_poll_interval_ms,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": min(3000, session_timeout_ms // 3),
        }
        conf.update(extra)
        check_connection(settings)
        try:
            self._consumer = KafkaConsumer(**conf)
        except Exception as exc:
            raise _wrap("create consumer", exc) from exc
        finish_interrupted_joins(self._consumer)
        self.fast_unpack = unpack.install(self._consumer)
        self._positions = positions.reader(self._consumer)
        listener = _Listener(on_assigned, on_revoked)
        # Load partition metadata before joining: kafka-python's assignors otherwise may compute
        # the first assignment without it ("No partition metadata for topic") and assign nothing
        # until the next metadata refresh, minutes later.
        for topic in topics:
            try:
                self._consumer.partitions_for_topic(topic)
            except Exception as exc:
                raise _wrap("load metadata", exc) from exc
        if pattern is not None:
            self._consumer.subscribe(pattern=pattern, listener=listener)
        else:
            self._consumer.subscribe(list(topics), listener=listener)

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except Exception as exc:
            raise _wrap("poll", exc) from exc
        out: list[Record] = []
        if self.fast_unpack:  # the fetcher returned our Records already (gateway.kafka.unpack)
            for records in batches.values():
                out.extend(records)
        else:
            for records in batches.values():
                out.extend(consumed(r) for r in records)
        return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit *next* offsets (the last processed offset + 1) for each partition."""
        if not offsets:
            return
        payload = {
            _KTP(tp.topic, tp.partition): OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()
        }
        try:
            self._consumer.commit(payload)
        except _REBALANCING as exc:
            raise KafkaUnavailable(
                f"commit: {type(exc).__name__} (retry after the next poll)", reason="rebalance"
            ) from exc
        except Exception as exc:
            raise _wrap("commit", exc) from exc

    def pause(self, tps: Iterable[TopicPartition]) -> None:
        self._consumer.pause(*[_KTP(t, p) for t, p in tps])

    def resume(self, tps: Iterable[TopicPartition]) -> None:
        ktps = [_KTP(t, p) for t, p in tps]
        self._consumer.resume(*ktps)
        drop_parked_records(self._consumer, ktps)

    def paused(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.paused()}

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(_KTP(tp.topic, tp.partition), offset)

    def position(self, tp: TopicPartition) -> int:
        return int(self._consumer.position(_KTP(tp.topic, tp.partition)))

    def positions_of(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """:meth:`position` of each of ``tps`` (assigned partitions), settled ones read in one
        pass (:mod:`gateway.kafka.positions`), the others asked one by one."""
        if self._positions is None:
            return {tp: self.position(tp) for tp in tps}
        found, rest = self._positions([_KTP(t, p) for t, p in tps])
        out = {TopicPartition(k.topic, k.partition): offset for k, offset in found.items()}
        for k in rest:
            out[TopicPartition(k.topic, k.partition)] = self.position(
                TopicPartition(k.topic, k.partition)
            )
        return out

    def committed(self, tp: TopicPartition) -> int | None:
        value = self._consumer.committed(_KTP(tp.topic, tp.partition))
        return None if value is None else int(value)

    def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        ends = self._consumer.end_offsets([_KTP(t, p) for t, p in tps])
        return {TopicPartition(tp.topic, tp.partition): int(o) for tp, o in ends.items()}

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Records behind the last known high watermark, from local fetch state (no IO)."""
        out: dict[TopicPartition, int] = {}
        for tp, pos in positions.items():
            high = self._consumer.highwater(_KTP(tp.topic, tp.partition))
            if high is not None:
                out[tp] = max(0, int(high) - pos)
        return out

    def lag_by_topic(
        self, positions: dict[TopicPartition, int], next_offsets: Mapping[TopicPartition, int]
    ) -> dict[str, int]:
        """Advance ``positions`` to ``next_offsets`` (see :func:`offset_ranges`), forget
        unassigned partitions, and return the lag per topic (for the scrape-time lag metric)."""
        positions.update(next_offsets)
        assigned = self.assignment()
        for tp in [tp for tp in positions if tp not in assigned]:
            del positions[tp]
        totals: dict[str, int] = {}
        for tp, behind in self.lag(positions).items():
            totals[tp.topic] = totals.get(tp.topic, 0) + behind
        return totals

    def group_metadata(self) -> Any:
        return self._consumer.group_metadata()

    def close(self, timeout_ms: int = 10_000) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            self._consumer.close(autocommit=False, timeout_ms=timeout_ms)


class Producer:
    """An idempotent (optionally transactional) producer of raw bytes."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        compression_type: str | None = None,
        **extra: Any,
    ) -> None:
        conf = client_config(settings) | {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "batch_size": batch_size,
            "compression_type": compression_type,
            "max_request_size": 4 * 1024 * 1024,
            "partitioner": KeyHashPartitioner(),
        }
        if transactional_id:
            conf["transactional_id"] = transactional_id
            conf["transaction_timeout_ms"] = transaction_timeout_ms
            # Batch retries and metadata refreshes back off 10 ms (default 100); the sender's
            # retry of a transactional request is set apart below (quick_transaction_retries).
            conf["retry_backoff_ms"] = 10
        conf.update(extra)
        check_connection(settings)
        try:
            self._producer = KafkaProducer(**conf)
        except Exception as exc:
            raise _wrap("create producer", exc) from exc
        if transactional_id:
            quick_transaction_retries(self._producer)
        self._appender = batch_appender(self._producer)

    @property
    def max_request_size(self) -> int:
        """The largest record (batch) this producer sends; bigger ones fail in ``send()``."""
        return int(self._producer.config["max_request_size"])

    @property
    def fast_path(self) -> bool:
        """Whether :meth:`send_all` uses the batch appender (its self-check passed)."""
        return self._appender is not None

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> Any:
        """Queue one record; returns kafka-python's future (``.get(timeout)`` to wait)."""
        try:
            return self._producer.send(
                topic, value=value, key=key, headers=list(headers or ()), partition=partition
            )
        except Exception as exc:
            raise _wrap("send", exc) from exc

    def send_all(self, records: Iterable[Outgoing]) -> None:
        """Queue ``(topic, key, value, headers)`` records, in order, as :meth:`send` would: same
        partitions, same errors, ~15 µs less CPU per record (see :mod:`gateway.kafka.append`).
        Delivery errors surface where the caller waits: ``flush`` or ``commit``."""

        def send_one(topic: str, value: bytes | None, key: bytes | None, headers: Headers) -> None:
            self.send(topic, value, key=key, headers=headers)

        if self._appender is None:
            for topic, key, value, headers in records:
                send_one(topic, value, key, headers)
            return
        try:
            self._appender.append_all(records, send_one)
        except GreenChannelError:
            raise
        except Exception as exc:
            raise _wrap("send", exc) from exc

    def load_metadata(self, topics: Iterable[str]) -> None:
        """Learn the partitions of ``topics`` now, all at once.

        kafka-python fetches a topic's metadata on the first ``send()`` to it, and fetches for
        one new topic at a time (~100 ms each): a router's first transaction, which touches every
        output topic, would stall for seconds. Concurrent lookups share one metadata request.
        """
        names = sorted(set(topics))
        if not names:
            return
        with ThreadPoolExecutor(len(names), thread_name_prefix="kafka-metadata") as pool:
            futures = [pool.submit(self._producer.partitions_for, name) for name in names]
        for name, future in zip(names, futures, strict=True):
            try:
                future.result()
            except Exception as exc:
                raise _wrap(
                    f"load metadata of {name} (does it exist? see `greenchannel topics init`)", exc
                ) from exc

    def fatal_state(self) -> str | None:
        """Why this producer can send nothing any more, or ``None``.

        kafka-python's idempotent (and transactional) producer moves to a fatal state after a
        non-retriable broker refusal (``MessageSizeTooLarge``, ``InvalidRecord``, an
        authorisation error...): every later send then fails with the same error, which on its
        own looks record-level. Only a new producer (a restart) recovers."""
        manager = getattr(self._producer, "_transaction_manager", None)
        try:
            if manager is None or not manager.has_fatal_error():
                return None
            error = manager.last_error
        except Exception:  # internals changed: do not guess
            return None
        return f"{type(error).__name__}: {error}" if error is not None else "fatal error"

    def send_and_wait(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """Send one record and wait until the broker acknowledged it."""
        future = self.send(topic, value, key=key, headers=headers)
        try:
            future.get(timeout=timeout_s)
        except Exception as exc:
            raise _wrap(f"send to {topic}", exc) from exc

    def send_async(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        on_done: Callable[[Exception | None], None],
    ) -> None:
        """Send one record without waiting: ``on_done(None)`` once the broker acknowledged it,
        ``on_done(error)`` (a wrapped :mod:`gateway.errors` exception) when it failed, exactly
        once. It runs on the producer's I/O thread (keep it short), or on the caller's when
        ``send()`` itself fails. Many records in flight share a produce request."""
        try:
            future = self._producer.send(topic, value=value, key=key, headers=list(headers or ()))
        except Exception as exc:
            on_done(_wrap(f"send to {topic}", exc))
            return

        def failed(exc: Exception) -> None:
            on_done(_wrap(f"send to {topic}", exc))

        future.add_callback(lambda _: on_done(None))
        future.add_errback(failed)

    def flush(self, timeout_s: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except Exception as exc:
            raise _wrap("flush", exc) from exc

    # Transactions. These calls can block without a timeout in kafka-python: callers guard
    # them with gateway.ops.watchdog.
    def init_transactions(self) -> None:
        try:
            self._producer.init_transactions()
        except Exception as exc:
            raise _wrap("init_transactions", exc) from exc

    def begin(self) -> None:
        try:
            self._producer.begin_transaction()
        except Exception as exc:
            raise _wrap("begin_transaction", exc) from exc

    def send_offsets(self, offsets: Mapping[TopicPartition, int], group_metadata: Any) -> None:
        payload = {
            _KTP(tp.topic, tp.partition): OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()
        }
        try:
            self._producer.send_offsets_to_transaction(payload, group_metadata)
        except Exception as exc:
            raise _wrap("send_offsets_to_transaction", exc) from exc

    def commit(self) -> None:
        flushes = sender_flushes(self._producer)
        try:
            self._producer.commit_transaction()
        except Exception as exc:
            raise _wrap("commit_transaction", exc) from exc
        finally:
            end_sender_flush(self._producer, flushes)

    def abort(self) -> None:
        """Abort the open transaction. A producer that cannot abort is in an unknown
        transactional state, whatever the cause: :class:`FatalError` (``cannot abort
        transaction``)."""
        flushes = sender_flushes(self._producer)
        try:
            self._producer.abort_transaction()
        except Exception as exc:
            raise FatalError(
                f"cannot abort transaction: {_wrap('abort_transaction', exc)}"
            ) from exc
        finally:
            end_sender_flush(self._producer, flushes)

    def close(self, timeout_s: float = 10.0) -> None:
        with contextlib.suppress(Exception):  # closing is best effort
            self._producer.close(timeout=timeout_s)


__all__ = [
    "Consumer",
    "Headers",
    "Producer",
    "Record",
    "TopicPartition",
    "check_connection",
    "client_config",
    "offset_ranges",
]
