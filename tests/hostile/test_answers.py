"""Hostile bureau answers against the real delivery engine: a real broker, a real (raw-socket)
misbehaving bureau on 127.0.0.1, the real connectors (Beijing, Hangzhou, Nanjing).

One deliverer serves the whole corpus at once (the cases share workers, so one case that
killed or stalled a worker would show in the others too). Each case is one escalation with a
script of answers, one per attempt; after the script the bureau answers normally. So:

* a *transient* misbehaviour (slow, trickled, truncated, reset, 5xx, HTML, a 200 we cannot
  read...) must end ACCEPTED, receipted exactly once, with one case opened at the bureau;
* an *irregular* answer (over the size cap, a success without a case number or with one out
  of its bounds, JSON nested so deep the parser gives up) and a permanent rejection end
  dead-lettered with a bounded reason and a REJECTED receipt, after one attempt;
* anything that makes the gateway itself raise (a year-10000 timestamp the connector cannot
  format) ends dead-lettered as ``internal_error``.

And whatever happened: the process is still running, every worker is alive, every escalation
has exactly one outcome and every commit point reached the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.config import Settings
from gateway.kafka.admin import Admin
from gateway.sdk import CASE_NUMBER_MAX_CHARS
from gateway.topics import Topics
from tests.hostile import answers_kit as kit
from tests.hostile.answers_kit import (
    Behaviour,
    HostileBureau,
    Outcome,
    Publisher,
    answer_with_case,
    dlq_header,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
YEAR_10000_MS = 253_402_300_800_000 + 86_400_000  # 10000-01-02T00:00:00Z
DEADLINE_S = kit.HOSTILE_CITY["deadline_s"]
CAP = kit.HOSTILE_CITY["max_answer_bytes"]


@dataclass
class Case:
    name: str
    city: str
    script: tuple[Behaviour, ...]
    expect: str
    """``accepted`` or the dead letter's reason"""
    fields: dict[str, Any] = field(default_factory=dict)
    receipt: bool = True
    """A REJECTED receipt goes with the dead letter (not for internal errors)."""
    attempts: int = 0
    """Attempts the bureau sees, when not one per scripted answer plus the good one."""


def _html(status: int) -> Behaviour:
    return kit.respond(
        status, b"<html><body><h1>Bad Gateway</h1></body></html>", {"Content-Type": "text/html"}
    )


