"""``greenchannel bureaus --port-base``: move the simulator's ports without a config file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from gateway.dev.broker import port_block
from tests.helpers import REPO

pytestmark = pytest.mark.integration


def run_bureaus(*args: str) -> dict[str, str]:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "bureaus",
            "--city",
            "beijing",
            "--city",
            "hefei",
            *args,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline and "admin" not in lines:
            line = proc.stdout.readline()
            if not line:
                break
            name, _, rest = line.partition(" ")
            lines[name] = rest.split()[-1] if name != "admin" else rest.split()[0]
        assert "admin" in lines, lines
        assert httpx.get(f"{lines['admin']}/cities", timeout=5).status_code == 200
        return lines
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_port_base_moves_the_admin_api_and_the_city_ports() -> None:
    base = port_block(11)
    lines = run_bureaus("--port-base", str(base))
    assert lines["admin"] == f"http://127.0.0.1:{base}"
    assert lines["beijing"] == f"http://127.0.0.1:{base + 1}"  # cities in config order
    assert lines["hefei"] == f"http://127.0.0.1:{base + 6}"


def test_port_base_zero_takes_any_free_ports() -> None:
    lines = run_bureaus("--port-base", "0")
    assert not lines["beijing"].endswith(":18101")
    assert not lines["admin"].endswith(":18100")
