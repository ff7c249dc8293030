"""Workarounds for kafka-python 3.0.12 bugs, used only by :mod:`gateway.kafka.clients` and :mod:`gateway.kafka.admin`.

* :func:`finish_interrupted_joins`: a consumer whose ``poll()`` timeout ends between JoinGroup
  and SyncGroup of a metadata-triggered rebalance stays REBALANCING for good (every commit fails
  with RebalanceInProgressError until restart).
* :func:`install_eof_fix` (applied on import, for 3.0.12 only): bytes read together with the
  peer's close are dropped, so a broker's last answer before it hangs up, such as SaslAuthenticate
  "invalid credentials", is lost and the client sees only "socket disconnected".
* :func:`install_frame_read` (applied on import, after a self-check): a response's fields are
  read from its receive buffer with ``bytes(buffer[a:b])``, which copies every field twice; a
  partition's fetched records (up to 1 MiB each) became a fresh bytearray, then bytes.
* :func:`first_connection_error`: kafka-python retries a failed SASL or TLS handshake until its
  bootstrap timeout and then reports only "Unable to bootstrap"; one direct connection attempt
  tells why.
* :func:`drop_parked_records`: records fetched for a paused partition are parked and, after
  ``resume()``, may never be returned nor fetched again (the partition stalls for good).
* :func:`sender_flushes` / :func:`end_sender_flush`: the producer's sender begins a flush to
  complete a transaction and never ends it, so after the first commit linger is ignored and a
  transaction over many partitions goes out as many small batches.
* :func:`quick_transaction_retries`: the sender thread sleeps ``retry_backoff_ms`` before every
  retried transactional request. The first request of a transaction that follows a commit
  almost always gets CONCURRENT_TRANSACTIONS (the coordinator is still writing the previous
  commit's markers, 1-3 ms here), so each transaction paid the whole backoff.

* :class:`QuietSelector`: kafka-python asks its selector for a socket's key before every
  registration and takes the ``KeyError`` of an unregistered socket as "register it"; the
  standard selector builds that error's message with ``repr(socket)`` twice (system calls for
  the addresses): ~12 µs per registration, ~1 % of the router's CPU. Given as kafka-python's
  documented ``selector`` option.

Each reaches into kafka-python internals; they are version-guarded or fail safe (do nothing).
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
from typing import Any

from kafka.coordinator.base import MemberState
from kafka.net import transport as _transport
from kafka.net.compat import KafkaNetClient
from kafka.protocol.frame import KafkaBytes
from kafka.version import __version__ as KAFKA_PYTHON_VERSION

log = logging.getLogger(__name__)
_EOF_FIX_VERSIONS = ("3.0.12",)


class QuietSelector(selectors.DefaultSelector):
    """The default selector, with a ``get_key`` that raises a bare ``KeyError`` for an
    unregistered file object (0.8 µs instead of ~12 µs)."""

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        impl: Any = self  # the standard library's _BaseSelectorImpl fields
        try:
            key = impl._fd_to_key.get(impl._fileobj_lookup(fileobj))
        except AttributeError:  # not the standard library's selector base: its own get_key
            return super().get_key(fileobj)
        if key is None:
            if self.get_map() is None:
                raise RuntimeError("Selector is closed")
            raise KeyError(fileobj)
        return key  # type: ignore[no-any-return]


def finish_interrupted_joins(consumer: Any) -> None:
    """Make an unfinished group join count as a reason to rejoin.

    A rebalance caused by a metadata change (the subscribed topics' partitions becoming known
    after the first join, partitions added later) is flagged only by the coordinator's metadata
    snapshot, and the leader's own assignment clears it while JoinGroup/SyncGroup are still in
    flight. When ``poll()``'s timeout ends inside that window, later polls see nothing to rejoin
    and never complete the join: the member keeps fetching its old assignment, but commits fail
    with RebalanceInProgressError until the process restarts. With this, the next poll joins.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "need_rejoin"):
        return
    need_rejoin = coordinator.need_rejoin

    def need_rejoin_or_unfinished() -> bool:
        return bool(need_rejoin()) or getattr(coordinator, "state", None) is MemberState.REBALANCING

    coordinator.need_rejoin = need_rejoin_or_unfinished


