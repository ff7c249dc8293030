"""All ten cities through to closure under time-warp, on the real broker and real HTTP.

The delivery engine delivers escalations to the simulated bureaus; each bureau moves its cases
through the lifecycle (``gateway/dev/bureau_lifecycle.py``) and either calls the gateway's
receiver back (JSON+HMAC and form+SM3 cities) or answers its polls (SOAP and OAuth2 cities);
the intake, the keeper, the receivers and the poller run in one gateway App. Knobs: repeated
callbacks, swapped (out-of-order) events, polls that overlap, an impossible report after
closure. Every state change the bureaus emitted is either applied exactly once or dead-lettered
with its reason; none is lost, none applied twice.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.app import App
from gateway.avro.codec import Codec
from gateway.cases.machine import Status
from gateway.config import Settings
from gateway.dev.bureau_lifecycle import BureauLifecycle, LifecyclePlan
from gateway.dev.bureaus import BureauSimulator
from gateway.ops.metrics import Metrics
from tests.cases.kit import records_of, wait_for
from tests.conftest import TopicFactory
from tests.helpers import header
from tests.integration.delivery_kit import EscalationStream, delivery_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

CITIES = ["beijing", "guangzhou", "shenzhen", "chongqing", "hangzhou", "hefei", "nanchang",
          "suzhou", "wuhu", "nanjing"]  # fmt: skip
WORD = {"accepted": "ACCEPTED", "returned": "RETURNED", "negotiating": "NEGOTIATION",
        "mediating": "MEDIATION", "closed": "CLOSED"}  # fmt: skip
PER_CITY = 2


def _plan(city: str) -> LifecyclePlan:
    knobs: dict[str, Any] = {"time_warp": 400_000.0, "return_ratio": 0.2, "mediate_ratio": 0.3}
    if city in ("beijing", "hefei", "wuhu"):
        knobs["repeat_ratio"] = 1.0  # every callback sent twice
    if city == "nanjing":
        knobs["reorder_ratio"] = 1.0  # first two events delivered swapped
        knobs["return_ratio"] = 0.0
    if city in ("guangzhou", "suzhou"):
        knobs["overlap"] = 3  # polls re-serve the last three events
    if city == "hangzhou":
        knobs["impossible_ratio"] = 1.0  # "returned" after closing
        knobs["return_ratio"] = 0.0
    return LifecyclePlan(**knobs)


def test_ten_cities_to_closure_with_repeats_reorders_overlaps_and_an_impossible_report(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    sim: BureauSimulator,
    tls_dir: Path,
) -> None:
    topic_factory.create_all()
    prefix = topic_factory.prefix
    inbound = {"inbound": {"poll_interval_s": 0.2}}
    settings = delivery_settings(
        settings_factory, sim, tls_dir, prefix, **{c: inbound for c in CITIES}
    )
    settings = settings.model_copy(
        update={
            "cases": settings.cases.model_copy(
                update={
                    "intake_group_id": f"{prefix}intake",
                    "keeper_group_id": f"{prefix}keeper",
                    "results_group_id": f"{prefix}results",
                    "poller_transactional_id": f"{prefix}poller",
                }
            )
        }
    )
    registry = CollectorRegistry()
    app = App(settings, route=False, deliver=True, keep_cases=True, metrics=Metrics(registry))
    thread = threading.Thread(target=lambda: app.run(shutdown_timeout_s=10, with_ops=False))
    thread.start()
    lifecycles: dict[str, BureauLifecycle] = {}
    try:
        wait_for(lambda: all(app.ready().values()), 90, "the gateway's loops ready")
        assert app.receivers is not None
        for i, city in enumerate(CITIES):
            conf = settings.cities[city].credentials
            url = app.receivers.url(city) if city in app.receivers.receivers else None
            lifecycles[city] = BureauLifecycle(
                sim.city(city),
                (conf.client_id, conf.resolved_secret()),
                _plan(city),
                callback_url=url,
                seed=100 + i,
            ).start()
        stream = EscalationStream(settings, seed=7)
        stream.publish_many(CITIES, PER_CITY)
        stream.close()
        expected = {s.escalation_id for s in stream.sent}

        def all_final() -> bool:
            states = {eid: app_state(app, eid) for eid in expected}
            done = all(
                s is not None and s["state"] in ("CLOSED", "RETURNED") for s in states.values()
            )
            return done and all(lc.finished() for lc in lifecycles.values())

        wait_for(all_final, 240, "every case closed or returned")
        # let late repeats and the impossible reports arrive and be judged
        emitted = {(e.key, WORD[e.status]) for lc in lifecycles.values() for e in lc.events()}
        codec = Codec(settings.codec)

        def judged() -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
            applied = [
                (u["escalation_id"], u["state"])
                for u in (
                    codec.decode_as("case_update", r.value)
                    for r in records_of(topic_factory.bootstrap, topic_factory.topics.case_updates)
                )
                if u["source"] in ("CALLBACK", "POLL")
            ]
            dead = [
                (u["escalation_id"], u["state"], header(r, "gc-dlq-reason") or "")
                for r in records_of(topic_factory.bootstrap, topic_factory.topics.dlq_cases)
                for u in [codec.decode_as("case_update", r.value)]
            ]
            return applied, dead

        def accounted() -> bool:
            applied, dead = judged()
            return {(e, s) for e, s in applied} | {(e, s) for e, s, _ in dead} >= emitted

        wait_for(accounted, 60, "every emitted state change applied or dead-lettered")
        applied, dead = judged()
        finals = [app_state(app, e) for e in expected]
        case_gauge = {
            (sample.labels["city"], sample.labels["state"]): sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "greenchannel_cases"
        }
        # Handling results back to every bureau; two of them answer 5xx until the others'
        # results are receipted, so their deliveries are retried. Each result must reach its bureau once, with a receipt.
        # callback cities: only the result deliveries reach their bureaus now (no polls)
        faulty = ("beijing", "hefei")
        for city in faulty:
            sim.city(city).set_faults(error_5xx_ratio=1.0)
        results = publish_results(settings, codec, [s for s in finals if s is not None])
        wait_for(
            lambda: all(sim.city(c).counters().get("server_errors", 0) >= 2 for c in faulty),
            60,
            "the faulty bureaus refusing the first attempts",
        )
        # one city's trouble holds only that city's results: the other eight are receipted
        # while both faulty bureaus still refuse
        healthy = {r["escalation_id"] for r in results if r["city"] not in faulty}

        def receipted() -> set[str]:
            return {
                codec.decode_as("receipt", r.value)["escalation_id"]
                for r in records_of(topic_factory.bootstrap, topic_factory.topics.result_receipts)
            }

        wait_for(lambda: receipted() >= healthy, 60, "the healthy cities' results receipted")
        assert not receipted() & {r["escalation_id"] for r in results if r["city"] in faulty}
        for city in faulty:
            sim.city(city).reset_faults()
        wait_for(
            lambda: (
                len(records_of(topic_factory.bootstrap, topic_factory.topics.result_receipts))
                >= len(results)
            ),
            120,
            "a receipt for every handling result",
        )
        receipts = records_of(topic_factory.bootstrap, topic_factory.topics.result_receipts)
        stored = {c: dict(lc.results) for c, lc in lifecycles.items()}
    finally:
        for lc in lifecycles.values():
            lc.stop()
        app.stop.set()
        thread.join(60)

    # exactly once: no state change twice on the updates topic
    twice = [k for k, n in Counter(applied).items() if n > 1]
    assert twice == []
    # nothing lost: every emitted change is applied or dead-lettered (not both)
    assert {(e, s) for e, s in applied} | {(e, s) for e, s, _ in dead} == emitted
    assert not ({(e, s) for e, s in applied} & {(e, s) for e, s, _ in dead})
    reasons = Counter(r for _, _, r in dead)
    # nanjing's swapped first pair (negotiation before acceptance), hangzhou's "returned"
    # after closure
    assert reasons["out_of_order"] >= PER_CITY, reasons
    assert reasons["impossible_transition"] >= PER_CITY, reasons
    assert set(reasons) <= {"out_of_order", "impossible_transition"}, reasons
    # every case in every city reached a final state, with its deadlines
    assert all(s is not None and s["state"] in ("CLOSED", "RETURNED") for s in finals)
    assert {s["city"] for s in finals if s is not None} == set(CITIES)
    for s in finals:
        assert s is not None and s["case_number"]
        states = [t["state"] for t in s["transitions"]]
        assert len(states) == len(set(states))
        assert states[:2] == [Status.ESCALATED, Status.RECEIVED]
        acceptance = [d for d in s["deadlines"] if d["limit"] == "ACCEPTANCE"]
        assert len(acceptance) == 1 and acceptance[0]["met_at"] is not None
        assert acceptance[0]["due_at"] > acceptance[0]["started_at"]
    # the SLA view counts every case once, in its final state
    assert sum(case_gauge.values()) == len(expected)
    assert {state for _, state in case_gauge} <= {"CLOSED", "RETURNED"}
    # results: one receipt each, each stored once by its bureau, retries where 5xx were injected
    decoded = [codec.decode_as("receipt", r.value) for r in receipts]
    assert len(decoded) == len(results)
    assert {r["escalation_id"] for r in decoded} == {r["escalation_id"] for r in results}
    for r in results:
        assert r["result_id"] in stored[r["city"]], r["city"]
    assert sum(len(v) for v in stored.values()) == len(results)
    for city in faulty:
        retried = sum(
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "greenchannel_delivery_retries_total"
            and sample.labels.get("city") == city
        )
        assert retried > 0, city
    assert registry.get_sample_value(
        "greenchannel_case_results_total", {"city": "hefei", "outcome": "accepted"}
    ) == float(PER_CITY)
    callbacks = registry.get_sample_value(
        "greenchannel_case_callbacks_total", {"city": "beijing", "outcome": "ok"}
    )
    assert callbacks and callbacks >= 2 * PER_CITY  # repeats were answered ok, then deduped
    duplicates = sum(
        registry.get_sample_value(
            "greenchannel_case_updates_total", {"city": c, "outcome": "duplicate"}
        )
        or 0.0
        for c in ("beijing", "guangzhou", "suzhou")
    )
    assert duplicates > 0
    polls = registry.get_sample_value(
        "greenchannel_case_polls_total", {"city": "shenzhen", "outcome": "ok"}
    )
    assert polls and polls > 0


def publish_results(
    settings: Settings, codec: Codec, states: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    import time
    import uuid

    from gateway.kafka.clients import Producer
    from gateway.topics import Topics

    now = int(time.time() * 1000)
    results = [
        {
            "result_id": str(uuid.uuid5(uuid.NAMESPACE_URL, s["escalation_id"])),
            "escalation_id": s["escalation_id"],
            "complaint_id": s["complaint_id"],
            "city": s["city"],
            "case_number": s["case_number"],
            "contacted_at": now - 3_600_000,
            "method": "PHONE",
            "settled": s.get("closure") == "SETTLED",
            "refund_fen": 12_900,
            "compensation_fen": None,
            "satisfaction": "SATISFIED",
            "note": "已电话联系消费者，协商退款",
            "reported_at": now,
        }
        for s in states
    ]
    producer = Producer(settings.kafka)
    topic = Topics(settings.topics.prefix).results
    for r in results:
        producer.send(topic, codec.encode("handling_result", r), key=r["escalation_id"].encode())
    producer.flush(30)
    producer.close()
    return results


def app_state(app: App, escalation_id: str) -> dict[str, Any] | None:
    from gateway.cases.keeper import CaseKeeper

    keeper = next(loop for loop in app.case_loops if isinstance(loop, CaseKeeper))
    return keeper.state_of(escalation_id)
