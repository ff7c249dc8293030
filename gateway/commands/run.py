"""``greenchannel run | route | deliver | check-config``."""

from __future__ import annotations

import sys

import click

from gateway.commands.common import service_settings, settings_from
from gateway.errors import GreenChannelError, TransientError

_instance = click.option(
    "--instance",
    default="0",
    envvar="GREENCHANNEL_INSTANCE",
    show_default=True,
    help="Stable, unique id of this replica (e.g. a StatefulSet ordinal): names the router's "
    "transactional id, so a restarted replica fences and aborts its predecessor's transaction.",
)
_cities = click.option(
    "--city", "cities", multiple=True, help="Deliver only to these cities (repeatable)."
)
_port = click.option(
    "--metrics-port",
    type=click.IntRange(0, 65_535),
    default=None,
    help="Ops endpoint port (overrides observability.port).",
)
_drain = click.option(
    "--shutdown-timeout",
    type=float,
    default=20.0,
    show_default=True,
    help="Seconds SIGTERM may take to drain before the process exits non-zero.",
)


def _start(
    ctx: click.Context,
    *,
    route: bool,
    deliver: bool,
    instance: str,
    cities: tuple[str, ...],
    metrics_port: int | None,
    shutdown_timeout: float,
) -> None:
    settings = service_settings(ctx, metrics_port)
    from gateway.app import EXIT_UNAVAILABLE, App, tune_gc
    from gateway.ops.health import check_bind

    check_bind(settings.observability.host, settings.observability.port)  # before Kafka

    try:
        app = App(
            settings,
            route=route,
            deliver=deliver,
            cities=list(cities) or None,
            instance_id=instance,
        )
    except TransientError as exc:  # Kafka (or the registry) unreachable: not a config error
        click.echo(
            f"error: cannot start, a dependency is unreachable ({exc}); exit {EXIT_UNAVAILABLE}: "
            "the supervisor restarts with backoff",
            err=True,
        )
        sys.exit(EXIT_UNAVAILABLE)
    app.install_signal_handlers()
    tune_gc()  # the whole process is the gateway's: start-up is over
    sys.exit(app.run(shutdown_timeout))


@click.command("run")
@_instance
@_cities
@_port
@_drain
@click.pass_context
def run(
    ctx: click.Context,
    instance: str,
    cities: tuple[str, ...],
    metrics_port: int | None,
    shutdown_timeout: float,
) -> None:
    """Run the router and the delivery engine in one process, with /metrics /healthz /readyz."""
    _start(
        ctx,
        route=True,
        deliver=True,
        instance=instance,
        cities=cities,
        metrics_port=metrics_port,
        shutdown_timeout=shutdown_timeout,
    )


@click.command("route")
@_instance
@_port
@_drain
@click.pass_context
def route(
    ctx: click.Context, instance: str, metrics_port: int | None, shutdown_timeout: float
) -> None:
    """Classify complaints into the pyramid and publish them, exactly once (a consumer group)."""
    _start(
        ctx,
        route=True,
        deliver=False,
        instance=instance,
        cities=(),
        metrics_port=metrics_port,
        shutdown_timeout=shutdown_timeout,
    )


@click.command("deliver")
@_cities
@_port
@_drain
@click.pass_context
def deliver(
    ctx: click.Context, cities: tuple[str, ...], metrics_port: int | None, shutdown_timeout: float
) -> None:
    """Deliver escalations to the city bureaus (a consumer group)."""
    _start(
        ctx,
        route=False,
        deliver=True,
        instance="0",
        cities=cities,
        metrics_port=metrics_port,
        shutdown_timeout=shutdown_timeout,
    )


@click.command("check-config")
@click.option(
    "--elsewhere",
    is_flag=True,
    help="The config is for another machine (e.g. a chart's ConfigMap checked in CI): secret "
    "files missing here are noted instead of refused.",
)
@click.pass_context
def check_config(ctx: click.Context, elsewhere: bool) -> None:
    """Validate the configuration, routing rules and connectors; exit non-zero naming the bad key.

    Also reads every enabled city's secret file (missing, a directory or empty: refused) and
    checks its TLS files (readable, key matching the certificate, not expired)."""
    import time

    from gateway.connectors_registry import load_connectors
    from gateway.http import preflight
    from gateway.routing.rules import load_rules

    try:
        settings = settings_from(ctx)
        classifier = load_rules(settings.router.rules_file)
        cities = [c for c, cs in settings.cities.items() if cs.enabled]
        connectors = load_connectors({settings.connector_of(c) for c in cities})
        now = time.time()
        certs, tls_notes = preflight(
            settings,
            connectors,
            cities,
            now,
            missing_tls_ok=True,
            missing_secrets_ok=elsewhere,
        )
        from gateway.cases.deadlines import calendar_from, rules_from

        rules_from(settings.cases, calendar_from(settings.cases))
    except GreenChannelError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(
        f"ok: {len(cities)} cities, {len(classifier.rule_ids)} routing rules, "
        f"bootstrap {settings.kafka.bootstrap_servers}"
    )
    # Secrets and mounted files may exist only where the gateway runs: noted, not refused.
    kafka = settings.kafka
    if kafka.security_protocol.startswith("SASL_") and kafka.sasl_password is None:
        click.echo(
            "note: kafka.sasl_password is not set here: provide it at run time "
            "(GREENCHANNEL_KAFKA__SASL_PASSWORD)",
            err=True,
        )
    for problem in [*kafka.missing_files(), *tls_notes]:
        click.echo(f"note: {problem} here: it must exist where the gateway runs", err=True)
    warn_s = settings.delivery.certificate_warn_days * 86_400
    for cert in certs:
        if cert.not_after_s - now < warn_s:
            days = (cert.not_after_s - now) / 86_400
            click.echo(
                f"warning: cities.{cert.city}.tls.cert_file expires in {days:.1f} days: rotate it",
                err=True,
            )
