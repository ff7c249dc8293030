"""Every Prometheus metric of the gateway, defined in one place (catalogue: docs/metrics.md).

:class:`Metrics` implements :class:`gateway.ops.observer.Observer` against an injected
``CollectorRegistry``. Consumer lag, the age of the oldest undelivered escalation and loop
heartbeat ages are custom collectors computed at scrape time from snapshots the loops publish.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

NS = "greenchannel"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
TX_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
CASE_HANDLING_BUCKETS = tuple(d * 86_400.0 for d in (1, 3, 7, 10, 15, 30, 45, 60, 90))
"""Handling-time buckets of closed cases, in seconds (the same as gateway.cases.sla's)."""


class _SnapshotCollector(Collector):
    """A gauge family whose samples come from callables at scrape time."""

    def __init__(self, name: str, doc: str, label: str) -> None:
        self._name = name
        self._doc = doc
        self._label = label
        self._sources: list[tuple[dict[str, str], Callable[[], Mapping[str, float]]]] = []

    def add(self, snapshot: Callable[[], Mapping[str, float]], **fixed: str) -> None:
        self._sources.append((fixed, snapshot))

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        fixed_names = sorted({k for fixed, _ in self._sources for k in fixed})
        family = GaugeMetricFamily(self._name, self._doc, labels=[*fixed_names, self._label])
        for fixed, snapshot in self._sources:
            try:
                values = dict(snapshot())
            except Exception:  # noqa: S112 - a failing snapshot must not break the scrape
                continue
            for key, value in sorted(values.items()):
                family.add_metric([*(fixed.get(n, "") for n in fixed_names), key], float(value))
        yield family


class _BulkHistogram(Collector):
    """A label-less histogram fed a batch at a time: one lock per batch and a bisect per value
    (prometheus-client's ``Histogram.observe`` takes ~2 us per value, on the router's hot path).
    Exposed exactly like a ``Histogram`` (``_bucket``/``_count``/``_sum``)."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self._name = name
        self._doc = doc
        self._bounds = [float(b) for b in buckets]
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, local = self._bounds, [0] * len(self._counts)
        total = 0.0
        for v in values:
            local[bisect_left(bounds, v)] += 1  # bucket "le" is inclusive
            total += v
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, local, strict=True)]
            self._sum += total

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._doc)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip([*self._bounds, float("inf")], counts, strict=True):
            running += n
            cumulative.append((_le(bound), float(running)))
        family = HistogramMetricFamily(self._name, self._doc)
        family.add_metric([], cumulative, total)
        yield family


def _le(bound: float) -> str:
    """A bucket bound as prometheus-client's own histograms print it (Go float format)."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


class _CaseCollector(Collector):
    """Case SLA figures (``gateway.cases.sla.Figures``) from the keepers, at scrape time."""

    def __init__(self) -> None:
        self._sources: list[Callable[[], Any]] = []

    def add(self, snapshot: Callable[[], Any]) -> None:
        self._sources.append(snapshot)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        cases = GaugeMetricFamily(
            f"{NS}_cases",
            "Cases held by the case keeper, by city and state.",
            labels=["city", "state"],
        )
        at_risk = GaugeMetricFamily(
            f"{NS}_case_deadlines_at_risk",
            "Running case deadlines due within one working day, by city and limit.",
            labels=["city", "limit"],
        )
        overdue = GaugeMetricFamily(
            f"{NS}_case_deadlines_overdue",
            "Running case deadlines past due, by city and limit.",
            labels=["city", "limit"],
        )
        closed = GaugeMetricFamily(
            f"{NS}_cases_closed",
            "Closed cases by city, whether every deadline was met on time, and closure.",
            labels=["city", "on_time", "closure"],
        )
        handling = HistogramMetricFamily(
            f"{NS}_case_handling_seconds",
            "Handling time of closed cases (platform receipt to closure).",
            labels=["city"],
        )
        for snapshot in self._sources:
            try:
                figures = snapshot()
            except Exception:  # noqa: S112 - a failing snapshot must not break the scrape
                continue
            for (city, state), n in sorted(figures.cases.items()):
                cases.add_metric([city, state], float(n))
            for (city, limit), n in sorted(figures.at_risk.items()):
                at_risk.add_metric([city, limit], float(n))
            for (city, limit), n in sorted(figures.overdue.items()):
                overdue.add_metric([city, limit], float(n))
            for (city, on_time, closure), n in sorted(figures.closed.items()):
                closed.add_metric([city, on_time, closure], float(n))
            for city, counts in sorted(figures.handling.items()):
                bounds = [*CASE_HANDLING_BUCKETS, float("inf")]
                cumulative, running = [], 0
                for bound, n in zip(bounds, counts, strict=True):
                    running += n
                    cumulative.append((_le(bound), float(running)))
                handling.add_metric([city], cumulative, figures.handling_sum[city])
        yield from (cases, at_risk, overdue, closed, handling)


class Metrics:
    """The Prometheus implementation of the Observer protocol."""

    def __init__(self, registry: CollectorRegistry | None = None, version: str = "0.1.0") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        Info(f"{NS}_build", "Gateway build information.", registry=r).info({"version": version})
        # router
        self.consumed = Counter(
            f"{NS}_router_consumed_total", "Complaint records consumed by the router.", registry=r
        )
        self.routed = Counter(
            f"{NS}_router_routed_total",
            "Complaints routed, by department, call-center desk and rule.",
            ["department", "desk", "rule"],
            registry=r,
        )
        self.router_dlq = Counter(
            f"{NS}_router_dead_letters_total",
            "Complaint records dead-lettered by the router, by reason.",
            ["reason"],
            registry=r,
        )
        self.tx_seconds = Histogram(
            f"{NS}_router_transaction_seconds",
            "Duration of router transaction commits.",
            buckets=TX_BUCKETS,
            registry=r,
        )
        self.transactions = Counter(
            f"{NS}_router_transactions_total",
            "Router transactions by result (committed, aborted).",
            ["result"],
            registry=r,
        )
        self.batch_size = Histogram(
            f"{NS}_router_batch_size",
            "Records per router transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.route_latency = _BulkHistogram(
            f"{NS}_router_latency_seconds",
            "From the complaint's Kafka timestamp to its routing transaction being committed.",
            LATENCY_BUCKETS,
        )
        r.register(self.route_latency)
        self.router_stalled = Gauge(
            f"{NS}_router_stalled",
            "1 while the router waits out a stage-transient failure, by reason.",
            ["reason"],
            registry=r,
        )
        self.router_stalls = Counter(
            f"{NS}_router_stalls_total",
            "Stage-transient failures the router started waiting out, by reason.",
            ["reason"],
            registry=r,
        )
        self.router_bisections = Counter(
            f"{NS}_router_bisections_total",
            "Batches the broker refused a record of, bisected to dead-letter that record.",
            registry=r,
        )
        # delivery
        self.attempts = Counter(
            f"{NS}_delivery_attempts_total",
            "HTTP attempts to bureaus, by city and outcome.",
            ["city", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            f"{NS}_delivery_retries_total",
            "Retries scheduled, by city and reason.",
            ["city", "reason"],
            registry=r,
        )
        self.delivered = Counter(
            f"{NS}_delivered_total",
            "Escalations accepted by a bureau (case number recorded).",
            ["city"],
            registry=r,
        )
        self.delivery_dlq = Counter(
            f"{NS}_delivery_dead_letters_total",
            "Escalations dead-lettered, by city and reason.",
            ["city", "reason"],
            registry=r,
        )
        self.delivery_internal_errors = Counter(
            f"{NS}_delivery_internal_errors_total",
            "Escalations whose handling raised an unexpected exception (dead-lettered as "
            "internal_error; the worker carried on), by city.",
            ["city"],
            registry=r,
        )
        self.delivery_write_failures = Counter(
            f"{NS}_delivery_write_failures_total",
            "Failed receipt / dead-letter writes (each is retried with capped backoff), "
            "by city and kind.",
            ["city", "kind"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            f"{NS}_delivery_latency_seconds",
            "From escalation creation to the bureau's acceptance.",
            ["city"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.breaker_state = Gauge(
            f"{NS}_breaker_state",
            "Circuit breaker state per city: 0 closed, 1 half-open, 2 open.",
            ["city"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            f"{NS}_breaker_transitions_total",
            "Breaker state changes, by city and new state.",
            ["city", "state"],
            registry=r,
        )
        self.limiter_wait = Counter(
            f"{NS}_ratelimit_wait_seconds_total",
            "Time deliveries waited for a city's token bucket.",
            ["city"],
            registry=r,
        )
        self.limiter_rate = Gauge(
            f"{NS}_ratelimit_rate",
            "Current token-bucket rate per city (req/s), lowered after 429.",
            ["city"],
            registry=r,
        )
        self.paused = Gauge(
            f"{NS}_city_paused",
            "1 while a city's escalation partitions are paused.",
            ["city"],
            registry=r,
        )
        self.client_certificate_expiry = Gauge(
            f"{NS}_client_certificate_expiry_timestamp_seconds",
            "When each city's client certificate (mTLS) expires, Unix time; checked at start.",
            ["city"],
            registry=r,
        )
        # scrape-time views
        self.lag = _SnapshotCollector(
            f"{NS}_consumer_lag", "Records not yet processed, per topic.", "topic"
        )
        self.oldest = _SnapshotCollector(
            f"{NS}_oldest_undelivered_seconds",
            "Age of the oldest escalation not yet final, per city.",
            "city",
        )
        self.heartbeats = _SnapshotCollector(
            f"{NS}_loop_heartbeat_age_seconds",
            "Seconds since each processing loop last made progress.",
            "loop",
        )
        for collector in (self.lag, self.oldest, self.heartbeats):
            r.register(collector)
        # cases
        self.calendar_unknown = Gauge(
            f"{NS}_calendar_unknown_days",
            "Days of the coming window (cases.calendar.lookahead_days) whose official "
            "working-day arrangement is unknown (deadlines there count Monday-Friday).",
            registry=r,
        )
        self.case_updates = Counter(
            f"{NS}_case_updates_total",
            "Case updates the case keeper handled, by city and outcome "
            "(applied, duplicate, refused).",
            ["city", "outcome"],
            registry=r,
        )
        self.case_callbacks = Counter(
            f"{NS}_case_callbacks_total",
            "Bureau callbacks received, by city and outcome (ok, bad_signature, stale, "
            "replayed, malformed, rate_limited, unavailable...).",
            ["city", "outcome"],
            registry=r,
        )
        self.case_polls = Counter(
            f"{NS}_case_polls_total",
            "Polls of the bureaus for case updates, by city and outcome.",
            ["city", "outcome"],
            registry=r,
        )
        self.cases = _CaseCollector()
        r.register(self.cases)
        self.case_results = Counter(
            f"{NS}_case_results_total",
            "Handling results reported to the bureaus, by city and final outcome "
            "(accepted, rejected).",
            ["city", "outcome"],
            registry=r,
        )
        self.case_dlq = Counter(
            f"{NS}_case_dead_letters_total",
            "Case updates dead-lettered (refused by the state machine or undecodable), "
            "by city and reason.",
            ["city", "reason"],
            registry=r,
        )

    # router -------------------------------------------------------------------------------
    def on_consumed(self, n: int) -> None:
        self.consumed.inc(n)

    def on_routed(self, department: str, desk: str, rule: str, n: int = 1) -> None:
        self.routed.labels(department, desk, rule).inc(n)

    def on_router_dead_lettered(self, reason: str, n: int = 1) -> None:
        self.router_dlq.labels(reason).inc(n)

    def on_transaction(self, seconds: float, batch_size: int, committed: bool) -> None:
        self.transactions.labels("committed" if committed else "aborted").inc()
        if committed:
            self.tx_seconds.observe(seconds)
            self.batch_size.observe(batch_size)

    def on_routed_latencies(self, seconds: Iterable[float]) -> None:
        self.route_latency.observe_many(max(0.0, s) for s in seconds)

    def on_router_stalled(self, reason: str, stalled: bool) -> None:
        self.router_stalled.labels(reason).set(1 if stalled else 0)
        if stalled:
            self.router_stalls.labels(reason).inc()

    def on_router_bisected(self) -> None:
        self.router_bisections.inc()

    # delivery -----------------------------------------------------------------------------
    def on_attempt(self, city: str, outcome: str) -> None:
        self.attempts.labels(city, outcome).inc()

    def on_retry(self, city: str, reason: str) -> None:
        self.retries.labels(city, reason).inc()

    def on_delivered(self, city: str, latency_s: float) -> None:
        self.delivered.labels(city).inc()
        self.delivery_latency.labels(city).observe(max(0.0, latency_s))

    def on_delivery_dead_lettered(self, city: str, reason: str) -> None:
        self.delivery_dlq.labels(city, reason).inc()

    def on_delivery_internal_error(self, city: str) -> None:
        self.delivery_internal_errors.labels(city).inc()

    def on_outcome_write_failed(self, city: str, kind: str) -> None:
        self.delivery_write_failures.labels(city, kind).inc()

    def on_breaker(self, city: str, state: str) -> None:
        self.breaker_state.labels(city).set(BREAKER_STATES[state])
        self.breaker_transitions.labels(city, state).inc()

    def on_limiter_wait(self, city: str, seconds: float) -> None:
        self.limiter_wait.labels(city).inc(seconds)

    def on_rate_changed(self, city: str, rate_per_s: float) -> None:
        self.limiter_rate.labels(city).set(rate_per_s)

    def on_paused(self, city: str, paused: bool) -> None:
        self.paused.labels(city).set(1.0 if paused else 0.0)

    def on_client_certificate(self, city: str, not_after_s: float) -> None:
        self.client_certificate_expiry.labels(city).set(not_after_s)

    def watch_lag(self, component: str, snapshot: Callable[[], Mapping[str, int]]) -> None:
        self.lag.add(lambda: {k: float(v) for k, v in snapshot().items()}, component=component)

    def watch_oldest(self, snapshot: Callable[[], Mapping[str, float]]) -> None:
        self.oldest.add(snapshot)

    def watch_heartbeats(self, snapshot: Callable[[], Mapping[str, float]]) -> None:
        self.heartbeats.add(snapshot)

    def watch_calendar(self, unknown_days: Callable[[], float]) -> None:
        self.calendar_unknown.set_function(unknown_days)

    def on_case_update(self, city: str, outcome: str) -> None:
        self.case_updates.labels(city, outcome).inc()

    def on_case_dead_lettered(self, city: str, reason: str) -> None:
        self.case_dlq.labels(city, reason).inc()

    def on_case_callback(self, city: str, outcome: str) -> None:
        self.case_callbacks.labels(city, outcome).inc()

    def on_case_poll(self, city: str, outcome: str) -> None:
        self.case_polls.labels(city, outcome).inc()

    def on_case_result(self, city: str, outcome: str) -> None:
        self.case_results.labels(city, outcome).inc()

    def watch_cases(self, snapshot: Callable[[], Any]) -> None:
        self.cases.add(snapshot)