def drop_parked_records(consumer: Any, partitions: list[Any]) -> None:
    """Forget records parked for ``partitions`` (call right after ``resume()``).

    kafka-python 3.0.12 parks records fetched for a paused partition (KAFKA-7548) but only
    restores them while no other partition's records are in line ("is None" on an exhausted,
    non-None batch), and never re-fetches a partition with parked records. Parked records were
    never returned, so the position is unchanged: dropping them makes the fetcher read them
    again.
    """
    parked = getattr(getattr(consumer, "_fetcher", None), "_paused_partition_records", None)
    if isinstance(parked, dict):
        for tp in partitions:
            parked.pop(tp, None)


TRANSACTION_RETRY_BACKOFF_MS = 2
"""The sender's wait before it sends a retried transactional request again (see
:func:`quick_transaction_retries`)."""


def quick_transaction_retries(
    producer: Any, backoff_ms: float = TRANSACTION_RETRY_BACKOFF_MS
) -> bool:
    """Make the producer's sender retry transactional requests after ``backoff_ms``; True when
    set.

    kafka-python 3.0.12's sender sleeps its own ``retry_backoff_ms`` before it resends a retried
    transactional request (AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn), and
    ignores the 20 ms its transaction manager asks for after CONCURRENT_TRANSACTIONS. A
    transaction begun right after a commit is refused that way until the coordinator has written
    the previous commit's markers, so every back-to-back transaction waited the whole backoff:
    a 15-record transaction took 24 ms (median, local broker) at 10 ms, 11-12 ms at 2 ms, and
    ~9.5 ms when it met no conflict.

    The sender's copy of the setting is used for nothing but its transactional path (the retry
    sleep and the poll timeout while such a request is in flight or the producer cannot send);
    batch retries and metadata refreshes keep the producer's own ``retry_backoff_ms``.
    """
    config = getattr(getattr(producer, "_sender", None), "config", None)
    if not isinstance(config, dict) or not isinstance(config.get("retry_backoff_ms"), int | float):
        return False
    config["retry_backoff_ms"] = backoff_ms
    return True


def _flush_counter(producer: Any) -> Any:
    return getattr(getattr(producer, "_accumulator", None), "_flushes_in_progress", None)


def sender_flushes(producer: Any) -> int:
    """Flushes of the producer's record accumulator in progress (0 if unknown)."""
    counter = _flush_counter(producer)
    return int(counter.get()) if counter is not None else 0


def end_sender_flush(producer: Any, before: int) -> None:
    """After ``commit_transaction``/``abort_transaction`` returned, end the flush the sender
    began for it (``before``: :func:`sender_flushes` taken before the call). Should the sender
    still need a flush, it begins it again."""
    counter = _flush_counter(producer)
    if counter is not None and counter.get() > before:
        counter.decrement()


async def _read_from_sock(self: Any) -> None:
    """``KafkaTCPTransport._read_from_sock`` of 3.0.12, delivering data before a close."""
    while self._read and not self._closed:
        await self._net.wait_read(self._sock)
        received, err = self._sock_recv()
        if received:
            self.last_read = _transport.time.monotonic()
            if self._protocol and self._protocol._sensors:
                self._protocol._sensors.bytes_received.record(len(received))
            try:
                self._protocol.data_received(received)
            except _transport.Errors.KafkaProtocolError as e:
                self.abort(error=e)
                return
        if err:
            if received:  # let the protocol act on the answer first (it may abort with the cause)
                await self._net.sleep(0)
            if not self._closed:
                self.abort(error=err)
            return


def install_eof_fix() -> bool:
    """Patch the transport read loop (3.0.12 only); True when installed."""
    if KAFKA_PYTHON_VERSION not in _EOF_FIX_VERSIONS:
        return False
    cls = _transport.KafkaTCPTransport
    if getattr(cls._read_from_sock, "__name__", "") != "_read_from_sock":
        return False
    cls._read_from_sock = _read_from_sock
    return True


