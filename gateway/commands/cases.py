"""``greenchannel cases keep | show | list``: the case keeper and the case views."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from gateway.commands.common import service_settings, settings_from


@click.group("cases")
def cases() -> None:
    """Case lifecycle: keep case states (intake, keeper, callbacks, polls, results), show and
    list cases."""


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
    settings = service_settings(ctx, metrics_port)
    from gateway.app import App

    app = App(settings, route=False, deliver=False, keep_cases=True, instance_id=instance)
    app.install_signal_handlers()
    sys.exit(app.run(shutdown_timeout))


def _states(ctx: click.Context) -> tuple[dict[str, Any], Any]:
    from gateway.avro.codec import Codec
    from gateway.cases.deadlines import calendar_from
    from gateway.cases.view import load_states

    settings = settings_from(ctx)
    codec = Codec(settings.codec)
    return load_states(settings, codec), calendar_from(settings.cases)


@cases.command("show")
@click.argument("escalation_id")
@click.option("--json", "as_json", is_flag=True, help="Print the state record as JSON.")
@click.pass_context
def show(ctx: click.Context, escalation_id: str, as_json: bool) -> None:
    """One case: state, case number, every transition, the deadlines and whether they are met."""
    from gateway.cases.view import detail

    states, _ = _states(ctx)
    state = states.get(escalation_id)
    if state is None:
        click.echo(f"error: no case {escalation_id}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(state, ensure_ascii=False, indent=2))
        return
    for line in detail(state, int(time.time() * 1000)):
        click.echo(line)


@cases.command("list")
@click.option("--city", default=None, help="Only this city.")
@click.option("--state", "state_name", default=None, help="Only cases in this state.")
@click.option("--overdue", is_flag=True, help="Only cases with a running deadline past due.")
@click.option(
    "--due-within",
    type=int,
    default=None,
    metavar="DAYS",
    help="Only cases with a running deadline due within DAYS working days.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON state per line.")
@click.pass_context
def list_cmd(
    ctx: click.Context,
    city: str | None,
    state_name: str | None,
    overdue: bool,
    due_within: int | None,
    as_json: bool,
) -> None:
    """Cases, filtered by city, state, overdue deadlines or deadlines due soon."""
    from gateway.cases.view import COLUMNS, Query, row, select

    states, calendar = _states(ctx)
    now = int(time.time() * 1000)
    chosen = select(states.values(), Query(city, state_name, overdue, due_within), now, calendar)
    if as_json:
        for state in chosen:
            click.echo(json.dumps(state, ensure_ascii=False))
        return
    rows = [COLUMNS, *(row(s, now) for s in chosen)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    click.echo(f"{len(chosen)} of {len(states)} cases", err=True)
