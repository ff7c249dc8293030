"""``greenchannel bureaus``: run the simulated city bureaus until SIGINT/SIGTERM.

Each configured city listens on its ``cities.<city>.endpoint`` port (HTTPS with mTLS for
Shenzhen, certificates generated into the TLS directory on first start); the admin API on
``--admin-port`` lets other processes read cases and change fault knobs (see
:mod:`gateway.dev.bureaus`).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click

from gateway.commands.common import settings_from

FLAKY: dict[str, Any] = {"error_5xx_ratio": 0.25, "latency_ms": 150, "busy_ratio": 0.05}
"""What ``--flaky CITY`` turns on for that city."""


@click.command("bureaus")
@click.option("--city", "cities", multiple=True, help="Only these cities (default: all).")
@click.option("--flaky", multiple=True, metavar="CITY", help="Make CITY unreliable (repeatable).")
@click.option("--admin-port", type=int, default=18100, show_default=True, help="Admin API port.")
@click.option(
    "--port-base",
    type=click.IntRange(min=0, max=65_000),
    default=None,
    help="Admin API on BASE, cities on BASE+1.. in config order (0: any free ports); "
    "overrides --admin-port and the configured endpoint ports.",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="CA/server/client certificates (default: the folder of cities.*.tls.ca_file).",
)
@click.pass_context
def bureaus(
    ctx: click.Context,
    cities: tuple[str, ...],
    flaky: tuple[str, ...],
    admin_port: int,
    port_base: int | None,
    tls_dir: Path | None,
) -> None:
    """Run the bureau simulator: one real HTTP(S) server per city, plus an admin API."""
    from gateway.dev.bureaus import BureauSimulator, default_tls_dir

    settings = settings_from(ctx)
    chosen = list(cities) or None
    ephemeral = port_base == 0
    if port_base:
        from gateway.dev.demo_run import with_port_base

        settings, admin_port = with_port_base(settings, port_base), port_base
    sim = BureauSimulator(
        settings,
        tls_dir or default_tls_dir(settings),
        cities=chosen,
        admin_port=0 if ephemeral else admin_port,
        ephemeral_ports=ephemeral,
    )
    sim.start()
    try:
        for city in flaky:
            sim.city(city).set_faults(**FLAKY)
        for name in sim.names():
            note = " (flaky)" if name in flaky else ""
            family = sim.city(name).profile.family
            click.echo(f"{name:<10} {family:<11} {sim.endpoint(name)}{note}")
        click.echo(f"admin      {sim.admin_url}  (GET /cities, POST /cities/<c>/faults)")
        wait_for_signal()
    finally:
        sim.stop()
        click.echo("bureaus stopped")


def wait_for_signal() -> None:
    stop = threading.Event()

    def _handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    while not stop.wait(0.5):
        pass
