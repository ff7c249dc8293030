"""Dead letters: read a dead-letter topic, filter it, replay records to where they came from.

Reading. :func:`scan` reads a dead-letter topic from the beginning up to the end offsets captured
when it starts (so it terminates while the topic keeps growing), ``read_committed``, in a
throwaway consumer group that commits nothing. Each record becomes a typed :class:`DeadLetter`
decoded from its ``gc-dlq-*`` headers (the contract is :mod:`gateway.deadletters.headers`).

========================  ===========================  ==========================================
stage                     dead-letter topic            replayed to (``gc-dlq-source-topic``)
========================  ===========================  ==========================================
``complaints`` (router)   ``{p}dlq.complaints.v1``     ``{p}complaints.v1``
``escalations`` (deliver) ``{p}dlq.escalations.v1``    ``{p}escalations.<city>.v1``
========================  ===========================  ==========================================

Replaying. :func:`plan` decides, per selected dead letter, to replay it or to skip it:

``loop_guard``         its ``gc-replay-count`` is already ``max_replays`` or more
``superseded``         a later dead letter of the same original record exists (it was replayed
                       and failed again): only the latest one is replayed
``unexpected_source``  ``gc-dlq-source-topic`` is not a topic of this stage
``unknown_city``       the escalation's city has no ``cities.<name>`` block
``truncated``          a bounded dead letter (``gc-dlq-truncated``): it holds only a prefix of
                       the value, replaying it would publish a broken record; find the
                       original upstream by ``gc-dlq-value-sha256``
``empty``              no value: nothing to replay

:func:`replay` republishes the original key, value and headers (minus ``gc-dlq-*``) with
``gc-replay-count`` incremented (the deliverer and the router keep that header when they
dead-letter the record again, so repeated failures count up to the guard), paced by a token
bucket at the city's configured rate and burst. It is safe to repeat: the escalation id is the
bureau's idempotency key, so a bureau that already accepted an escalation answers with the same
case number.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from gateway.config import KafkaSettings
from gateway.deadletters.headers import PREFIX, REPLAY_COUNT, headers_dict, iso, replay_count
from gateway.errors import ConfigError, GreenChannelError, KafkaUnavailable
from gateway.kafka.admin import Admin
from gateway.kafka.clients import Consumer, Headers, Record, TopicPartition
from gateway.pii import mask_text
from gateway.policies.ratelimit import TokenBucket
from gateway.topics import Topics

Stage = Literal["complaints", "escalations"]
STAGES: tuple[Stage, ...] = ("complaints", "escalations")
DEFAULT_MAX_REPLAYS = 3

_RELATIVE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_PII_FIELDS = ("name", "phone", "id_number", "address", "email")
TRUNCATED = PREFIX + "truncated"
"""Set (``true``) on a dead letter cut to fit its topic: only a prefix of the value is kept."""


def dlq_topic(topics: Topics, stage: Stage) -> str:
    return topics.dlq_complaints if stage == "complaints" else topics.dlq_escalations


# --- time ----------------------------------------------------------------------------------------


def parse_when(text: str, now_ms: int) -> int:
    """Epoch ms of an ISO 8601 time (naive = UTC) or of a relative age (``90s``, ``15m``,
    ``2h``, ``1h30m``, ``7d``, ``1w``: that long before ``now_ms``). Raises ``ValueError``."""
    if _RELATIVE.fullmatch(text.strip()):
        seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _PART.findall(text))
        return now_ms - int(seconds * 1000)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 time nor a relative age like 2h or 7d"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _iso_ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


# --- dead letters --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-letter record: where it sits in the DLQ, the original bytes, decoded context."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    stage: str
    """``router`` or ``delivery`` (``gc-dlq-stage``)."""
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    city: str
    """Delivery only; empty for the router's dead letters."""
    reason: str
    error_class: str
    message: str
    time_ms: int
    """When it was dead-lettered (``gc-dlq-time``; the record timestamp when absent)."""
    http_status: int | None
    response: str
    attempts: int
    first_attempt_ms: int | None
    last_attempt_ms: int | None
    replay_count: int

    @property
    def position(self) -> str:
        """``partition:offset`` in the dead-letter topic (what ``dlq show`` takes)."""
        return f"{self.partition}:{self.offset}"

    @classmethod
    def from_record(cls, record: Record) -> DeadLetter:
        h = headers_dict(record.headers)

        def get(name: str) -> str:
            return h.get(PREFIX + name, "")

        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value or b"",
            headers=tuple(record.headers),
            stage=get("stage"),
            source_topic=get("source-topic"),
            source_partition=_int(get("source-partition") or None),
            source_offset=_int(get("source-offset") or None),
            city=get("city"),
            reason=get("reason"),
            error_class=get("error-class"),
            message=get("message"),
            time_ms=_iso_ms(get("time")) or record.timestamp_ms,
            http_status=_int(get("http-status") or None),
            response=get("response"),
            attempts=_int(get("attempts") or None) or 0,
            first_attempt_ms=_iso_ms(get("first-attempt")),
            last_attempt_ms=_iso_ms(get("last-attempt")),
            replay_count=replay_count(record.headers),
        )

    def original_identity(self) -> tuple[str, bytes, bytes]:
        """Same for every dead letter of one original record (replays keep its bytes)."""
        return self.source_topic, self.key or b"", hashlib.sha256(self.value).digest()

    def row(self) -> dict[str, Any]:
        """A JSON-able summary with personal data masked (for ``dlq list``)."""
        return {
            "dlq": self.position,
            "time": iso(self.time_ms, precision="s"),
            "stage": self.stage,
            "city": self.city,
            "reason": self.reason,
            "error_class": self.error_class,
            "http_status": self.http_status,
            "attempts": self.attempts,
            "replay_count": self.replay_count,
            "source": f"{self.source_topic}:{self.source_partition}:{self.source_offset}",
            "key": masked_key(self.key),
        }


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters to select; an empty field selects everything. ``since`` is
    inclusive, ``until`` exclusive (both compared with the dead-letter time)."""

    cities: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    source_topic: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.cities or letter.city in self.cities)
            and (not self.reasons or letter.reason in self.reasons)
            and (self.since_ms is None or letter.time_ms >= self.since_ms)
            and (self.until_ms is None or letter.time_ms < self.until_ms)
            and (self.source_topic is None or letter.source_topic == self.source_topic)
        )


# --- personal data -------------------------------------------------------------------------------


def masked_key(key: bytes | None) -> str:
    return "" if key is None else mask_text(key.decode("utf-8", "replace"))


def known_pii(record: Mapping[str, Any]) -> list[str | None]:
    """The consumer's personal values in a decoded complaint or escalation."""
    consumer = record.get("consumer")
    if not isinstance(consumer, Mapping):
        return []
    return [v for k in _PII_FIELDS if isinstance(v := consumer.get(k), str)]


