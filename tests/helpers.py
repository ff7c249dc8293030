"""Shared test helpers: config files, gateway processes and CLI runs, an echoing bureau,
readers, waits and the exactly-once check of routing (every complaint routed once, every
escalation it owes made once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from gateway.cities import city_key
from gateway.config import KafkaSettings, Settings
from gateway.dev.bureau_city import CityBureau
from gateway.dev.bureau_protocols import Answer, Verdict, render
from gateway.dev.samples import Sample
from gateway.errors import KafkaUnavailable
from gateway.kafka.admin import Admin
from gateway.kafka.clients import Consumer, Record
from gateway.routing.rules import load_rules
from gateway.topics import Department, Desk, Topics

REPO = Path(__file__).resolve().parent.parent


def write_config(path: Path, overrides: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(overrides, allow_unicode=True), encoding="utf-8")
    return path


def gateway_process(
    args: list[str], config: Path, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``greenchannel <args>`` as a real process (its own session, logs to a file)."""
    full_env = (
        os.environ | {"GREENCHANNEL_CONFIG": str(config), "PYTHONUNBUFFERED": "1"} | (env or {})
    )
    full_env.pop("GREENCHANNEL_BOOTSTRAP_SERVERS", None)  # the config file names the broker
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *args],
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def cli_run(
    args: list[str], *, config: Path | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """``greenchannel <args>`` as a process, to its end, without this environment's
    ``GREENCHANNEL_*`` variables (``GREENCHANNEL_CONFIG`` is ``config`` when given; one member
    process: ``GREENCHANNEL_PROCESS__MEMBERS=1``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENCHANNEL_")}
    env["GREENCHANNEL_PROCESS__MEMBERS"] = "1"  # one process, unless args say --processes
    if config is not None:
        env["GREENCHANNEL_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def cli_output(args: list[str], *, config: Path | None = None) -> str:
    """What ``greenchannel <args>`` prints (stdout, then stderr); it must succeed."""
    done = cli_run(args, config=config)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def echoing(bureau: CityBureau, answers: list[bytes]) -> Callable[..., Answer]:
    """A simulated bureau's case opening that refuses every new case, quoting back every field
    it received (its answers are appended to ``answers``)."""

    def open_case(key: str, data: dict[str, str], arrived: float) -> Answer:
        quoted = "；".join(f"{k}={v}" for k, v in data.items())
        answer = render(bureau.profile, Verdict.REFUSED, message=f"不予受理，来件内容：{quoted}")
        answers.append(answer.body)
        return answer

    return open_case


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30
) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return int(proc.returncode)


def read_all(
    bootstrap: str,
    topics: Iterable[str],
    *,
    expect: int | None = None,
    timeout_s: float = 60.0,
    idle_s: float = 3.0,
    read_committed: bool = True,
) -> list[Record]:
    """Read topics from the beginning (read_committed) until ``expect`` records arrived (or,
    without ``expect``, until nothing new came for ``idle_s``)."""
    consumer = Consumer(
        KafkaSettings(bootstrap_servers=bootstrap),
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        topics=list(topics),
        read_committed=read_committed,
        max_poll_records=5000,
    )
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(200)
            if batch:
                out.extend(batch)
                last_new = time.monotonic()
            if expect is not None and len(out) >= expect:
                # linger briefly so duplicates, if any, would show up
                extra_until = time.monotonic() + idle_s
                while time.monotonic() < extra_until:
                    out.extend(consumer.poll(200))
                break
            if expect is None and out and time.monotonic() - last_new > idle_s:
                break
    finally:
        consumer.close()
    return out


def header(record: Record, name: str) -> str | None:
    value = record.header(name)
    return None if value is None else value.decode()


def wait_until(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout_s`` passed (its last answer)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return predicate()


def set_max_message_bytes(bootstrap: str, topic: str, limit: int, timeout_s: float = 30) -> None:
    """Change a topic's ``max.message.bytes`` and wait until the broker applies it: the
    controller commits the change at once, the broker reads it from the metadata log a moment
    later (seconds on a loaded machine), and a record sent in between meets the old limit."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-topic-limit")
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(limit)}
        )
        admin.alter_configs([resource])
    finally:
        admin.close()

    def applied() -> bool:
        with Admin(KafkaSettings(bootstrap_servers=bootstrap)) as gc_admin:
            return gc_admin.max_message_bytes([topic]).get(topic) == limit

    assert wait_until(applied, timeout_s, 0.2), f"{topic}: max.message.bytes={limit} not applied"


