"""kcat (librdkafka) and Kafka's Java console consumer against the running router.

kcat produces complaints (single-object Avro, one file per message; half of them in kcat's own
transactions) that the gateway routes; kcat then reads every output topic with
``isolation.level=read_committed`` and Kafka's console consumer reads the department and
escalation topics with their headers.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from gateway.avro.codec import Codec
from gateway.config import Settings
from gateway.dev.samples import SampleFactory
from gateway.topics import Department, Desk
from tests.conftest import TopicFactory
from tests.helpers import read_all
from tests.interop.conftest import CONSOLE_CONSUMER, JavaTools
from tests.interop.kit import running_gateway

CITIES = ["beijing", "hefei"]


def kcat_produce(
    kcat: str, bootstrap: str, topic: str, key: str, path: Path, txn: str | None
) -> None:
    args = [kcat, "-P", "-b", bootstrap, "-t", topic, "-k", key, "-H", "origin=kcat"]
    if txn is not None:
        args += ["-X", f"transactional.id={txn}"]
    done = subprocess.run(
        [*args, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def kcat_consume(kcat: str, bootstrap: str, topic: str) -> list[tuple[str, str, dict[str, str]]]:
    """(key, value size, headers) of every committed record of ``topic``."""
    done = subprocess.run(
        [
            kcat,
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-X",
            "isolation.level=read_committed",
            "-f",
            "%k\t%S\t%h\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = []
    for line in done.stdout.splitlines():
        key, size, headers = line.split("\t")
        pairs = dict(h.split("=", 1) for h in headers.split(",") if h)
        out.append((key, size, pairs))
    return out


def test_kcat_and_java_console_consumer(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    kcat: str,
    java_tools: JavaTools,
    tmp_path: Path,
) -> None:
    topic_factory.create_all(CITIES)
    t = topic_factory.topics
    settings = settings_factory(
        router={
            "group_id": f"{topic_factory.prefix}router",
            "transactional_id_prefix": f"{topic_factory.prefix}router",
            "green_cities": CITIES,
        }
    )
    bootstrap = settings.kafka.bootstrap_servers
    codec = Codec(settings.codec)
    samples = list(SampleFactory(seed=21, major_share=0.6, green_share=1.0).complaints(10))
    dept_topics = [
        t.department(Department.CONSUMER_PROTECTION),
        t.department(Department.CUSTOMER_SERVICE),
    ]
    dept_topics += [t.desk(d) for d in Desk]
    escalation_topics = [t.escalations(c) for c in CITIES]
    with running_gateway(settings, route=True):
        for i, sample in enumerate(samples):
            path = tmp_path / f"complaint-{i}.avro"
            path.write_bytes(codec.encode("complaint", sample.record))
            txn = f"{topic_factory.prefix}kcat-{i}" if i % 2 else None
            kcat_produce(kcat, bootstrap, t.complaints, sample.record["complaint_id"], path, txn)
        assert len(read_all(bootstrap, dept_topics, expect=len(samples), idle_s=0.5)) == len(
            samples
        )

        routed = {topic: kcat_consume(kcat, bootstrap, topic) for topic in dept_topics}
        escalated = {topic: kcat_consume(kcat, bootstrap, topic) for topic in escalation_topics}
    department = [r for rows in routed.values() for r in rows]
    escalations = [r for rows in escalated.values() for r in rows]
    assert sorted(k for k, _, _ in department) == sorted(s.record["complaint_id"] for s in samples)
    assert all(h.get("origin") == "kcat" and "gc-rule" in h for _, _, h in department), department
    sizes = {
        s.record["complaint_id"]: str(len(codec.encode("complaint", s.record))) for s in samples
    }
    assert all(size == sizes[k] for k, size, _ in department)  # the original bytes, unchanged
    n_escalated = sum(1 for _, _, h in department if h.get("gc-handling") == "escalated")
    assert n_escalated > 0 and len(escalations) == n_escalated
    assert all("gc-escalation-id" in h for _, _, h in escalations)

    prefix = re.escape(topic_factory.prefix)
    expected = len(department) + len(escalations)
    out = java_tools.run(
        CONSOLE_CONSUMER,
        "--bootstrap-server",
        bootstrap,
        "--include",
        rf"{prefix}(dept|callcenter|escalations)\..*",
        "--from-beginning",
        "--isolation-level",
        "read_committed",
        "--max-messages",
        str(expected),
        "--timeout-ms",
        "30000",
        "--property",
        "print.headers=true",
        "--property",
        "print.key=true",
        "--property",
        "print.value=false",
    )
    lines = [line.split("\t") for line in out.splitlines() if line.strip()]
    assert len(lines) == expected, out
    # department records keep the producer's headers (origin=kcat) and add the rule; the
    # escalations are the gateway's own records
    from_kcat = [(key, h) for h, key in lines if "origin:kcat" in h]
    own = [(key, h) for h, key in lines if "origin:kcat" not in h]
    assert sorted(k for k, _ in from_kcat) == sorted(k for k, _, _ in department)
    assert all("gc-rule:" in h for _, h in from_kcat)
    assert sorted(k for k, _ in own) == sorted(k for k, _, _ in escalations)
    assert all("gc-escalation-id:" in h for _, h in own)
