"""Shared helpers for integration and e2e tests: config files, gateway processes, readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from gateway.config import KafkaSettings
from gateway.kafka.clients import Consumer, Record

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
