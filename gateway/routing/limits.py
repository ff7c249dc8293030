"""What the broker will refuse, known before a record enters a transaction.

The broker refuses a record batch larger than the topic's effective ``max.message.bytes`` (the
topic's setting, or the broker's ``message.max.bytes``); the producer refuses a record larger
than its ``max_request_size``. One refused record fails the whole transaction, and re-reading
the batch fails it again (issue 9, finding 1). :class:`TopicLimits` holds the limit per output
topic (read at start through the admin client, re-read every ``refresh_s`` and after a refusal)
and :func:`wire_size` estimates, from lengths the router already has, what one record costs on
the wire as a batch of its own (an upper bound: varints at their widest).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from gateway.errors import GreenChannelError

log = logging.getLogger(__name__)

BATCH_OVERHEAD = 61 + 36
"""Record batch header (61 bytes) plus one record's own fields at their widest varints."""
DEFAULT_LIMIT = 1_048_588
"""Kafka's default ``message.max.bytes``, used until the real limits are known."""
SLACK = 8192
"""Room for what the router adds to a record: its own headers, a dead letter's ``gc-dlq-*``
headers, an escalation's extra fields. A record this far below every limit needs no exact check."""


def _varint(n: int) -> int:
    """Bytes of a length as Kafka writes it (a zig-zag varint: ``2n`` in 7-bit groups)."""
    z = n << 1
    return 1 if z < 0x80 else 2 if z < 0x4000 else 3 if z < 0x200000 else 4 if z < 0x10000000 else 5


def header_bytes(headers: Iterable[tuple[str, bytes]]) -> int:
    """Bytes ``headers`` take in a record (UTF-8 names, values, their length varints)."""
    total = 0
    for name, value in headers:
        n = len(name.encode("utf-8"))
        v = len(value)
        total += n + v + _varint(n) + _varint(v)
    return total


def header_bound(headers: Iterable[tuple[str, bytes]]) -> int:
    """A cheap upper bound of :func:`header_bytes` (no encoding: a name's UTF-8 is at most four
    bytes per character; two length varints at most ten bytes)."""
    total = 0
    for name, value in headers:  # a loop, not sum() over a generator: once per routed record
        total += len(name) * 4 + len(value) + 10
    return total


def wire_size(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """Upper bound of one record's size as a record batch of its own."""
    return (
        BATCH_OVERHEAD
        + (len(key) if key else 0)
        + (len(value) if value else 0)
        + header_bytes(headers)
    )


class TopicLimits:
    """Effective size limit per topic: ``min(max.message.bytes, producer max_request_size)``.

    ``fetch(topics)`` returns ``{topic: max.message.bytes}`` (admin describe-configs); a failed
    fetch keeps the limits known so far (a warning, retried at the next refresh).
    """

    def __init__(
        self,
        topics: Iterable[str],
        fetch: Callable[[list[str]], Mapping[str, int]] | None,
        *,
        max_request_size: int,
        refresh_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = sorted(set(topics))
        self._fetch = fetch
        self._cap = max_request_size
        self._refresh_s = refresh_s
        self._clock = clock
        self._limits = dict.fromkeys(self.topics, min(DEFAULT_LIMIT, max_request_size))
        self._next = 0.0
        self.smallest = min(self._limits.values(), default=max_request_size)
        self.fast_below = self.smallest - SLACK
        """A record of input size (key + value + headers) below this needs no exact check."""

    def limit(self, topic: str) -> int:
        return self._limits.get(topic, self.smallest)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the limits when due (or ``force``); returns whether they changed."""
        now = self._clock()
        if self._fetch is None or (not force and now < self._next):
            return False
        self._next = now + self._refresh_s
        try:
            fetched = self._fetch(self.topics)
        except GreenChannelError as exc:
            log.warning("router: cannot read the topics' max.message.bytes (%s); keeping", exc)
            return False
        new = dict(self._limits)
        for topic, value in fetched.items():
            if topic in new:
                new[topic] = min(int(value), self._cap)
        changed = new != self._limits
        if changed:
            log.info("router: output topic size limits: smallest %d bytes", min(new.values()))
        self._limits = new
        self.smallest = min(new.values(), default=self._cap)
        self.fast_below = self.smallest - SLACK
        return changed

    def snapshot(self) -> dict[str, int]:
        return dict(self._limits)


__all__ = ["SLACK", "TopicLimits", "header_bound", "header_bytes", "wire_size"]
