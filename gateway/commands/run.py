"""``greenchannel run | route | deliver | check-config``."""

from __future__ import annotations

import sys

import click

from gateway.commands.common import service_settings, settings_from
from gateway.config import Settings
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
_processes = click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Member processes under one supervisor (overrides process.members; default: one per "
    "core). 1: no supervisor. Member I uses the instance <instance>-<I>.",
)
_member = click.option("--member", type=click.IntRange(0, 63), default=None, hidden=True)
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
    processes: int | None = None,
    member: int | None = None,
) -> None:
    settings = service_settings(ctx, metrics_port)
    if member is None and route:
        count = processes or settings.process.members or _default_members(settings)
        if count > 1:
            sys.exit(
                _supervise(
                    ctx,
                    settings,
                    "run" if deliver else "route",
                    count,
                    instance=instance,
                    cities=cities,
                    shutdown_timeout=shutdown_timeout,
                )
            )
    if member is not None:
        settings, instance = _as_member(settings, member, instance)
        deliver = deliver and (member == 0 or not route)  # one deliverer per supervised set
    from gateway.app import EXIT_UNAVAILABLE, App, tune_allocator, tune_gc, tune_interpreter
    from gateway.ops.health import check_bind

    tune_allocator()  # before the Kafka clients start their threads
    tune_interpreter()  # routing's transactions and delivery's lock hand-offs alike

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


def _default_members(settings: Settings) -> int:
    """One member per core, at most one per partition of the complaints topic (a member
    beyond that gets no partition and is never ready)."""
    from gateway.supervisor import available_cores
    from gateway.topics import Topics

    topics = Topics(settings.topics.prefix)
    partitions = next(s.partitions for s in topics.all([]) if s.name == topics.complaints)
    return min(available_cores(), partitions)


def _as_member(settings: Settings, member: int, instance: str) -> tuple[Settings, str]:
    """A supervised member's settings and instance id: ``<instance>-<member>``, static group
    membership (a restart within the session timeout keeps its partitions, no rebalance), log
    lines carrying ``member``, and SIGTERM when the supervisor dies."""
    import logging

    from gateway.supervisor import die_with_parent

    die_with_parent()
    router = settings.router.model_copy(update={"static_membership": True})
    settings = settings.model_copy(update={"router": router})

    def tag(record: logging.LogRecord) -> bool:
        record.member = member
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)
    return settings, f"{instance}-{member}"


def _supervise(
    ctx: click.Context,
    settings: Settings,
    command: str,
    count: int,
    *,
    instance: str,
    cities: tuple[str, ...],
    shutdown_timeout: float,
) -> int:
    """Run ``count`` members of ``command`` under a supervisor with the set's ops endpoint."""
    import threading

    from prometheus_client import CollectorRegistry

    from gateway.cli import main as member_main
    from gateway.ops.health import OpsServer
    from gateway.ops.members import member_routes
    from gateway.supervisor import (
        MEMBER_HOST,
        RestartPolicy,
        Supervisor,
        fork_spawner,
        install_signal_handlers,
        member_command,
        member_env,
        member_ports,
        preload_member,
        process_spawner,
    )

    obs = settings.observability
    ports = member_ports(MEMBER_HOST, obs.port, count)
    extra = [a for c in cities for a in ("--city", c)]

    def command_of(index: int) -> list[str]:
        return member_command(
            command,
            index,
            instance=instance,
            port=ports[index],
            shutdown_timeout_s=shutdown_timeout,
            extra=extra,
        )

    root = ctx.find_root().obj or {}
    env = member_env(root.get("config_path"))
    spawn = process_spawner(command_of, env)
    if settings.process.start == "fork":
        preload_member()
        spawn = fork_spawner(command_of, env, member_main, fallback=spawn)
    supervisor = Supervisor(
        count,
        spawn,
        RestartPolicy.of(settings.process),
        shutdown_timeout_s=shutdown_timeout,
        ports=ports,
    )
    supervisor.start()  # forks while this process has one thread: before the ops endpoint starts
    routes = member_routes(supervisor.views)
    ops = OpsServer(
        obs.host,
        obs.port,
        CollectorRegistry(),  # unused: the routes say what is served
        dict,
        dict,
        max_connections=obs.max_connections,
        request_timeout_s=obs.request_timeout_s,
        routes=routes,
    ).start()
    stop = threading.Event()
    install_signal_handlers(stop)
    click.echo(
        f"supervisor: {count} members of `{command}` (instances {instance}-0..{count - 1}); "
        f"ops endpoint http://{obs.host}:{ops.port}, members on {MEMBER_HOST} ports "
        f"{', '.join(map(str, ports))}",
        err=True,
    )
    try:
        return supervisor.run(stop)
    finally:
        ops.stop()


@click.command("run")
@_instance
@_cities
@_port
@_drain
@_processes
@_member
@click.pass_context
def run(
    ctx: click.Context,
    instance: str,
    cities: tuple[str, ...],
    metrics_port: int | None,
    shutdown_timeout: float,
    processes: int | None,
    member: int | None,
) -> None:
    """Run the router and the delivery engine, with /metrics /healthz /readyz.

    With several members (``--processes``), each routes and member 0 also delivers (a city's
    rate limit is per process)."""
    _start(
        ctx,
        route=True,
        deliver=True,
        instance=instance,
        cities=cities,
        metrics_port=metrics_port,
        shutdown_timeout=shutdown_timeout,
        processes=processes,
        member=member,
    )


@click.command("route")
@_instance
@_port
@_drain
@_processes
@_member
@click.pass_context
def route(
    ctx: click.Context,
    instance: str,
    metrics_port: int | None,
    shutdown_timeout: float,
    processes: int | None,
    member: int | None,
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
        processes=processes,
        member=member,
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
