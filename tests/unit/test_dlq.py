"""Dead-letter tooling, offline: header parsing, time parsing, filters, replay decisions
(loop guard, superseded records), replay headers and pacing."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from gateway.deadletters.headers import dead_letter_headers, iso
from gateway.deadletters.replay import (
    DeadLetter,
    Decision,
    Filter,
    Stage,
    decide,
    known_pii,
    mask_record,
    masked_key,
    parse_when,
    plan,
    replay,
    replay_headers,
)
from gateway.errors import FatalError, KafkaUnavailable, RejectedByBureau
from gateway.kafka.clients import Headers, Record
from gateway.topics import Topics

pytestmark = pytest.mark.unit

T = Topics("gc.")
CITIES = {"hangzhou", "wuhu"}
NOW_MS = int(datetime(2025, 3, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
HOUR_MS = 3_600_000


def source(
    topic: str = "gc.escalations.hangzhou.v1",
    *,
    value: bytes = b"\xc3\x01avro",
    key: bytes = b"CP0001",
    headers: Headers = (("traceparent", b"00-abc-01"),),
    offset: int = 7,
) -> Record:
    return Record(topic, 2, offset, key, value, tuple(headers), NOW_MS - 5 * HOUR_MS)


def letter(
    original: Record | None = None,
    *,
    stage: str = "delivery",
    reason: str = "business_rule",
    city: str | None = "hangzhou",
    at_ms: int = NOW_MS - HOUR_MS,
    dlq_offset: int = 0,
    dlq_partition: int = 0,
) -> DeadLetter:
    original = original or source()
    extra = {"attempts": "2", "http-status": "200", "response": "TYPE_UNKNOWN"}
    if city is not None:
        extra |= {"city": city, "first-attempt": iso(at_ms - 900), "last-attempt": iso(at_ms)}
    headers = dead_letter_headers(
        original,
        stage=stage,
        error=RejectedByBureau("hangzhou rejected the escalation: TYPE_UNKNOWN"),
        reason=reason,
        now_ms=at_ms,
        extra=extra if stage == "delivery" else None,
    )
    topic = T.dlq_escalations if stage == "delivery" else T.dlq_complaints
    record = Record(
        topic, dlq_partition, dlq_offset, original.key, original.value, headers, at_ms + 5
    )
    return DeadLetter.from_record(record)


def replayed(original: Record, count: int) -> Record:
    """The original record as a replay would republish it, ``count`` replays in."""
    kept = [(k, v) for k, v in original.headers if k != "gc-replay-count"]
    return source(
        original.topic,
        value=original.value or b"",
        key=original.key or b"",
        headers=[*kept, ("gc-replay-count", str(count).encode())],
        offset=original.offset + 100 * count,
    )


# --- parsing -------------------------------------------------------------------------------------


def test_delivery_dead_letter_headers_decode_into_a_typed_record() -> None:
    at = NOW_MS - HOUR_MS
    x = letter(source(headers=[("gc-replay-count", b"2")]), at_ms=at, dlq_offset=41)
    assert (x.topic, x.partition, x.offset, x.position) == (T.dlq_escalations, 0, 41, "0:41")
    assert (x.stage, x.city, x.reason, x.error_class) == (
        "delivery",
        "hangzhou",
        "business_rule",
        "RejectedByBureau",
    )
    assert (x.source_topic, x.source_partition, x.source_offset) == (
        "gc.escalations.hangzhou.v1",
        2,
        7,
    )
    assert x.time_ms == at
    assert (x.http_status, x.attempts, x.response) == (200, 2, "TYPE_UNKNOWN")
    assert (x.first_attempt_ms, x.last_attempt_ms) == (at - 900, at)
    assert x.replay_count == 2
    assert "TYPE_UNKNOWN" in x.message
    assert x.value == b"\xc3\x01avro" and x.key == b"CP0001"


def test_router_dead_letter_has_no_delivery_context() -> None:
    x = letter(source("gc.complaints.v1"), stage="router", reason="bad_magic", city=None)
    assert (x.stage, x.city, x.reason) == ("router", "", "bad_magic")
    assert x.http_status is None and x.attempts == 0
    assert x.first_attempt_ms is None and x.last_attempt_ms is None
    assert x.replay_count == 0


def test_missing_or_garbled_headers_fall_back_safely() -> None:
    headers = [("gc-dlq-time", b"yesterday"), ("gc-dlq-attempts", b"x"), ("gc-replay-count", b"-1")]
    x = DeadLetter.from_record(Record(T.dlq_escalations, 1, 3, None, None, headers, 1234))
    assert x.time_ms == 1234  # the record timestamp
    assert x.attempts == 0 and x.replay_count == 0
    assert x.value == b"" and x.source_topic == "" and x.source_offset is None


def test_row_masks_personal_data_in_the_key() -> None:
    x = letter(source(key=b"13812345678"))
    row = x.row()
    assert row["key"] == "138****5678"
    assert row["dlq"] == "0:0" and row["city"] == "hangzhou" and row["replay_count"] == 0


# --- time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW_MS - 90_000),
        ("15m", NOW_MS - 15 * 60_000),
        ("2h", NOW_MS - 2 * HOUR_MS),
        ("1.5h", NOW_MS - 90 * 60_000),
        ("1h30m", NOW_MS - 90 * 60_000),
        (" 2d12h ", NOW_MS - 60 * HOUR_MS),
        ("7d", NOW_MS - 7 * 24 * HOUR_MS),
        ("1w", NOW_MS - 7 * 24 * HOUR_MS),
        ("2025-03-01T10:00:00Z", NOW_MS - 2 * HOUR_MS),
        ("2025-03-01T10:00:00", NOW_MS - 2 * HOUR_MS),  # naive = UTC
        ("2025-03-01T18:00:00+08:00", NOW_MS - 2 * HOUR_MS),
        ("2025-03-01", NOW_MS - 12 * HOUR_MS),
    ],
)
def test_parse_when_accepts_iso_8601_and_relative_ages(text: str, expected: int) -> None:
    assert parse_when(text, NOW_MS) == expected


@pytest.mark.parametrize(
    "text", ["", "2 hours", "-2h", "2y", "h", "2h 30m", "tomorrow", "2025-13-01"]
)
def test_parse_when_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when(text, NOW_MS)


# --- filters -------------------------------------------------------------------------------------


def test_empty_filter_selects_everything() -> None:
    assert Filter().matches(letter()) and Filter().matches(letter(city=None))


def test_filter_by_city_reason_and_source_topic() -> None:
    hz, wh = letter(), letter(source("gc.escalations.wuhu.v1"), city="wuhu", reason="http_422")
    assert Filter(cities=frozenset({"hangzhou"})).matches(hz)
    assert not Filter(cities=frozenset({"hangzhou"})).matches(wh)
    assert Filter(cities=frozenset({"hangzhou", "wuhu"})).matches(wh)
    assert Filter(reasons=frozenset({"http_422"})).matches(wh)
    assert not Filter(reasons=frozenset({"http_422"})).matches(hz)
    assert Filter(source_topic="gc.escalations.wuhu.v1").matches(wh)
    assert not Filter(source_topic="gc.escalations.wuhu.v1").matches(hz)
    both = Filter(cities=frozenset({"wuhu"}), reasons=frozenset({"business_rule"}))
    assert not both.matches(wh) and not both.matches(hz)


def test_time_range_is_since_inclusive_until_exclusive() -> None:
    at = NOW_MS - HOUR_MS
    x = letter(at_ms=at)
    assert Filter(since_ms=at).matches(x)
    assert not Filter(since_ms=at + 1).matches(x)
    assert Filter(until_ms=at + 1).matches(x)
    assert not Filter(until_ms=at).matches(x)
    two_hours = parse_when("2h", NOW_MS)
    assert Filter(since_ms=two_hours, until_ms=NOW_MS).matches(x)
    assert not Filter(since_ms=parse_when("30m", NOW_MS)).matches(x)


# --- decisions -----------------------------------------------------------------------------------


def test_escalation_replays_to_its_city_topic() -> None:
    d = decide(letter(), stage="escalations", topics=T, cities=CITIES)
    assert d.replay and d.target == "gc.escalations.hangzhou.v1" and d.city == "hangzhou"


def test_complaint_replays_to_the_complaints_topic_unpaced() -> None:
    x = letter(source("gc.complaints.v1"), stage="router", reason="unknown_schema", city=None)
    d = decide(x, stage="complaints", topics=T, cities=CITIES)
    assert d.replay and d.target == "gc.complaints.v1" and d.city == ""


@pytest.mark.parametrize(("count", "max_replays", "replays"), [(0, 3, True), (2, 3, True),
                                                                 (3, 3, False), (5, 3, False),
                                                                 (1, 1, False), (0, 1, True)])  # fmt: skip
def test_loop_guard_refuses_records_replayed_max_times(
    count: int, max_replays: int, replays: bool
) -> None:
    x = letter(source(headers=[("gc-replay-count", str(count).encode())]))
    d = decide(x, stage="escalations", topics=T, cities=CITIES, max_replays=max_replays)
    assert d.replay is replays
    assert d.skip == ("" if replays else "loop_guard")


@pytest.mark.parametrize(
    ("topic", "stage", "skip"),
    [
        ("gc.complaints.v1", "escalations", "unexpected_source"),
        ("gc.escalations.atlantis.v1", "escalations", "unknown_city"),
        ("other.escalations.wuhu.v1", "escalations", "unexpected_source"),
        ("gc.escalations.wuhu.v1", "complaints", "unexpected_source"),
        ("", "escalations", "unexpected_source"),
    ],
)
def test_records_from_unexpected_sources_are_not_replayed(
    topic: str, stage: Stage, skip: str
) -> None:
    x = letter(source(topic))
    d = decide(x, stage=stage, topics=T, cities=CITIES)
    assert not d.replay and d.skip == skip and d.target == ""


def test_empty_value_is_not_replayed() -> None:
    d = decide(letter(source(value=b"")), stage="escalations", topics=T, cities=CITIES)
    assert d.skip == "empty"


def _bounded_letter(limit: int = 4096) -> DeadLetter:
    """What the deliverer writes for a dead letter over its topic's limit (outcomes.bounded)."""
    from gateway.delivery.outcomes import bounded

    full = letter(source(value=b"\xc3\x01" + b"x" * 50_000))
    key, value, headers = bounded(full.key, full.value, full.headers, limit)
    record = Record(T.dlq_escalations, 0, 3, key, value, tuple(headers), NOW_MS)
    return DeadLetter.from_record(record)