def committed(bootstrap: str, group: str) -> int:
    """Records the consumer group has committed (the sum of its offsets): its progress; 0 while
    the group coordinator is not available yet (a fresh or restarting broker)."""
    try:
        with Admin(KafkaSettings(bootstrap_servers=bootstrap)) as admin:
            return sum(admin.group_offsets(group).values())
    except KafkaUnavailable:
        return 0


def routed_topics(t: Topics) -> list[str]:
    """Every topic the router sends a complaint to (departments and desks)."""
    return [
        t.department(Department.CONSUMER_PROTECTION),
        t.department(Department.CUSTOMER_SERVICE),
        *(t.desk(d) for d in Desk),
    ]


def escalated_keys(settings: Settings, samples: Iterable[Sample]) -> set[bytes]:
    """Record keys (complaint ids) of the samples the router must escalate: major by the
    configured rules, from a green-channel city."""
    classifier = load_rules(settings.router.rules_file)
    green = set(settings.router.green_cities)
    return {
        s.record["complaint_id"].encode()
        for s in samples
        if city_key(s.record["city_code"]) in green and classifier.classify(s.record).major
    }


def assert_exactly_once(
    settings: Settings, count: int, escalated: set[bytes], timeout_s: float = 240
) -> None:
    """``count`` complaints routed exactly once (read_committed), and exactly one escalation
    for each key in ``escalated``: none missing, none twice, none for another complaint."""
    t = Topics(settings.topics.prefix)
    assert escalated, "the stream holds no complaint to escalate: the check would prove nothing"
    escalation_topics = {t.escalations(c) for c in settings.router.green_cities}
    read = read_all(
        settings.kafka.bootstrap_servers,
        [*routed_topics(t), *sorted(escalation_topics)],
        expect=count + len(escalated),
        timeout_s=timeout_s,
        idle_s=5,
    )
    keys = Counter(r.key for r in read if r.topic not in escalation_topics)
    dupes = [k for k, n in keys.items() if n > 1]
    assert not dupes, f"{len(dupes)} complaints routed more than once"
    assert len(keys) == count, f"{count - len(keys)} complaints missing"
    esc_keys = Counter(r.key for r in read if r.topic in escalation_topics)
    twice = sorted(k for k, n in esc_keys.items() if n > 1 and k is not None)
    assert not twice, f"{len(twice)} escalations published more than once"
    missing = escalated - set(esc_keys)
    assert not missing, f"{len(missing)} of {len(escalated)} major complaints not escalated"
    extra = set(esc_keys) - escalated
    assert not extra, f"{len(extra)} escalations for complaints that are not major"


def traced_growth(run: Callable[[], None]) -> int:
    """Bytes of Python memory still held after ``run()`` (once warmed up by a first run):
    what a compiled part leaks would stay behind."""
    import gc
    import tracemalloc

    run()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run()
        gc.collect()
        return int(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()


def compiled_or_python(
    request: Any, monkeypatch: Any, module: Any, attribute: str, source: str
) -> str:
    """For a fixture with params ``["compiled", "python"]``: the compiled part in
    ``module.attribute`` as built (a skip where it is not, a failure in CI), or ``None`` there
    so the Python code runs alone."""
    import pytest

    if request.param == "compiled":
        if getattr(module, attribute) is None:
            pytest.skip(f"{source} is not built")
    else:
        monkeypatch.setattr(module, attribute, None)
    return str(request.param)
