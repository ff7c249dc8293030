"""A Quix Streams exactly-once app doing the router's routing, for bench/route.py.

Per complaint, as the router: decode the Avro single-object record with the gateway's codec,
validate it, classify it with the gateway's compiled rules (``Classifier.classify``), send the
original bytes to the department or desk topic of the decision with the router's headers, and
for a major complaint of a green-channel city also an encoded escalation
(``build_escalation``) to that city's escalation topic. What is not routing (dead letters, size
limits, timestamp bounds, metrics) is left out: the benchmark's input is all valid.

``processing_guarantee="exactly-once"``: the app's producer is transactional and each
checkpoint commits outputs and offsets together, every ``--commit-every`` records (8,000, the
router's batch) or ``--commit-interval`` seconds (Quix's default 5 s), whichever comes first.

Quix Streams needs an older pydantic and confluent-kafka than the gateway's lock
(constraints.txt), so it has its own environment: ``make bench-venv`` (``.venv-bench``, the
``bench`` extra, pinned by ``constraints-bench.txt``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from bench.peers import REPO, Job, Prepared, Unavailable, python_module

COMMIT_EVERY = 8_000
COMMIT_INTERVAL_S = 5.0
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"


class Out(NamedTuple):
    topic: str
    value: bytes
    headers: list[tuple[str, bytes]]


_PROBE = (
    "import gateway, quixstreams, confluent_kafka as c; "
    "print(f'quixstreams {quixstreams.__version__}, confluent-kafka {c.__version__}, "
    "librdkafka {c.libversion()[0]}')"
)


def quix_python() -> tuple[str, str]:
    """An interpreter that has quixstreams (this one, else ``.venv-bench``'s), and versions."""
    for python in (sys.executable, str(BENCH_PYTHON)):
        if not Path(python).exists():
            continue
        probe = subprocess.run(
            [python, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return python, probe.stdout.strip()
    raise Unavailable("quixstreams is not installed here nor in .venv-bench (make bench-venv)")


def prepare(tmp: Path) -> Prepared:
    python, version = quix_python()

    def start(job: Job) -> subprocess.Popen[bytes]:
        args = ["--bootstrap", job.bootstrap, "--prefix", job.topics.prefix, "--group", job.group]
        return python_module(job, __name__, [*args, "--state-dir", str(job.tmp)], python)

    return Prepared(start, version)


def router_of(prefix: str) -> Callable[[bytes], list[Out]]:
    """complaint bytes -> the router's outputs (topic, value, headers), with its rules."""
    from gateway.avro.codec import Codec, validate_complaint
    from gateway.cities import city_key
    from gateway.config import load_settings
    from gateway.routing.escalation import build_escalation
    from gateway.routing.rules import load_rules
    from gateway.topics import Topics

    settings = load_settings()
    codec, classifier, topics = Codec(settings.codec), load_rules(), Topics(prefix)
    green, days = frozenset(settings.router.green_cities), settings.router.handling_days
    targets = {
        d: topics.desk(d.desk) if d.desk is not None else topics.department(d.department)
        for d in classifier.decisions
    }

    def route(value: bytes) -> list[Out]:
        complaint: dict[str, Any] = codec.decode_as("complaint", value)
        validate_complaint(complaint)
        decision = classifier.classify(complaint)
        rule = ("gc-rule", decision.rule_id.encode())
        if not decision.major:
            return [Out(targets[decision], value, [rule])]
        city = city_key(complaint["city_code"]) or ""
        handling = b"escalated" if city in green else b"manual"
        outs = [
            Out(
                targets[decision],
                value,
                [rule, ("gc-handling", handling), ("gc-city", city.encode())],
            )
        ]
        if city in green:
            now = int(time.time() * 1000)
            escalation = build_escalation(
                complaint, city=city, rule_id=decision.rule_id, now_ms=now, working_days=days
            )
            topic = topics.escalations(city)
            headers = [rule, ("gc-escalation-id", str(escalation["escalation_id"]).encode())]
            outs.append(Out(topic, codec.encode("escalation", escalation, topic), headers))
        return outs

    return route


def main() -> None:
    from quixstreams import Application
    from quixstreams.models.serializers import SerializationContext, Serializer

    from gateway.cities import GREEN_CHANNEL
    from gateway.topics import Department, Desk, Topics

    class OutValue(Serializer):
        """The value of an :class:`Out` (already bytes: the original or an encoded escalation)."""

        def __call__(self, value: Out, ctx: SerializationContext) -> bytes:
            return value.value

    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", default=tempfile.gettempdir())
    ap.add_argument("--commit-every", type=int, default=COMMIT_EVERY)
    ap.add_argument("--commit-interval", type=float, default=COMMIT_INTERVAL_S)
    args = ap.parse_args()
    topics = Topics(args.prefix)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        processing_guarantee="exactly-once",
        commit_every=args.commit_every,
        commit_interval=args.commit_interval,
        auto_offset_reset="earliest",
        auto_create_topics=False,
        use_changelog_topics=False,
        state_dir=Path(args.state_dir) / f"quix-{args.group}",
        loglevel="WARNING",
        consumer_extra_config={
            "isolation.level": "read_committed",
            "fetch.max.bytes": 8_000 * 800,
            "max.partition.fetch.bytes": 1024 * 1024,
        },
        producer_extra_config={
            "linger.ms": 500,
            "batch.size": 256 * 1024,
            "message.max.bytes": 4 * 1024 * 1024,
            "retry.backoff.ms": 10,
        },
    )
    names = [
        topics.department(Department.CONSUMER_PROTECTION),
        topics.department(Department.CUSTOMER_SERVICE),
        *(topics.desk(d) for d in Desk),
        *(topics.escalations(c.key) for c in GREEN_CHANNEL),
    ]
    outputs = {n: app.topic(n, key_serializer="bytes", value_serializer=OutValue()) for n in names}
    source = app.topic(topics.complaints, key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(source).apply(router_of(args.prefix), expand=True)
    sdf = sdf.set_headers(lambda value, key, timestamp, headers: value.headers)
    sdf.to_topic(lambda value, key, timestamp, headers: outputs[value.topic])
    app.run()


if __name__ == "__main__":
    main()