CASES = [
    # -- transient: the escalation waits, then is accepted once --------------------------------
    Case("stalls past the deadline", "beijing", (kit.stall(DEADLINE_S + 3),), "accepted"),
    Case("trickles its body a byte per 100 ms", "beijing", (kit.trickle_body(0.1),), "accepted"),
    Case("trickles its headers", "hangzhou", (kit.trickle_headers(0.2),), "accepted"),
    Case("truncated body (Content-Length lies)", "beijing", (kit.truncated(),), "accepted"),
    Case("connection reset after the request", "nanjing", (kit.reset(),), "accepted"),
    Case("hangs up without a byte", "beijing", (kit.hang_up(),), "accepted"),
    Case("not HTTP at all", "hangzhou", (kit.garbage(b"HELLO THERE\r\n\r\n"),), "accepted"),
    Case("500 with an HTML page", "beijing", (_html(500),), "accepted"),
    Case("502 HTML, twice", "nanjing", (_html(502), _html(502)), "accepted"),
    Case(
        "503 with Retry-After",
        "beijing",
        (kit.respond(503, b"", {"Retry-After": "1"}),),
        "accepted",
    ),
    Case(
        "429 with an absurd Retry-After",
        "hangzhou",
        (kit.respond(429, b"", {"Retry-After": "999999999"}),),
        "accepted",
    ),
    Case("200 with an HTML body", "beijing", (_html(200),), "accepted"),
    Case(
        "200 with a non-UTF-8 body",
        "nanjing",
        (kit.respond(200, b"\xff\xfe\x00{\x93\xc3(", {"Content-Type": "text/plain"}),),
        "accepted",
    ),
    Case("200 with an empty body", "beijing", (kit.respond(200),), "accepted"),
    Case("200 with a JSON array", "hangzhou", (kit.respond(200, b"[1, 2, 3]"),), "accepted"),
    Case(
        "200 with a busy code in the body",
        "beijing",
        (kit.json_answer(200, lambda p: {"code": "9001", "msg": "busy"}),),
        "accepted",
    ),
    Case("401 (signature refused)", "hangzhou", (kit.respond(401, b"denied"),), "accepted"),
    Case(
        "redirect off the allowlist",
        "beijing",
        (kit.respond(302, b"", {"Location": "http://10.0.0.1/steal"}),),
        "accepted",
    ),
    Case(
        "gzip that is not gzip",
        "nanjing",
        (kit.respond(200, b"\x1f\x8bnot-really-gzip", {"Content-Encoding": "gzip"}),),
        "accepted",
    ),
    Case(
        "malformed chunked encoding",
        "beijing",
        (
            kit.garbage(
                kit.raw(200, b"", {"Content-Length": None, "Transfer-Encoding": "chunked"})
                + b"zz\r\nnot hex\r\n"
            ),
        ),
        "accepted",
    ),
    Case(
        "every failure once, then a good answer",
        "hangzhou",
        (kit.reset(), kit.hang_up(), _html(500), kit.truncated(), kit.respond(200, b"{")),
        "accepted",
    ),
    Case(
        "duplicate code with the case number",
        "beijing",
        (kit.duplicate("2001"),),
        "accepted",
        attempts=1,
    ),
    # -- irregular answers: dead letter irregular_answer, REJECTED receipt ----------------------
    Case(
        "200 without a case number",
        "nanjing",
        (answer_with_case(None),),
        "irregular_answer",
        attempts=1,
    ),
    Case(
        "200 with the case number as an object",
        "beijing",
        (answer_with_case({"no": "BJ-1"}),),
        "irregular_answer",
        attempts=1,
    ),
    Case(
        "JSON nested 30,000 deep",
        "hangzhou",
        (kit.respond(200, b"[" * 30_000 + b"]" * 30_000),),
        "irregular_answer",
        attempts=1,
    ),
    Case("300 KB case number", "beijing", (answer_with_case("9" * 300_000),), "irregular_answer"),
    Case(
        "case number one character over the bound",
        "hangzhou",
        (answer_with_case("H" * (CASE_NUMBER_MAX_CHARS + 1)),),
        "irregular_answer",
    ),
    Case(
        "case number with control characters",
        "nanjing",
        (answer_with_case("NJ-\x00\x07-1"),),
        "irregular_answer",
    ),
    Case(
        "50 MB answer",
        "beijing",
        (kit.huge_body(50 * 1024 * 1024),),
        "irregular_answer",
    ),
    Case(
        "50 MB answer without Content-Length",
        "hangzhou",
        (kit.huge_body(50 * 1024 * 1024, declare=False),),
        "irregular_answer",
    ),
    Case(
        "5 MB chunked answer",
        "nanjing",
        (kit.huge_body(5 * 1024 * 1024, chunked=True),),
        "irregular_answer",
    ),
    Case(
        "declares 1 GB and sends nothing",
        "beijing",
        (kit.declared_length(1 << 30),),
        "irregular_answer",
    ),
    # -- permanent rejections --------------------------------------------------------------
    Case(
        "200 with a business rejection code",
        "beijing",
        (kit.json_answer(200, lambda p: {"code": "3001", "msg": "outside jurisdiction"}),),
        "business_rule",
    ),
    Case("400 with a text body", "nanjing", (kit.respond(400, b"bad request"),), "http_400"),
    # -- the gateway itself raises: internal_error, the worker goes on -------------------------
    Case(
        "received in the year 10000",
        "beijing",
        (),
        "internal_error",
        fields={"received_at": YEAR_10000_MS},
        receipt=False,
    ),
]


@dataclass
class Corpus:
    settings: Settings
    bureau: HostileBureau
    deliverer: kit.Deliverer
    ids: dict[str, str]
    """case name -> escalation id"""
    outcome: Outcome
    alive_after: bool
    running_after: bool


