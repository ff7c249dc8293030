"""The soak's independent ledger: what was published, what came out, and the verdict.

It reads every output topic with its own consumer (``read_committed``, a group of its own that
never commits), keyed by what it recorded at publish time, and judges with its own rules, not
the gateway's: receipts are decoded with fastavro straight from ``schemas/receipt.avsc``, the
expectation of an escalation comes from the sample generator's own ``major`` flag, and bureau
cases come from the simulator's admin API. A record is counted once per (topic, partition,
offset), so a re-created consumer that reads a partition again does not invent duplicates: two
copies in the log at different offsets are real duplicates.

Verdict (:meth:`Ledger.verdict`):

* every published complaint (and every poison record) is in exactly one department/desk topic
  or the complaint dead-letter topic, exactly once;
* every major complaint of a green-channel city has exactly one escalation;
* every escalation that exists has a final outcome: a receipt, or a dead letter;
* no bureau case twice for one escalation id, receipts agree with the bureau's case number,
  and no bureau case is without a receipt;
* nothing stuck: the router's and the deliverer's groups at lag 0 (checked by the caller).
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from gateway.config import KafkaSettings
from gateway.kafka.clients import Consumer, Record, TopicPartition
from gateway.topics import Department, Desk, Topics

REPO = Path(__file__).resolve().parent.parent
RECEIPT_SCHEMA = fastavro.parse_schema(
    json.loads((REPO / "schemas" / "receipt.avsc").read_text(encoding="utf-8"))
)


def decode_receipt(value: bytes) -> dict[str, Any]:
    """A receipt in single-object (``C3 01`` + 8-byte fingerprint) or Confluent framing."""
    if value[:2] == b"\xc3\x01":
        body = value[10:]
    elif value[:1] == b"\x00":
        body = value[5:]
    else:
        raise ValueError("unknown framing")
    out = fastavro.schemaless_reader(io.BytesIO(body), RECEIPT_SCHEMA, None)
    assert isinstance(out, dict)
    return out


@dataclass
class Expected:
    """What the publisher recorded for one acknowledged record."""

    kind: str
    """major-green, major-other, general, desk, or poison-<kind>"""
    city: str | None = None


@dataclass
class Seen:
    """What the ledger read, per complaint key and per escalation."""

    routed: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    dlq_reasons: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    escalations: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    """(city, complaint id) -> escalation ids seen (one per copy)"""
    receipts: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    """escalation id -> receipts"""
    esc_dlq: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """escalation id -> dead-letter reasons"""
    undecodable_receipts: int = 0


class Ledger:
    """Reads all outputs on a thread while the soak runs; judges at the end."""

    def __init__(self, kafka: KafkaSettings, topics: Topics, cities: list[str]) -> None:
        self.kafka, self.topics, self.cities = kafka, topics, cities
        self.expected: dict[str, Expected] = {}
        self.publish_failed: set[str] = set()
        self.seen = Seen()
        self.read_errors = 0
        self._hw: dict[TopicPartition, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)
        t = topics
        self.routed_topics = {
            t.department(Department.CONSUMER_PROTECTION): "consumer-protection",
            t.department(Department.CUSTOMER_SERVICE): "customer-service",
        } | {t.desk(d): f"desk-{d.value}" for d in Desk}
        self.escalation_topics = {t.escalations(c): c for c in cities}

    # --- publishing side -------------------------------------------------------------------

    def published(self, key: str, expected: Expected) -> None:
        with self._lock:
            self.expected[key] = expected
            self.publish_failed.discard(key)

    def failed(self, key: str) -> None:
        with self._lock:
            if key not in self.expected:
                self.publish_failed.add(key)

    # --- reading side ----------------------------------------------------------------------

    def start(self) -> Ledger:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def data_end(self, tp: TopicPartition) -> int:
        """One past the last data record read from ``tp`` (0 before any)."""
        return self._hw.get(tp, 0)

    def all_topics(self) -> list[str]:
        t = self.topics
        extra = [t.receipts, t.dlq_complaints, t.dlq_escalations]
        return [*self.routed_topics, *self.escalation_topics, *extra]

    def _consumer(self) -> Consumer:
        return Consumer(
            self.kafka,
            group_id=f"soak-ledger-{uuid.uuid4().hex[:8]}",
            topics=self.all_topics(),
            read_committed=True,
            max_poll_records=2000,
        )

    def _run(self) -> None:
        consumer: Consumer | None = None
        while not self._stop.is_set():
            try:
                if consumer is None:  # a new one reads from the start: _take skips what it has
                    consumer = self._consumer()
                for record in consumer.poll(500):
                    self._take(record)
            except Exception:  # the broker is restarting or frozen: read again later
                self.read_errors += 1
                if consumer is not None:
                    with contextlib.suppress(Exception):  # a broken one is dropped either way
                        consumer.close(2000)
                consumer = None
                self._stop.wait(2.0)
        if consumer is not None:
            consumer.close(2000)

    def _take(self, r: Record) -> None:
        tp = r.tp
        if r.offset < self._hw.get(tp, 0):
            return  # read again after a re-created consumer
        self._hw[tp] = r.offset + 1
        key = (r.key or b"").decode("utf-8", "replace")
        s = self.seen
        with self._lock:
            if r.topic in self.routed_topics:
                s.routed[key][self.routed_topics[r.topic]] += 1
            elif r.topic in self.escalation_topics:
                esc_id = (r.header("gc-escalation-id") or b"").decode()
                s.escalations[(self.escalation_topics[r.topic], key)].append(esc_id)
            elif r.topic == self.topics.dlq_complaints:
                s.dlq_reasons[key].append(_h(r, "gc-dlq-reason"))
            elif r.topic == self.topics.dlq_escalations:
                s.esc_dlq[_h(r, "gc-escalation-id")].append(_h(r, "gc-dlq-reason"))
            elif r.topic == self.topics.receipts:
                try:
                    receipt = decode_receipt(r.value or b"")
                except Exception:
                    s.undecodable_receipts += 1
                    return
                s.receipts[str(receipt["escalation_id"])].append(receipt)

    # --- the verdict -----------------------------------------------------------------------

    def verdict(self, bureau_cases: dict[str, list[dict[str, Any]]]) -> Verdict:
        with self._lock:
            return judge(self.expected, self.publish_failed, self.seen, bureau_cases)


def _h(r: Record, name: str) -> str:
    return (r.header(name) or b"").decode("utf-8", "replace")


@dataclass
class Verdict:
    figures: dict[str, Any]
    problems: dict[str, list[str]]
    """lost / duplicated / conflicting / unexpected -> examples (keys)"""

    def count(self, kind: str) -> int:
        return int(self.figures.get(f"{kind}_total", 0))

    @property
    def ok(self) -> bool:
        return all(self.count(k) == 0 for k in ("lost", "duplicated"))


def judge(
    expected: dict[str, Expected],
    publish_failed: set[str],
    seen: Seen,
    bureau_cases: dict[str, list[dict[str, Any]]],
) -> Verdict:
    problems: dict[str, list[str]] = defaultdict(list)
    f: dict[str, Any] = {}
    kinds = Counter(e.kind for e in expected.values())
    f["published"] = dict(sorted(kinds.items()))
    f["published_total"] = len(expected)
    f["publish_failed"] = len(publish_failed)

    # 1. every record routed exactly once, or dead-lettered
    routed_once = dlq_once = 0
    for key, exp in expected.items():
        outs = sum(seen.routed.get(key, Counter()).values()) + len(seen.dlq_reasons.get(key, []))
        if outs == 0:
            problems["lost: complaint neither routed nor dead-lettered"].append(
                f"{key} ({exp.kind})"
            )
        elif outs > 1:
            problems["duplicated: complaint routed/dead-lettered more than once"].append(key)
        elif key in seen.routed:
            routed_once += 1
        else:
            dlq_once += 1
    known = set(expected) | publish_failed
    for key in set(seen.routed) | set(seen.dlq_reasons):
        if key not in known:
            problems["unexpected: output for a key never published"].append(key)
    f["routed"] = routed_once
    f["routed_by_topic"] = dict(sorted(sum(seen.routed.values(), Counter()).items()))
    f["dead_lettered"] = dlq_once
    f["dead_lettered_by_reason"] = dict(
        sorted(Counter(r for rs in seen.dlq_reasons.values() for r in rs).items())
    )
    f["dead_lettered_poison"] = sum(
        1 for k, e in expected.items() if e.kind.startswith("poison") and k in seen.dlq_reasons
    )

    # 2. every major complaint of a green-channel city has exactly one escalation
    for key, exp in expected.items():
        if exp.kind != "major-green":
            continue
        copies = len(seen.escalations.get((exp.city or "", key), []))
        if copies == 0 and key not in seen.dlq_reasons:
            problems["lost: major green-channel complaint without an escalation"].append(key)
        elif copies > 1:
            problems["duplicated: escalation published more than once"].append(key)
    majors_green = sum(1 for e in expected.values() if e.kind == "major-green")
    escalation_ids = {ids[0]: city for (city, _), ids in seen.escalations.items() if ids}
    f["escalations_expected"] = majors_green
    f["escalations"] = len(escalation_ids)
    unexpected = [
        key
        for (city, key) in seen.escalations
        if expected.get(key, Expected("")).kind not in ("major-green",)
        and not expected.get(key, Expected("")).kind.startswith("poison")
    ]
    f["escalations_not_expected"] = len(unexpected)

    # 3. every escalation receipted or dead-lettered; receipts agree with one another
    receipted = dlq_esc = repeated = 0
    for esc_id in escalation_ids:
        receipts = seen.receipts.get(esc_id, [])
        if not receipts and not seen.esc_dlq.get(esc_id):
            problems["lost: escalation neither receipted nor dead-lettered"].append(esc_id)
            continue
        if receipts:
            receipted += 1
        else:
            dlq_esc += 1
        repeated += max(0, len(receipts) - 1)
        numbers = {r["case_number"] for r in receipts if r["outcome"] == "ACCEPTED"}
        if len(numbers) > 1:
            problems["duplicated: receipts with different case numbers"].append(esc_id)
    f["receipted"] = receipted
    f["receipts_accepted"] = sum(
        1 for rs in seen.receipts.values() for r in rs if r["outcome"] == "ACCEPTED"
    )
    f["receipts_rejected"] = sum(
        1 for rs in seen.receipts.values() for r in rs if r["outcome"] != "ACCEPTED"
    )
    f["receipts_repeated"] = repeated
    f["escalations_dead_lettered_only"] = dlq_esc
    f["escalations_dead_lettered_by_reason"] = dict(
        sorted(Counter(r for rs in seen.esc_dlq.values() for r in rs).items())
    )
    f["undecodable_receipts"] = seen.undecodable_receipts

    # 4. bureau cases: one per escalation id, matching the receipts
    cases = 0
    by_key: dict[str, list[str]] = defaultdict(list)
    for city_cases in bureau_cases.values():
        for case in city_cases:
            by_key[case["key"]].append(case["case_number"])
            cases += 1
    f["bureau_cases"] = cases
    for key, case_numbers in by_key.items():
        if len(case_numbers) > 1:
            problems["duplicated: bureau case created twice"].append(key)
        accepted = {
            r["case_number"] for r in seen.receipts.get(key, []) if r["outcome"] == "ACCEPTED"
        }
        if not accepted:
            problems["lost: bureau case without a receipt"].append(key)
        elif not accepted <= set(case_numbers):
            problems["duplicated: receipt case number differs from the bureau's"].append(key)
        if key not in escalation_ids:
            problems["unexpected: bureau case for an unknown escalation"].append(key)

    for kind in ("lost", "duplicated", "unexpected"):
        f[f"{kind}_total"] = sum(len(v) for k, v in problems.items() if k.startswith(kind))
    return Verdict(f, dict(problems))


def wait_quiet(ledger: Ledger, idle_s: float, timeout_s: float) -> None:
    """Until the ledger read nothing new for ``idle_s`` (or ``timeout_s`` passed)."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_total = sum(ledger._hw.values())
        if now_total != last:
            last, since = now_total, time.monotonic()
        elif time.monotonic() - since >= idle_s:
            return
        time.sleep(0.5)
