"""The delivery engine against the real broker and the bureau simulator (real HTTP, real TLS).

Each test states its counts and pass criterion in its name and asserts them exactly.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.avro.codec import Codec
from gateway.cities import GREEN_CHANNEL_KEYS
from gateway.config import Settings
from gateway.dev.bureaus import BureauSimulator
from gateway.http import HttpTransport
from gateway.policies.ratelimit import TokenBucket
from gateway.sdk import BureauRequest, BureauResponse
from tests.conftest import TopicFactory
from tests.helpers import gateway_process, header, read_all, stop_process, write_config
from tests.integration.delivery_kit import (
    Deliverer,
    EscalationStream,
    accepted_ids,
    delivery_settings,
    wait_until,
)

pytestmark = pytest.mark.integration
CITIES = list(GREEN_CHANNEL_KEYS)
OUTAGE_S = float(os.environ.get("GC_TEST_OUTAGE_S", "120"))


@pytest.fixture
def setup(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    sim: BureauSimulator,
    tls_dir: Path,
) -> Callable[..., Settings]:
    topic_factory.create_all()

    def build(**city_extra: object) -> Settings:
        return delivery_settings(settings_factory, sim, tls_dir, topic_factory.prefix, **city_extra)

    return build


def all_accepted_once(sim: BureauSimulator, stream: EscalationStream) -> bool:
    want = Counter(s.city for s in stream.sent)
    return all(len(accepted_ids(sim, c)) >= n for c, n in want.items())


def assert_each_accepted_exactly_once(sim: BureauSimulator, stream: EscalationStream) -> None:
    for city in {s.city for s in stream.sent}:
        keys = accepted_ids(sim, city)
        assert len(keys) == len(set(keys)), f"{city}: a case was opened twice"
        assert set(keys) == {s.escalation_id for s in stream.sent if s.city == city}, city


def receipts(settings: Settings, expect: int) -> list[dict[str, object]]:
    codec = Codec(settings.codec)
    records = read_all(
        settings.kafka.bootstrap_servers,
        [f"{settings.topics.prefix}receipts.v1"],
        expect=expect,
        timeout_s=60,
    )
    return [codec.decode_as("receipt", r.value or b"") for r in records]


@pytest.mark.slow
def test_one_city_down_two_minutes_nine_others_keep_delivering_with_unchanged_latency(
    setup: Callable[..., Settings], sim: BureauSimulator
) -> None:
    settings = setup()
    stream = EscalationStream(settings, seed=31)
    down = "wuhu"
    healthy = [c for c in CITIES if c != down]
    with Deliverer(settings) as d:
        # baseline: 10 s, 2 escalations/s per city
        for _ in range(20):
            stream.publish_many(CITIES, 1)
            time.sleep(0.5)
        assert wait_until(lambda: all_accepted_once(sim, stream), 30)
        baseline_n = len(stream.sent)
        sim.city(down).set_faults(outage=True)
        outage_started = time.monotonic()
        while time.monotonic() - outage_started < OUTAGE_S:
            stream.publish_many(CITIES, 1)
            time.sleep(0.5)
        assert d.metric("greenchannel_breaker_transitions_total", city=down, state="open") >= 1
        assert d.metric("greenchannel_city_paused", city=down) == 1
        assert d.metric("greenchannel_oldest_undelivered_seconds", city=down) >= OUTAGE_S * 0.5
        healthy_during = [s for s in stream.sent[baseline_n:] if s.city in healthy]
        assert wait_until(
            lambda: all(
                len(accepted_ids(sim, c)) == sum(1 for s in stream.sent if s.city == c)
                for c in healthy
            ),
            30,
        )
        assert len(accepted_ids(sim, down)) == sum(
            1 for s in stream.sent[:baseline_n] if s.city == down
        )
        sim.city(down).reset_faults()
        assert wait_until(lambda: all_accepted_once(sim, stream), 60)
        dead = d.metric("greenchannel_delivery_dead_letters_total", city=down, reason="rejected")
    assert_each_accepted_exactly_once(sim, stream)
    assert dead == 0
    lat = {r["escalation_id"]: r["latency_ms"] for r in receipts(settings, len(stream.sent))}
    base = [lat[s.escalation_id] for s in stream.sent[:baseline_n] if s.city in healthy]
    during = [lat[s.escalation_id] for s in healthy_during]
    p50_base, p50_during = statistics.median(base), statistics.median(during)
    p99_during = statistics.quantiles(during, n=100)[98]
    print(
        f"healthy p50 baseline {p50_base} ms, during outage {p50_during} ms, p99 {p99_during} ms;"
        f" {len(during)} delivered during the {OUTAGE_S:.0f} s outage"
    )
    assert len(during) >= len(healthy) * OUTAGE_S  # >= 1 per second per healthy city
    assert p50_during <= max(3 * p50_base, p50_base + 50)
    assert p99_during < 1000


@pytest.mark.slow
def test_429_storm_with_retry_after_delivers_everything_and_lowers_the_rate(
    setup: Callable[..., Settings], sim: BureauSimulator
) -> None:
    settings = setup(nanjing={"rate_per_s": 50.0, "burst": 5})
    sim.city("nanjing").set_faults(rate_per_s=5.0, burst=1)  # the bureau is much stricter
    stream = EscalationStream(settings, seed=32)
    with Deliverer(settings) as d:
        stream.publish_many(["nanjing"], 80)
        assert wait_until(lambda: all_accepted_once(sim, stream), 90)
        lowered = d.metric("greenchannel_ratelimit_rate", city="nanjing")
        retries = d.metric(
            "greenchannel_delivery_retries_total", city="nanjing", reason="rate_limited"
        )
    statuses = Counter(a.status for a in sim.city("nanjing").arrivals())
    assert statuses[429] > 0
    assert retries > 0
    assert lowered < 50.0
    assert_each_accepted_exactly_once(sim, stream)


def test_hanging_bureau_times_out_retries_and_delivers_once_it_answers(
    setup: Callable[..., Settings], sim: BureauSimulator
) -> None:
    settings = setup()
    sim.city("hefei").set_faults(hang=True)
    stream = EscalationStream(settings, seed=33)
    with Deliverer(settings) as d:
        stream.publish_many(["hefei", "hangzhou"], 10)
        assert wait_until(lambda: len(accepted_ids(sim, "hangzhou")) == 10, 30)

        def timeouts_seen() -> float:
            return d.metric(
                "greenchannel_delivery_attempts_total", city="hefei", outcome="unavailable"
            )

        assert wait_until(lambda: timeouts_seen() >= 2, 60)  # timed out, and retried
        assert accepted_ids(sim, "hefei") == []
        timeouts = timeouts_seen()
        sim.city("hefei").set_faults(hang=False)
        assert wait_until(lambda: all_accepted_once(sim, stream), 60)
    assert timeouts >= 1
    assert_each_accepted_exactly_once(sim, stream)


def test_two_percent_permanent_rejections_are_exactly_what_is_dead_lettered(
    setup: Callable[..., Settings], sim: BureauSimulator
) -> None:
    settings = setup()
    stream = EscalationStream(settings, seed=34)
    bad: set[str] = set()
    for i in range(500):
        city = CITIES[i % len(CITIES)]
        if i % 50 == 7:
            bad.add(stream.publish(city, description="质量问题" * 1500)["escalation_id"])
        else:
            stream.publish(city)
    stream.producer.flush()
    with Deliverer(settings) as d:
        dead = read_all(
            settings.kafka.bootstrap_servers,
            [f"{settings.topics.prefix}dlq.escalations.v1"],
            expect=len(bad),
            timeout_s=120,
        )
        assert wait_until(lambda: sum(len(accepted_ids(sim, c)) for c in CITIES) == 490, 60)
        dlq_metric = d.metric_sum("greenchannel_delivery_dead_letters_total")
    codec = Codec(settings.codec)
    dead_ids = {codec.decode_as("escalation", r.value or b"")["escalation_id"] for r in dead}
    assert len(bad) == 10 and dead_ids == bad and len(dead) == 10
    for r in dead:
        assert header(r, "gc-dlq-stage") == "delivery"
        assert header(r, "gc-dlq-city") in CITIES
        assert header(r, "gc-dlq-error-class") == "RejectedByBureau"
        assert int(header(r, "gc-dlq-attempts") or 0) >= 1
        assert header(r, "gc-dlq-http-status") in {"200", "400", "422"}
        assert header(r, "gc-dlq-response")
        assert header(r, "gc-dlq-first-attempt") and header(r, "gc-dlq-last-attempt")
        assert (
            header(r, "gc-dlq-source-topic")
            == f"{settings.topics.prefix}escalations.{header(r, 'gc-dlq-city')}.v1"
        )
        assert header(r, "gc-dlq-source-offset") is not None
    accepted = {k for c in CITIES for k in accepted_ids(sim, c)}
    assert accepted == {s.escalation_id for s in stream.sent} - bad
    got = receipts(settings, 500)
    assert Counter(r["outcome"] for r in got) == {"ACCEPTED": 490, "REJECTED": 10}
    assert all(r["case_number"] for r in got if r["outcome"] == "ACCEPTED")
    assert dlq_metric == 10


@pytest.mark.slow
def test_sigkill_the_deliverer_mid_stream_every_escalation_accepted_exactly_once(
    setup: Callable[..., Settings], sim: BureauSimulator, tmp_path: Path
) -> None:
    settings = setup()
    stream = EscalationStream(settings, seed=35)
    stream.publish_many(CITIES, 60)
    cfg = write_config(
        tmp_path / "gc.yaml",
        {
            "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
            "topics": {"prefix": settings.topics.prefix},
            "observability": {"port": 0, "log_format": "text"},
            "delivery": {"group_id": settings.delivery.group_id},
            "cities": {
                c: cs.model_dump(mode="json", exclude={"credentials"})
                for c, cs in settings.cities.items()
            },
        },
    )
    kills = 0
    proc = gateway_process(["deliver"], cfg, tmp_path / "deliver.log")

    def delivered() -> int:
        return sum(len(accepted_ids(sim, c)) for c in CITIES)

    try:
        for _ in range(3):
            # each kill lands after the (restarted) deliverer delivered more
            before, total = delivered(), len(stream.sent)
            assert wait_until(lambda: delivered() > before or before >= total, 60, every_s=0.1)  # noqa: B023
            stop_process(proc, signal.SIGKILL)
            kills += 1
            proc = gateway_process(["deliver"], cfg, tmp_path / "deliver.log")
        assert wait_until(lambda: all_accepted_once(sim, stream), 120), (
            tmp_path / "deliver.log"
        ).read_text()[-3000:]
    finally:
        stop_process(proc)
    assert kills == 3
    assert_each_accepted_exactly_once(sim, stream)
    requests = sum(sim.city(c).counters().get("requests", 0) for c in CITIES)
    print(f"{len(stream.sent)} escalations, {requests} requests, {kills} SIGKILLs")


def max_in_window(times: list[float], window_s: float = 1.0) -> int:
    """The most instants in any sliding window of ``window_s``."""
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + window_s) for i, start in enumerate(times))


def test_rate_at_the_bureau_never_above_the_city_limit(
    setup: Callable[..., Settings], sim: BureauSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = setup()
    # when each city's bucket grants a token, read inside the bucket (the gateway's guarantee
    # is on grants: a request that got its token can still be scheduled late on a loaded
    # machine and leave bunched with the next ones, 34 sends in a 1 s window for 30 + 2 once)
    grants: dict[TokenBucket, list[float]] = {}
    serial: dict[TokenBucket, threading.Lock] = {}
    reserve = TokenBucket.reserve

    def recorded_reserve(self: TokenBucket) -> float:
        with serial.setdefault(self, threading.Lock()):
            wait = reserve(self)
            if wait <= 0:  # granted: the bucket's clock reading of this grant
                grants.setdefault(self, []).append(self._last)
            return wait

    monkeypatch.setattr(TokenBucket, "reserve", recorded_reserve)
    # when each complaint request leaves the gateway, per city
    sent: dict[str, list[float]] = {c: [] for c in CITIES}
    send = HttpTransport.send

    def timed_send(self: HttpTransport, request: BureauRequest) -> BureauResponse:
        if "token" not in request.path:
            sent[self.city].append(time.monotonic())
        return send(self, request)

    monkeypatch.setattr(HttpTransport, "send", timed_send)
    stream = EscalationStream(settings, seed=36)
    for city in CITIES:  # 4 s of backlog per city
        for _ in range(int(settings.city(city).rate_per_s * 4)):
            stream.publish(city)
    stream.producer.flush()
    with Deliverer(settings):
        assert wait_until(lambda: all_accepted_once(sim, stream), 90)
    for city in CITIES:
        limit = settings.city(city).rate_per_s
        burst = settings.city(city).burst
        # leaving the gateway: the grants' bound plus 100 ms of thread scheduling
        assert max_in_window(sent[city]) <= limit + burst + math.ceil(limit * 0.1), (
            city,
            max_in_window(sent[city]),
        )
        # complaint requests only: OAuth2 token requests do not take a token from the bucket
        times = sorted(
            a.at for a in sim.city(city).arrivals() if a.status != 0 and "token" not in a.path
        )
        statuses = Counter(a.status for a in sim.city(city).arrivals())
        # The bureau's own bucket (same rate, 100 ms of slack) may see arrival jitter past its
        # slack on a loaded machine (CI, xdist: hefei answered 2 of 82 with 429 once, while the
        # sends above kept the limit), each retried: a few, never a sustained excess (the
        # window and achieved-rate checks below catch that)
        assert statuses[429] <= max(2, len(times) // 40), (city, statuses)
        # At the bureau, arrivals also carry the network's and the simulator's scheduling
        # jitter (ten cities' TLS handshakes and handlers in one Python process on two loaded
        # cores: requests sent 1.1 s apart can be handled 1.0 s apart; once 34 for 30 + 2).
        # Allow 100 ms of it in a 1 s window, never a sustained excess (the next check).
        worst = max_in_window(times)
        assert worst <= limit + burst + math.ceil(limit * 0.1), (city, worst, limit)
        # over the whole run: at most burst + rate * duration requests; one more for arrival
        # jitter (the first request also pays for connecting, so it can arrive late and
        # shorten the measured duration: 20.45/s measured once for a 20/s bucket)
        achieved = (len(times) - burst - 1) / (times[-1] - times[0])
        assert achieved <= limit * 1.02, (city, achieved)
    # The gateway's guarantee, where it holds exactly: grants of each city's bucket, in any
    # sliding 1 s window, at most rate + burst (the bucket's capacity plus one second of refill)
    assert len(grants) >= len(CITIES)
    for bucket, times in grants.items():
        assert max_in_window(times) <= bucket.ceiling + bucket.burst, (
            bucket.ceiling,
            max_in_window(times),
        )
    assert sum(len(t) for t in grants.values()) >= sum(len(t) for t in sent.values())
    assert_each_accepted_exactly_once(sim, stream)


def test_backpressure_pause_and_resume_strand_no_record(
    setup: Callable[..., Settings], sim: BureauSimulator, settings_factory: Callable[..., Settings]
) -> None:
    """Regression: kafka-python parks records of a paused partition and could fail to fetch it
    again after resume. With 20 records in flight per city, every city pauses and resumes
    dozens of times; all 1,500 escalations must still be accepted exactly once."""
    settings = setup()
    settings = settings.model_copy(
        update={"delivery": settings.delivery.model_copy(update={"max_in_flight_per_city": 20})}
    )
    stream = EscalationStream(settings, seed=37)
    stream.publish_many(CITIES, 150)
    with Deliverer(settings) as d:
        assert wait_until(lambda: all_accepted_once(sim, stream), 120)
        paused = d.metric_sum("greenchannel_city_paused")
    assert paused == 0
    assert_each_accepted_exactly_once(sim, stream)
