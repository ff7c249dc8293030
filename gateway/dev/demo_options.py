"""What a ``make demo`` run is asked to do (:class:`Options`, from the command line in
:mod:`gateway.dev.demo`), where it writes its logs, and the error for a part that cannot start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEMO_DIR = Path("var/demo")


class DemoError(Exception):
    """Something the demo needs could not be started (the message says what and why)."""


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float = 60.0
    rate: float = 50.0
    count: int | None = None
    major_share: float = 0.15
    junk_share: float = 0.005
    flaky: str | None = "hefei"
    rejecting: str | None = "wuhu"
    outage_at_s: float = 20.0
    outage_for_s: float = 20.0
    no_broker: bool = False
    port_base: int | None = None
    metrics_port: int | None = None
    seed: int | None = None
