"""``greenchannel topics``: create and inspect the gateway's topics (gateway/topics.py)."""

from __future__ import annotations

import click

from gateway.commands.common import settings_from
from gateway.kafka.admin import Admin, TopicInfo
from gateway.topics import DAY_MS, Topics, TopicSpec


def _retention(ms: int | None) -> str:
    """Human retention: ``7d``, ``36h``, ``-`` when unset, ``forever`` for -1."""
    if ms is None:
        return "-"
    if ms < 0:
        return "forever"
    if ms % DAY_MS == 0:
        return f"{ms // DAY_MS}d"
    return f"{ms / 3_600_000:g}h"


def _spec_line(status: str, spec: TopicSpec) -> str:
    retention = _retention(spec.retention_ms)
    return f"{status:<8} {spec.name:<44} {spec.partitions:>3} partitions  {retention}"


def _info_line(info: TopicInfo) -> str:
    return (
        f"{info.name:<44} {info.partitions:>3} partitions  rf {info.replication_factor}  "
        f"{_retention(info.retention_ms)}"
    )


@click.group()
def topics() -> None:
    """Create and list the gateway's Kafka topics."""


@topics.command()
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def init(ctx: click.Context, timeout_s: float) -> None:
    """Create every topic (idempotent: existing topics are left as they are)."""
    settings = settings_from(ctx)
    specs = Topics(settings.topics.prefix).all(settings.router.green_cities)
    with Admin(settings.kafka) as admin:
        admin.wait_ready(timeout_s)
        report = admin.create_topics(specs, settings.topics.replication_factor)
    for spec in specs:
        click.echo(_spec_line("created" if spec.name in report.created else "exists", spec))
    for name, problem in report.drift.items():
        click.echo(f"warning: {name} {problem} (partitions are never changed here)", err=True)
    click.echo(
        f"{len(report.created)} created, {len(report.existing)} already existed "
        f"({settings.kafka.bootstrap_servers}, prefix {settings.topics.prefix!r})"
    )


@topics.command("list")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Every topic, not only those with the configured prefix.",
)
@click.option("--timeout", "timeout_s", default=30.0, show_default=True)
@click.pass_context
def list_(ctx: click.Context, show_all: bool, timeout_s: float) -> None:
    """List topics with partitions, replication factor and retention."""
    settings = settings_from(ctx)
    prefix = settings.topics.prefix
    with Admin(settings.kafka) as admin:
        admin.wait_ready(timeout_s)
        names = [n for n in admin.list_topics() if show_all or n.startswith(prefix)]
        infos = admin.describe_topics(names)
    for info in sorted(infos, key=lambda i: i.name):
        click.echo(_info_line(info))
    if not infos:
        scope = "" if show_all else f" with prefix {prefix!r}"
        click.echo(f"no topics{scope}: run `greenchannel topics init`")