def mask_record(value: Any, known: Iterable[str | None]) -> Any:
    """A copy of a decoded record with every string masked (patterns and known values)."""
    known = list(known)
    if isinstance(value, str):
        return mask_text(value, known)
    if isinstance(value, Mapping):
        return {k: mask_record(v, known) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_record(v, known) for v in value]
    return value


# --- reading -------------------------------------------------------------------------------------


def scan(settings: KafkaSettings, topic: str, *, timeout_s: float = 60.0) -> list[DeadLetter]:
    """Every dead letter in ``topic`` up to the end offsets captured at start."""
    with Admin(settings) as admin:
        if topic not in admin.list_topics():
            raise ConfigError(f"topic {topic} does not exist (run `greenchannel topics init`)")
    consumer = Consumer(
        settings,
        group_id=f"greenchannel-dlq-{uuid.uuid4().hex[:12]}",
        topics=[topic],
        read_committed=True,
        max_poll_records=2000,
    )
    try:
        deadline = time.monotonic() + timeout_s
        return [DeadLetter.from_record(r) for r in _read_to_end(consumer, topic, deadline)]
    finally:
        consumer.close()


def _read_to_end(consumer: Consumer, topic: str, deadline: float) -> Iterator[Record]:
    ends: dict[TopicPartition, int] | None = None
    while True:
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"reading {topic}: did not reach the end offsets in time")
        batch = consumer.poll(200)
        if ends is None:
            assigned = consumer.assignment()
            if not assigned:
                continue
            ends = consumer.end_offsets(assigned)
        yield from (r for r in batch if r.offset < ends.get(r.tp, 0))
        if all(consumer.position(tp) >= end for tp, end in ends.items()):
            return


# --- deciding ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    letter: DeadLetter
    target: str
    """Topic to replay to; empty when skipped."""
    city: str
    """Whose rate limit paces the replay; empty for complaints."""
    skip: str = ""
    """Why it is not replayed (``loop_guard``, ``superseded``…); empty to replay it."""

    @property
    def replay(self) -> bool:
        return not self.skip


def decide(
    letter: DeadLetter,
    *,
    stage: Stage,
    topics: Topics,
    cities: Collection[str],
    max_replays: int = DEFAULT_MAX_REPLAYS,
) -> Decision:
    """Replay one dead letter, and where to, or why not (loop guard first)."""
    if letter.replay_count >= max_replays:
        return Decision(letter, "", letter.city, "loop_guard")
    if is_truncated(letter.headers):
        return Decision(letter, "", letter.city, "truncated")
    if not letter.value:
        return Decision(letter, "", letter.city, "empty")
    if stage == "complaints":
        if letter.source_topic != topics.complaints:
            return Decision(letter, "", letter.city, "unexpected_source")
        return Decision(letter, topics.complaints, "")
    return _escalation(letter, topics, cities)


def is_truncated(headers: Headers) -> bool:
    """Whether a dead letter holds only a prefix of the original value (never replayable)."""
    return any(k == TRUNCATED and v.strip().lower() != b"false" for k, v in headers)