def test_a_truncated_dead_letter_is_skipped_not_replayed_as_a_prefix() -> None:
    cut = _bounded_letter()
    assert cut.value and len(cut.value) < 50_000  # a prefix: replaying it would be a lie
    d = decide(cut, stage="escalations", topics=T, cities=CITIES)
    assert (d.replay, d.skip, d.target) == (False, "truncated", "")
    clock = FakeClock()
    sender = FakeSender(clock)
    report = replay([*decisions_for(1), d], sender, limits={}, clock=clock, sleep=clock.sleep)
    assert len(sender.sent) == 1 and report.skipped == {"truncated": 1} and report.ok


def test_the_deliverer_bounds_a_dead_letter_with_the_routers_header_contract() -> None:
    """One contract for both stages: the deliverer's bounded dead letter is the router's
    (:func:`bounded_dead_letter`), with the deliverer's own prefix budget."""
    from gateway.deadletters.headers import bounded_dead_letter
    from gateway.delivery.outcomes import KEPT_PREFIX_BYTES, bounded, record_size

    value, long_key = b"\xc3\x01" + b"x" * 50_000, b"k" * 2000
    original = replayed(source(value=value, key=long_key), 2)
    full = letter(original)
    key, cut, headers = bounded(full.key, full.value, full.headers, 8192)
    router_key, _, router_headers = bounded_dead_letter(
        full.key, full.value or b"", full.headers, max_value_bytes=0
    )
    assert (key, headers) == (router_key, router_headers)
    got = dict(headers)
    assert key is None and got["gc-dlq-key-sha256"] == hashlib.sha256(long_key).hexdigest().encode()
    assert got["gc-dlq-truncated"] == b"true" and got["gc-dlq-value-bytes"] == b"50002"
    assert got["gc-dlq-value-sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert got["gc-dlq-headers-dropped"] == b"1" and got["gc-replay-count"] == b"2"
    assert "traceparent" not in got and got["gc-dlq-stage"] == b"delivery"
    assert cut == value[:KEPT_PREFIX_BYTES] and record_size(key, cut, headers) <= 8192
    # a tight limit: the prefix shrinks to fit, never the headers
    _, tight, same = bounded(full.key, full.value, full.headers, 2500)
    assert same == headers and len(tight) < KEPT_PREFIX_BYTES
    assert record_size(None, tight, same) <= 2500


@pytest.mark.parametrize(
    ("marker", "skip"), [(b"true", "truncated"), (b"TRUE", "truncated"), (b"false", "")]
)
def test_the_truncated_marker_of_either_stage_is_honoured(marker: bytes, skip: str) -> None:
    def marked(x: DeadLetter) -> DeadLetter:
        headers = (*x.headers, ("gc-dlq-truncated", marker))
        record = Record(x.topic, x.partition, x.offset, x.key, x.value, headers, NOW_MS)
        return DeadLetter.from_record(record)

    x = marked(letter())
    assert decide(x, stage="escalations", topics=T, cities=CITIES).skip == skip
    y = marked(letter(source("gc.complaints.v1"), stage="router", city=None))
    assert decide(y, stage="complaints", topics=T, cities=CITIES).skip == skip


def test_plan_replays_only_the_latest_dead_letter_of_a_record() -> None:
    original = source()
    first = letter(original, at_ms=NOW_MS - 3 * HOUR_MS, dlq_offset=0)
    again = letter(replayed(original, 1), at_ms=NOW_MS - HOUR_MS, dlq_offset=5)
    other = letter(source(key=b"CP0002", value=b"\xc3\x01other"), dlq_offset=6)
    decisions = plan([first, again, other], Filter(), stage="escalations", topics=T, cities=CITIES)
    assert [(d.letter.offset, d.skip) for d in decisions] == [(0, "superseded"), (5, ""), (6, "")]


def test_a_later_dead_letter_supersedes_even_when_not_selected() -> None:
    original = source()
    first = letter(original, at_ms=NOW_MS - 3 * HOUR_MS, dlq_offset=0)
    again = letter(replayed(original, 1), at_ms=NOW_MS - HOUR_MS, dlq_offset=5)
    only_old = Filter(until_ms=NOW_MS - 2 * HOUR_MS)
    decisions = plan([first, again], only_old, stage="escalations", topics=T, cities=CITIES)
    assert [(d.letter.offset, d.skip) for d in decisions] == [(0, "superseded")]


def test_repeated_failures_converge_on_the_loop_guard() -> None:
    original = source()
    history = [
        letter(replayed(original, n) if n else original, at_ms=NOW_MS - (9 - n) * HOUR_MS,
               dlq_offset=n)
        for n in range(4)
    ]  # fmt: skip
    decisions = plan(history, Filter(), stage="escalations", topics=T, cities=CITIES)
    assert [d.skip for d in decisions] == ["superseded"] * 3 + ["loop_guard"]


def test_plan_leaves_out_what_the_filter_does_not_select() -> None:
    hz, wh = letter(), letter(source("gc.escalations.wuhu.v1", key=b"CP9"), city="wuhu")
    decisions = plan(
        [hz, wh], Filter(cities=frozenset({"wuhu"})), stage="escalations", topics=T, cities=CITIES
    )
    assert [d.city for d in decisions] == ["wuhu"]


# --- replay --------------------------------------------------------------------------------------


def test_replay_headers_keep_the_originals_and_increment_the_count() -> None:
    x = letter(source(headers=[("traceparent", b"t"), ("gc-replay-count", b"1"), ("x", b"y")]))
    assert replay_headers(x) == [("traceparent", b"t"), ("x", b"y"), ("gc-replay-count", b"2")]
    assert replay_headers(letter()) == [("traceparent", b"00-abc-01"), ("gc-replay-count", b"1")]


class FakeSender:
    def __init__(self, clock: FakeClock, fail_on: dict[bytes, Exception] | None = None) -> None:
        self.clock = clock
        self.fail_on = fail_on or {}
        self.sent: list[tuple[str, bytes | None, bytes, Sequence[tuple[str, bytes]], float]] = []

    def send_and_wait(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        error = self.fail_on.get(key or b"")
        if error is not None:
            raise error
        self.sent.append((topic, key, value, list(headers or ()), self.clock.now))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def decisions_for(n: int, city: str = "hangzhou") -> list[Decision]:
    letters = [
        letter(source(f"gc.escalations.{city}.v1", key=f"K{i}".encode(), value=f"v{i}".encode()),
               city=city, dlq_offset=i)
        for i in range(n)
    ]  # fmt: skip
    return plan(letters, Filter(), stage="escalations", topics=T, cities=CITIES)


def test_replay_sends_original_bytes_to_the_source_topic_with_the_count() -> None:
    clock = FakeClock()
    sender = FakeSender(clock)
    report = replay(decisions_for(3), sender, limits={}, clock=clock, sleep=clock.sleep)
    assert report.ok and report.replayed == {("hangzhou", "business_rule"): 3}
    assert [(t, k, v) for t, k, v, _, _ in sender.sent] == [
        ("gc.escalations.hangzhou.v1", f"K{i}".encode(), f"v{i}".encode()) for i in range(3)
    ]
    assert all(h[-1] == ("gc-replay-count", b"1") for *_, h, _ in sender.sent)
    assert all(not k.startswith("gc-dlq-") for *_, h, _ in sender.sent for k, _ in h)


def test_replay_is_paced_at_the_city_rate() -> None:
    clock = FakeClock()
    sender = FakeSender(clock)
    replay(
        decisions_for(11) + decisions_for(4, "wuhu"),
        sender,
        limits={"hangzhou": (2.0, 1), "wuhu": (100.0, 5)},
        clock=clock,
        sleep=clock.sleep,
    )
    hz = [at for t, *_, at in sender.sent if "hangzhou" in t]
    assert len(hz) == 11
    assert hz[-1] - hz[0] == pytest.approx(5.0)  # 10 more tokens at 2/s after a burst of 1
    gaps = [b - a for a, b in itertools.pairwise(hz)]
    assert min(gaps) == pytest.approx(0.5)
    wh = [at for t, *_, at in sender.sent if "wuhu" in t]
    assert len(wh) == 4 and wh[-1] == wh[0]  # within its burst: no wait


def test_dry_run_sends_nothing_and_counts_what_it_would_replay() -> None:
    clock = FakeClock()
    sender = FakeSender(clock)
    seen: list[str] = []
    report = replay(
        decisions_for(4),
        sender,
        limits={"hangzhou": (1.0, 1)},
        dry_run=True,
        clock=clock,
        sleep=clock.sleep,
        progress=lambda d, status: seen.append(status),
    )
    assert sender.sent == [] and clock.now == 1000.0
    assert report.dry_run and report.replayed == {("hangzhou", "business_rule"): 4}
    assert seen == ["would replay"] * 4


def test_skipped_decisions_are_counted_not_sent() -> None:
    clock = FakeClock()
    sender = FakeSender(clock)
    guarded = letter(source(key=b"G", headers=[("gc-replay-count", b"3")]), dlq_offset=9)
    decisions = [*decisions_for(2), decide(guarded, stage="escalations", topics=T, cities=CITIES)]
    report = replay(decisions, sender, limits={}, clock=clock, sleep=clock.sleep)
    assert len(sender.sent) == 2 and report.skipped == {"loop_guard": 1} and report.ok


def test_a_failed_send_fails_the_report_and_the_rest_still_go() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, fail_on={b"K1": FatalError("send: MessageSizeTooLargeError")})
    report = replay(decisions_for(3), sender, limits={}, clock=clock, sleep=clock.sleep)
    assert not report.ok and [x.key for x, _ in report.failed] == [b"K1"]
    assert [k for _, k, *_ in sender.sent] == [b"K0", b"K2"]


def test_an_unavailable_broker_fails_the_rest_without_sending() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, fail_on={b"K1": KafkaUnavailable("send: KafkaTimeoutError")})
    report = replay(decisions_for(4), sender, limits={}, clock=clock, sleep=clock.sleep)
    assert [k for _, k, *_ in sender.sent] == [b"K0"]
    assert [x.key for x, _ in report.failed] == [b"K1", b"K2", b"K3"]
    assert sum(report.replayed.values()) == 1


# --- personal data -------------------------------------------------------------------------------


def test_mask_record_masks_the_consumer_wherever_it_appears() -> None:
    consumer = {"name": "张三丰", "phone": "13812345678", "id_number": None,
                "address": "杭州市西湖区文三路1号", "email": "zs@example.com"}  # fmt: skip
    record: dict[str, object] = {
        "complaint_id": "CP1",
        "consumer": consumer,
        "description": "张三丰 says call 13812345678 at 杭州市西湖区文三路1号",
        "severity": ["injury"],
        "amount_fen": 1200,
    }  # fmt: skip
    known = known_pii(record)
    masked = mask_record(record, known)
    text = repr(masked)
    for value in ("张三丰", "13812345678", "杭州市西湖区文三路1号", "zs@example.com"):
        assert value not in text
    assert masked["complaint_id"] == "CP1" and masked["amount_fen"] == 1200
    assert masked["severity"] == ["injury"]
    assert consumer["name"] == "张三丰"  # the input is untouched


def test_masked_key() -> None:
    assert masked_key(None) == ""
    assert masked_key(b"CP20250301000100000001") == "CP20250301000100000001"
    assert masked_key(b"110101199003074578") == "110101********4578"
