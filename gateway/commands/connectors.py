"""``greenchannel connectors``: list the registered city connectors and certify them.

``certify`` runs the conformance kit (:mod:`gateway.dev.conformance`) for each connector against
the bureau simulator: an in-process one on free ports by default, or a running
``greenchannel bureaus`` when ``--admin-url`` is given. Exit status 1 when any check fails.
"""

from __future__ import annotations

import sys

import click

from gateway.commands.common import settings_from
from gateway.config import Settings
from gateway.connectors_registry import describe_connectors, load_connectors
from gateway.dev.conformance import Check, certify, summary
from gateway.sdk import Connector


@click.group("connectors")
def connectors() -> None:
    """Registered city connectors (entry-point group greenchannel.connectors)."""


@connectors.command("list")
def list_cmd() -> None:
    """Name, city code, family, auth, mTLS and distribution of every connector."""
    rows = [("NAME", "CITY", "FAMILY", "AUTH", "MTLS", "DISTRIBUTION")]
    for name, info in describe_connectors().items():
        c = info.connector
        mtls = "yes" if c.requires_client_cert else "no"
        rows.append((name, c.city_code, c.family, info.auth, mtls, info.distribution))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _cities_for(settings: Settings, loaded: dict[str, Connector]) -> dict[str, str]:
    """city key -> connector name, for every configured city whose connector is loaded."""
    return {
        key: settings.connector_of(key)
        for key in settings.cities
        if settings.connector_of(key) in loaded
    }


@connectors.command("certify")
@click.option("--city", "cities", multiple=True, help="Only these cities (default: all).")
@click.option("--admin-url", default=None, help="Use a running simulator (its admin API).")
@click.option("--timeout", "timeout_s", type=float, default=3.0, show_default=True)
@click.pass_context
def certify_cmd(
    ctx: click.Context, cities: tuple[str, ...], admin_url: str | None, timeout_s: float
) -> None:
    """Run the conformance suite for connectors against the bureau simulator."""
    settings = settings_from(ctx)
    unknown = [c for c in cities if c not in settings.cities]
    if unknown:
        raise click.UsageError(f"no cities.<name> block for {unknown}")
    wanted = {settings.connector_of(c) for c in cities} if cities else None
    loaded = load_connectors(wanted)
    targets = {k: v for k, v in _cities_for(settings, loaded).items() if not cities or k in cities}
    results = (
        _run_remote(settings, targets, loaded, admin_url, timeout_s)
        if admin_url
        else (_run_local(settings, targets, loaded, timeout_s))
    )
    for city, checks in results.items():
        _report(city, loaded[targets[city]], checks)
    passed, failed = summary(results)
    click.echo(f"{passed} passed, {failed} failed, {len(results)} connector(s)")
    sys.exit(1 if failed or not results else 0)


def _run_local(
    settings: Settings, targets: dict[str, str], loaded: dict[str, Connector], timeout_s: float
) -> dict[str, list[Check]]:
    from gateway.dev.bureaus import BureauSimulator, default_tls_dir

    sim = BureauSimulator(
        settings, default_tls_dir(settings), cities=list(targets), ephemeral_ports=True
    )
    with sim:
        return {
            city: certify(
                loaded[name], settings.cities[city], sim.endpoint(city), sim.city(city),
                timeout_s=timeout_s,
            )
            for city, name in targets.items()
        }  # fmt: skip


def _run_remote(
    settings: Settings,
    targets: dict[str, str],
    loaded: dict[str, Connector],
    admin_url: str,
    timeout_s: float,
) -> dict[str, list[Check]]:
    from gateway.dev.bureaus import RemoteBureaus

    remote = RemoteBureaus(admin_url)
    try:
        return {
            city: certify(
                loaded[name], settings.cities[city], settings.cities[city].endpoint,
                remote.city(city), timeout_s=timeout_s,
            )
            for city, name in targets.items()
        }  # fmt: skip
    finally:
        remote.close()


def _report(city: str, connector: Connector, checks: list[Check]) -> None:
    click.echo(f"{city} ({connector.family}, {connector.city_code})")
    for check in checks:
        mark = "PASS" if check.ok else "FAIL"
        click.echo(f"  {mark}  {check.name:<17} {check.detail}")