def _escalation(letter: DeadLetter, topics: Topics, cities: Collection[str]) -> Decision:
    try:
        city = topics.city_of(letter.source_topic)
    except ValueError:
        return Decision(letter, "", letter.city, "unexpected_source")
    if city not in cities:
        return Decision(letter, "", city, "unknown_city")
    return Decision(letter, letter.source_topic, city)


def latest_positions(letters: Iterable[DeadLetter]) -> set[tuple[int, int]]:
    """(partition, offset) of the latest dead letter of each original record: highest replay
    count, then latest dead-letter time, then highest position."""
    latest: dict[tuple[str, bytes, bytes], DeadLetter] = {}
    for letter in letters:
        ident = letter.original_identity()
        seen = latest.get(ident)
        if seen is None or _order(letter) > _order(seen):
            latest[ident] = letter
    return {(x.partition, x.offset) for x in latest.values()}


def _order(letter: DeadLetter) -> tuple[int, int, int, int]:
    return letter.replay_count, letter.time_ms, letter.partition, letter.offset


def plan(
    letters: list[DeadLetter],
    selected: Filter,
    *,
    stage: Stage,
    topics: Topics,
    cities: Collection[str],
    max_replays: int = DEFAULT_MAX_REPLAYS,
) -> list[Decision]:
    """A decision for every selected dead letter; ``letters`` is the whole topic, so a later
    dead letter of the same record supersedes an earlier one even when it is not selected."""
    latest = latest_positions(letters)
    out: list[Decision] = []
    for letter in letters:
        if not selected.matches(letter):
            continue
        if (letter.partition, letter.offset) not in latest:
            out.append(Decision(letter, "", letter.city, "superseded"))
            continue
        out.append(
            decide(letter, stage=stage, topics=topics, cities=cities, max_replays=max_replays)
        )
    return out


# --- replaying -----------------------------------------------------------------------------------


class Sender(Protocol):
    """What :func:`replay` needs from a producer (:class:`gateway.kafka.clients.Producer` fits)."""

    def send_and_wait(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        timeout_s: float = 60.0,
    ) -> None: ...


def replay_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original headers (no ``gc-dlq-*``) with ``gc-replay-count`` incremented."""
    kept = [(k, v) for k, v in letter.headers if not k.startswith(PREFIX) and k != REPLAY_COUNT]
    return [*kept, (REPLAY_COUNT, str(letter.replay_count + 1).encode())]


@dataclass
class ReplayReport:
    dry_run: bool
    replayed: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(city, reason) -> records replayed (or that would be, in a dry run)."""
    skipped: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


Progress = Callable[[Decision, str], None]
"""Called per decision with ``replayed``, ``would replay``, ``skipped`` or ``failed: …``."""


def _quiet(decision: Decision, status: str) -> None:
    return None


def replay(
    decisions: Iterable[Decision],
    sender: Sender,
    *,
    limits: Mapping[str, tuple[float, int]],
    dry_run: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Progress = _quiet,
    timeout_s: float = 30.0,
) -> ReplayReport:
    """Republish the decisions to replay, each city paced by ``limits[city]`` (rate, burst).

    A broker that stops answering (:class:`KafkaUnavailable`) fails the rest of the run; any
    other send error fails that record only.
    """
    report = ReplayReport(dry_run)
    buckets: dict[str, TokenBucket] = {}
    broken: str | None = None
    for d in decisions:
        if not d.replay:
            report.skipped[d.skip] += 1
            progress(d, "skipped")
            continue
        if dry_run:
            report.replayed[(d.city, d.letter.reason)] += 1
            progress(d, "would replay")
            continue
        if broken is None:
            _pace(buckets, limits, d.city, clock, sleep)
            broken = _send(d, sender, report, progress, timeout_s)
        else:
            report.failed.append((d.letter, broken))
            progress(d, f"failed: {broken}")
    return report


def _send(
    d: Decision, sender: Sender, report: ReplayReport, progress: Progress, timeout_s: float
) -> str | None:
    """Send one replay; the error text when the broker is unavailable (stop), else None."""
    try:
        sender.send_and_wait(
            d.target,
            d.letter.value,
            key=d.letter.key,
            headers=replay_headers(d.letter),
            timeout_s=timeout_s,
        )
    except GreenChannelError as exc:
        report.failed.append((d.letter, str(exc)))
        progress(d, f"failed: {exc}")
        if isinstance(exc, KafkaUnavailable):
            return f"not sent after an earlier failure: {exc}"
        return None
    report.replayed[(d.city, d.letter.reason)] += 1
    progress(d, "replayed")
    return None


def _pace(
    buckets: dict[str, TokenBucket],
    limits: Mapping[str, tuple[float, int]],
    city: str,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    """Wait for a token from the city's bucket (no limit, no wait)."""
    if city not in limits:
        return
    bucket = buckets.get(city)
    if bucket is None:
        rate, burst = limits[city]
        bucket = buckets[city] = TokenBucket(rate, burst, clock)
    while (wait := bucket.reserve()) > 0:
        sleep(wait)
