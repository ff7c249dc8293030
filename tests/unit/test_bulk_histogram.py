"""The router's batch-fed latency histogram must expose what prometheus-client's would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway.ops.metrics import LATENCY_BUCKETS, Metrics, _BulkHistogram


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    ]


def test_bulk_histogram_exposes_the_same_samples_as_prometheus_client() -> None:
    values = [0.0, 0.005, 0.0051, 0.3, 1.0, 3600.0, 5000.0, 0.01, 2.5, 0.049]
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("x_seconds", "help", buckets=LATENCY_BUCKETS, registry=theirs)
    bulk = _BulkHistogram("x_seconds", "help", LATENCY_BUCKETS)
    ours.register(bulk)
    for v in values:
        reference.observe(v)
    bulk.observe_many(values[:4])
    bulk.observe_many(values[4:])
    assert _exposition(ours) == _exposition(theirs)


def test_router_latencies_are_counted_per_bucket_and_negative_clock_skew_is_zero() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.on_routed_latencies([0.02, 0.02, 0.7, -0.5])
    value = registry.get_sample_value
    assert value("greenchannel_router_latency_seconds_bucket", {"le": "0.005"}) == 1
    assert value("greenchannel_router_latency_seconds_bucket", {"le": "0.025"}) == 3
    assert value("greenchannel_router_latency_seconds_bucket", {"le": "1.0"}) == 4
    assert value("greenchannel_router_latency_seconds_count") == 4
    assert value("greenchannel_router_latency_seconds_sum") == 0.74
