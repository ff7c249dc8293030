"""An unreachable broker at start-up is not a configuration error: exit 5, not 2. The clients
wait for a first broker as long as ``kafka.request_timeout_ms`` (here 1 s), not kafka-python's
own 30 s."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import yaml
from click.testing import CliRunner

from gateway.app import EXIT_UNAVAILABLE
from gateway.cli import cli


def _closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_route_with_an_unreachable_broker_exits_5_not_2(tmp_path: Path) -> None:
    config = tmp_path / "gc.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {
                    "bootstrap_servers": f"127.0.0.1:{_closed_port()}",
                    "request_timeout_ms": 1000,
                },
                "observability": {"port": 0},
            }
        ),
        encoding="utf-8",
    )
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["--config", str(config), "route"])
    waited = time.monotonic() - started
    assert result.exit_code == EXIT_UNAVAILABLE == 5, result.output
    assert "dependency is unreachable" in result.output
    assert "Traceback" not in result.output
    assert waited < 20, f"start-up waited {waited:.1f}s for a broker (request_timeout_ms 1000)"