@pytest.fixture(scope="module")
def corpus(kafka_bootstrap: str) -> Iterator[Corpus]:
    with kit.live(kafka_bootstrap) as live:
        publisher = Publisher(live.settings)
        ids: dict[str, str] = {}
        for case in CASES:
            esc = publisher.escalation(case.city, **case.fields)
            live.bureau.script(esc["escalation_id"], *case.script)
            ids[case.name] = publisher.publish(esc)
        publisher.close()
        expected = sum(1 + (c.receipt and c.expect != "accepted") for c in CASES)
        d = live.deliverer
        outcome = kit.read_outcomes(live.settings, expected, timeout_s=150)
        alive = d.workers_alive()
        running = d.thread.is_alive() and d.exit_code is None
        engine = d.app.engine
        assert engine is not None
        kit.wait_until(lambda: not engine.tracker.to_commit(), 10)
        yield Corpus(live.settings, live.bureau, d, ids, outcome, alive, running)


def test_corpus_has_at_least_25_answer_cases() -> None:
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_answer_ends_in_exactly_one_bounded_outcome(corpus: Corpus, case: Case) -> None:
    esc_id = corpus.ids[case.name]
    receipts = corpus.outcome.receipts.get(esc_id, [])
    dead = corpus.outcome.dead.get(esc_id, [])
    seen = corpus.bureau.seen[esc_id]
    if case.expect == "accepted":
        assert dead == [], f"dead-lettered: {[dlq_header(r, 'reason') for r in dead]}"
        assert [r["outcome"] for r in receipts] == ["ACCEPTED"]
        assert receipts[0]["case_number"] == corpus.bureau.cases[esc_id]
        assert corpus.bureau.opened.count(esc_id) == 1
        assert seen.attempts == (case.attempts or len(case.script) + 1)
        assert receipts[0]["attempts"] == seen.attempts
        return
    assert len(dead) == 1, f"{len(dead)} dead letters"
    assert dlq_header(dead[0], "reason") == case.expect
    assert dlq_header(dead[0], "stage") == "delivery"
    assert dlq_header(dead[0], "city") == case.city
    if case.attempts:
        assert seen.attempts == case.attempts
    assert esc_id not in corpus.bureau.opened
    if case.receipt:
        assert [(r["outcome"], r["reason"]) for r in receipts] == [("REJECTED", case.expect)]
        assert receipts[0]["case_number"] is None
    else:
        assert receipts == []


def test_trickled_answers_are_cut_at_the_deadline(corpus: Corpus) -> None:
    for name in ("trickles its body a byte per 100 ms", "trickles its headers"):
        cut = corpus.bureau.seen[corpus.ids[name]].cut_after_s
        assert len(cut) == 1, name
        assert cut[0] < DEADLINE_S + 1.0, f"{name}: the client hung up after {cut[0]:.1f}s"
    assert (
        corpus.deliverer.metric(
            "greenchannel_delivery_attempts_total", city="beijing", outcome="unavailable"
        )
        >= 1
    )


def test_huge_answers_are_not_read_to_the_end(corpus: Corpus) -> None:
    for name, size in (
        ("50 MB answer", 50 << 20),
        ("50 MB answer without Content-Length", 50 << 20),
    ):
        sent = corpus.bureau.seen[corpus.ids[name]].cut_after_s
        assert sent and sent[0] < size / 4, f"{name}: the bureau got to send {sent} bytes"
        dead = corpus.outcome.dead[corpus.ids[name]][0]
        assert "answer_too_large" in (dlq_header(dead, "message") or "")


def test_internal_errors_are_dead_lettered_with_class_and_masked_message(corpus: Corpus) -> None:
    year = corpus.outcome.dead[corpus.ids["received in the year 10000"]][0]
    assert dlq_header(year, "error-class") == "ValueError"
    assert "year 10000 is out of range" in (dlq_header(year, "message") or "")
    assert corpus.bureau.seen[corpus.ids["received in the year 10000"]].attempts == 0
    errors = sum(
        corpus.deliverer.metric("greenchannel_delivery_internal_errors_total", city=c)
        for c in kit.PROFILES
    )
    assert errors == sum(1 for c in CASES if c.expect == "internal_error")


