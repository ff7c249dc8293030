"""An unreachable broker at start-up is not a configuration error: exit 5, not 2 (it waits out
the bootstrap timeout, ~30 s, hence this tier)."""

from __future__ import annotations

import socket
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
    result = CliRunner().invoke(cli, ["--config", str(config), "route"])
    assert result.exit_code == EXIT_UNAVAILABLE == 5, result.output
    assert "dependency is unreachable" in result.output
    assert "Traceback" not in result.output
