"""``greenchannel cases keep | show | list``: the case keeper and the case views."""

from __future__ import annotations

import sys

import click

from gateway.commands.common import settings_from
from gateway.ops.logs import setup_logging


@click.group("cases")
def cases() -> None:
    """Case lifecycle: keep case states, show and list cases."""


@cases.command("keep")
@click.option(
    "--instance",
    default="0",
    envvar="GREENCHANNEL_INSTANCE",
    show_default=True,
    help="Stable, unique id of this replica (names the transactional ids).",
)
@click.option("--metrics-port", type=int, default=None, help="Ops endpoint port.")
@click.option("--shutdown-timeout", type=float, default=20.0, show_default=True)
@click.pass_context
def keep(
    ctx: click.Context, instance: str, metrics_port: int | None, shutdown_timeout: float
) -> None:
    """Turn escalations, receipts and bureau updates into case states (exactly once)."""
    settings = settings_from(ctx)
    if metrics_port is not None:
        obs = settings.observability.model_copy(update={"port": metrics_port})
        settings = settings.model_copy(update={"observability": obs})
    setup_logging(settings.observability.log_level, settings.observability.log_format)
    from gateway.app import App

    app = App(settings, route=False, deliver=False, keep_cases=True, instance_id=instance)
    app.install_signal_handlers()
    sys.exit(app.run(shutdown_timeout))