def test_after_the_corpus_every_worker_lives_and_every_commit_point_is_at_the_end(
    corpus: Corpus,
) -> None:
    assert corpus.running_after, "the deliverer stopped"
    assert corpus.alive_after, "a delivery worker died"
    engine = corpus.deliverer.app.engine
    assert engine is not None
    assert engine.tracker.to_commit() == {}
    assert all(p.held_by() is None for p in engine.tracker.partitions.values())
    every = set(corpus.ids.values())
    finished = set(corpus.outcome.receipts) | set(corpus.outcome.dead)
    assert every <= finished, f"lost: {every - finished}"
    assert "" not in corpus.bureau.seen, "a request without an idempotency key"
    # the group's committed offsets, read from the broker, cover every record published
    with Admin(corpus.settings.kafka) as admin:
        assert kit.wait_until(
            lambda: _committed_per_topic(admin, corpus.settings) == _published_per_topic(corpus),
            20,
        ), (_committed_per_topic(admin, corpus.settings), _published_per_topic(corpus))


def _committed_per_topic(admin: Admin, settings: Settings) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (topic, _), offset in admin.group_offsets(settings.delivery.group_id).items():
        totals[topic] = totals.get(topic, 0) + offset
    return totals


def _published_per_topic(corpus: Corpus) -> dict[str, int]:
    topics = Topics(corpus.settings.topics.prefix)
    totals: dict[str, int] = {}
    for case in CASES:
        topic = topics.escalations(case.city)
        totals[topic] = totals.get(topic, 0) + 1
    return totals


def test_a_dead_letter_over_the_topic_limit_is_cut_and_the_others_go_on(
    kafka_bootstrap: str,
) -> None:
    """Issue 9, findings 2 and 7 (delivery side): an outcome the broker would refuse for its
    size (here a ~150 KB escalation rejected by the bureau, its dead-letter topic limited to
    64 KB) used to stop the process (and, sent as is, would make kafka-python's idempotent
    producer fail every later send). Now its dead letter is cut to fit, says so, and the other
    cities' escalations are delivered."""
    with kit.live(kafka_bootstrap, dlq_max_bytes=64 * 1024) as live:
        publisher = Publisher(live.settings)
        big = publisher.escalation("beijing", description="投诉" * 25_000)  # ~150 KB of UTF-8
        live.bureau.script(
            big["escalation_id"],
            kit.json_answer(200, lambda p: {"code": "3001", "msg": "outside jurisdiction"}),
        )
        big_id = publisher.publish(big)
        publisher.flush()
        d = live.deliverer
        assert kit.wait_until(lambda: live.bureau.seen[big_id].attempts >= 1, 60)
        others = [publisher.publish(publisher.escalation(c)) for c in ("hangzhou", "nanjing") * 3]
        publisher.close()
        outcome = kit.read_outcomes(live.settings, len(others) + 2, timeout_s=90)
        assert all([r["outcome"] for r in outcome.receipts[k]] == ["ACCEPTED"] for k in others)
        [dead] = outcome.dead.get("key:" + big["complaint_id"], []) or [None]
        assert dead is not None, "no dead letter for the oversized escalation"
        assert dlq_header(dead, "reason") == "business_rule"
        assert dlq_header(dead, "truncated")
        size = int(dlq_header(dead, "value-bytes") or 0)
        assert size > 64 * 1024 and len(dead.value or b"") <= 1024
        assert [r["outcome"] for r in outcome.receipts[big_id]] == ["REJECTED"]
        assert big_id not in outcome.dead
        assert d.thread.is_alive() and d.exit_code is None and d.workers_alive()
        assert (
            d.metric(
                "greenchannel_delivery_write_failures_total", city="beijing", kind="dead_letter"
            )
            == 0
        )


def test_well_formed_answers_missing_the_case_number_or_too_deep_are_irregular(
    corpus: Corpus,
) -> None:
    for name, reason in (
        ("200 without a case number", "missing_case_number"),
        ("200 with the case number as an object", "missing_case_number"),
        ("JSON nested 30,000 deep", "answer_too_deep"),
    ):
        dead = corpus.outcome.dead[corpus.ids[name]][0]
        assert dlq_header(dead, "error-class") == "RejectedByBureau", name
        assert reason in (dlq_header(dead, "message") or ""), name