def first_connection_error(config: dict[str, Any], timeout_ms: int) -> BaseException | None:
    """Connect once to each bootstrap server (TLS and SASL included) until one answers.

    Returns the error of the first server that completed or refused the handshake, or None
    when one connected fine or none could be reached (not reachable is not this check's job).
    The TLS handshake is checked with :mod:`ssl` directly, on kafka-python's own SSL context:
    kafka-python leaks the socket of a failed handshake.
    """
    client = KafkaNetClient(**config)
    try:
        for broker in client.cluster.bootstrap_brokers():
            error: BaseException | None = None
            if config.get("security_protocol") in ("SSL", "SASL_SSL"):
                error = _tls_error(config, broker.host, broker.port, timeout_ms / 1000)
            if error is None:
                error = _attempt(client, broker.node_id, timeout_ms)
            if error is None or not _unreachable(error):
                return error
        return None
    except Exception as exc:  # internals changed: skip the diagnosis, never break the client
        log.debug("connection check skipped: %s", exc)
        return None
    finally:
        client.close()


def _tls_error(config: dict[str, Any], host: str, port: int, timeout_s: float) -> Exception | None:
    """The TLS handshake's failure (as kafka-python words it), a connect error, or None."""
    keys = _transport.KafkaSSLTransport.DEFAULT_CONFIG
    context = _transport.KafkaSSLTransport._build_ssl_context(
        {key: config.get(key, default) for key, default in keys.items()}
    )
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            try:
                with context.wrap_socket(raw, server_hostname=host.rstrip(".")):
                    return None
            except ssl.SSLError as exc:
                failed: Exception = _transport.Errors.KafkaConnectionError(
                    f"Handshake failed: {exc}"
                )
                return failed
    except OSError as exc:
        return exc


def _attempt(client: Any, node_id: str, timeout_ms: int) -> BaseException | None:
    client.maybe_connect(node_id)
    conn = client._manager._conns.get(node_id)
    if conn is None:
        return ConnectionError(f"no connection to {node_id}")
    client._net.poll(timeout_ms=timeout_ms, future=conn.init_future)
    if not conn.init_future.is_done:
        return TimeoutError(f"no answer from {node_id} within {timeout_ms} ms")
    error = conn.init_future.exception
    return error if isinstance(error, BaseException) else None


def _unreachable(error: BaseException) -> bool:
    text = str(error)
    if "Handshake failed" in text:
        return False
    if isinstance(error, OSError) and not isinstance(error, ssl.SSLError):
        return True  # refused, reset, timed out, no route: the broker is not there (yet)
    return any(marker in text for marker in ("ECONNREFUSED", "socket disconnected", "timed out"))


def _frame_read(self: Any, nbytes: int | None = None) -> bytes:
    """``KafkaBytes.read`` of 3.0.12 with one copy: the same bytes and position, read through a
    memoryview (a 1 MiB field: ~58 instead of ~730 µs; a small one: unchanged)."""
    start = self._idx
    end = len(self) if nbytes is None else start + nbytes
    end = min(end, len(self))
    self._idx = end
    return bytes(memoryview(self)[start:end])


KAFKA_FRAME_READ = KafkaBytes.read
"""kafka-python's own ``KafkaBytes.read`` (as imported, before :func:`install_frame_read`)."""


def _reads(read: Any) -> list[tuple[bytes, int]]:
    """What ``read`` returns and where it leaves the position, on a few probe buffers."""
    out: list[tuple[bytes, int]] = []
    for size, start, nbytes in (
        (0, 0, None),
        (10, 0, 4),
        (10, 8, 4),
        (10, 3, None),
        (10, 5, 0),
        (10, 5, -1),
        (4096, 100, 3000),
    ):
        buffer = KafkaBytes(size)
        buffer[:] = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        buffer.seek(start)
        value = read(buffer) if nbytes is None else read(buffer, nbytes)
        out.append((value, buffer.tell()))
    return out


def install_frame_read() -> bool:
    """Read response fields with one copy; True when installed. Installed only when kafka-python's
    ``KafkaBytes.read`` is the one this replaces (same answers and positions on probe buffers)."""
    original = KafkaBytes.read
    if original is _frame_read:
        return True
    try:
        same = _reads(original) == _reads(_frame_read)
    except Exception:  # internals changed: keep kafka-python's own
        return False
    if not same:
        return False
    KafkaBytes.read = _frame_read
    return True


install_eof_fix()
install_frame_read()
