"""``make demo``: the whole gateway running locally, with a live per-city view in the terminal.

Starts, in order, and stops in reverse order on exit (duration elapsed, Ctrl-C or SIGTERM):

1. the local Kafka broker (:class:`~gateway.dev.broker.LocalBroker`, ``broker.*`` settings:
   127.0.0.1:19092, data in ``var/kafka``). A Kafka broker already listening there is reused and
   left running; ``--no-broker`` uses ``kafka.bootstrap_servers`` /
   ``GREENCHANNEL_BOOTSTRAP_SERVERS`` instead;
2. every topic (as ``greenchannel topics init``);
3. the bureau simulator, in this process, on the configured city ports (``--port-base`` moves
   them; ``0`` = free ports), with one city flaky (``--flaky``: 30 % 5xx and a connection-refused
   outage, ``--outage-at``/``--outage-for``) and one rejecting a share of cases as outside its
   jurisdiction (``--rejecting``), so retries, an open breaker and dead letters show up;
4. the gateway, as a real ``greenchannel run`` process (own session, logs to
   ``var/demo/gateway.log``), stopped with SIGTERM so its drain is the real one;
5. a sample publisher thread: ``--rate`` complaints per second (15 % major), a few undecodable
   records among them so the router's dead-letter topic is used too.

The live view scrapes the gateway's ``/metrics`` once a second (see
:mod:`gateway.dev.demo_view`); it is redrawn in place on a terminal and reduced to a progress
line every five seconds otherwise. Exit status: 0 when everything started and stopped cleanly
(Ctrl-C included), 1 when something failed.

This module is the command line. The parts: :mod:`gateway.dev.demo_run` (start, live loop, stop),
:mod:`gateway.dev.demo_gateway` (the gateway child process), :mod:`gateway.dev.demo_faults` (the
flaky and rejecting cities), :mod:`gateway.dev.demo_publisher` (sample complaints) and
:mod:`gateway.dev.demo_options` (options, output directory, start-up error).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from gateway.config import load_settings
from gateway.dev.demo_faults import REJECT_RATIO
from gateway.dev.demo_options import DEMO_DIR, Options
from gateway.dev.demo_run import Demo
from gateway.errors import GreenChannelError


def _setup_logging() -> None:
    """Our own and the Kafka client's log lines go to a file: the terminal is the view's."""
    from gateway.ops.logs import MaskingTextFormatter

    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(DEMO_DIR / "demo.log", mode="w", encoding="utf-8")
    handler.setFormatter(MaskingTextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("kafka", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _city(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value.lower() in ("", "none", "-"):
        return None
    try:
        cities = load_settings().cities
    except GreenChannelError as exc:
        raise click.UsageError(str(exc)) from exc
    if value not in cities:
        raise click.BadParameter(f"{value!r} is not a configured city ({', '.join(cities)})")
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to publish and watch; 0 = until Ctrl-C (or until --count settled).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    help="Sample complaints per second.",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="Stop publishing after this many."
)
@click.option(
    "--major-share",
    type=click.FloatRange(0, 1),
    default=0.15,
    show_default=True,
    help="Share of major complaints (escalated for green-channel cities).",
)
@click.option(
    "--junk-share",
    type=click.FloatRange(0, 1),
    default=0.005,
    show_default=True,
    help="Share of undecodable records (the router dead-letters them).",
)
@click.option(
    "--flaky",
    default="hefei",
    show_default=True,
    callback=_city,
    metavar="CITY",
    help="City answering 30% 5xx, with an outage; 'none' for none.",
)
@click.option(
    "--rejecting",
    default="wuhu",
    show_default=True,
    callback=_city,
    metavar="CITY",
    help=f"City refusing {REJECT_RATIO:.0%} of new cases (dead letters); 'none' for none.",
)
@click.option(
    "--outage-at",
    "outage_at_s",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Seconds into the run when the flaky city's outage begins.",
)
@click.option(
    "--outage-for",
    "outage_for_s",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Seconds the flaky city refuses connections (0: no outage).",
)
@click.option(
    "--no-broker",
    is_flag=True,
    help="Do not start Kafka: use kafka.bootstrap_servers / GREENCHANNEL_BOOTSTRAP_SERVERS.",
)
@click.option(
    "--port-base",
    type=click.IntRange(min=0, max=65_000),
    default=None,
    help="Simulator admin API on BASE, cities on BASE+1.. (0: any free ports). "
    "Default: the configured endpoints and 18100.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65_535),
    default=None,
    help="Gateway /metrics port (default: observability.port; 0 or busy: a free port).",
)
@click.option("--seed", type=int, default=None, help="Sample generator seed (default: time).")
def main(**kwargs: Any) -> None:
    """Local Kafka + bureau simulator + gateway + sample publisher, with a live per-city view."""
    _setup_logging()
    try:
        demo = Demo(Options(**kwargs), sys.stdout, tty=sys.stdout.isatty())
    except GreenChannelError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    sys.exit(demo.run())


if __name__ == "__main__":
    main()
