"""Which offsets may be committed while escalations finish out of order.

Workers finish records in any order (different cities, different keys); a partition's commit
point is the lowest offset still in flight, or, when nothing is in flight, the consumer's
*position* (the next offset it will return). On a transactional topic the position is past the
commit markers and aborted batches that follow the last record: committing ``last + 1``
instead would leave every marker as lag 1 forever (``kafka-consumer-groups``, Burrow, KEDA and
the gateway's own lag metric would all see it). Without a known position, ``last + 1``.
Committing ``offset + 1`` of a record that is not final never happens.
"""

from __future__ import annotations

import heapq

from gateway.kafka.clients import TopicPartition


class PartitionOffsets:
    def __init__(self) -> None:
        self._pending: list[int] = []
        self._done: set[int] = set()
        self._high = -1
        self._position = -1

    def add(self, offset: int) -> None:
        heapq.heappush(self._pending, offset)
        self._high = max(self._high, offset)

    def position(self, offset: int) -> None:
        """The consumer's position after a poll: every offset below it was returned or skipped
        (a transaction marker, an aborted record)."""
        self._position = max(self._position, offset)

    def done(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            self._done.discard(heapq.heappop(self._pending))

    def commit_point(self) -> int | None:
        """Next offset to commit, or None when nothing was seen."""
        if self._pending:
            return self._pending[0]
        point = max(self._high + 1, self._position)
        return point if point > 0 else None

    def held_by(self) -> int | None:
        """The unfinished offset holding the commit point while later records are final."""
        return self._pending[0] if self._done else None


class OffsetTracker:
    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, PartitionOffsets] = {}
        self._committed: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, offset: int) -> None:
        self._of(tp).add(offset)

    def position(self, tp: TopicPartition, offset: int) -> None:
        """Record the consumer's position of ``tp`` (read after the records it returned were
        added)."""
        self._of(tp).position(offset)

    def _of(self, tp: TopicPartition) -> PartitionOffsets:
        part = self.partitions.get(tp)
        if part is None:  # not setdefault: that built a PartitionOffsets for every record
            part = self.partitions[tp] = PartitionOffsets()
        return part

    def done(self, tp: TopicPartition, offset: int) -> None:
        part = self.partitions.get(tp)
        if part is not None:
            part.done(offset)

    def forget(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.partitions.pop(tp, None)
            self._committed.pop(tp, None)

    def to_commit(self) -> dict[TopicPartition, int]:
        """Commit points that moved since the last call to ``committed``."""
        out = {}
        for tp, part in self.partitions.items():
            point = part.commit_point()
            if point is not None and point != self._committed.get(tp):
                out[tp] = point
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)
