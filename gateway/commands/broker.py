"""``greenchannel broker``: a real single-node Kafka for development (see gateway/dev/broker.py)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from gateway.commands.common import settings_from
from gateway.dev.broker import BrokerSettings, LocalBroker, load_broker_settings

_PERF_TOPIC = "greenchannel.perf-ceiling"


def _local(
    ctx: click.Context, port: int | None, controller_port: int | None, data_dir: Path | None
) -> LocalBroker:
    """The configured broker, with the location options given on the command line."""
    update: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
    if port is not None:
        update["port"] = port
        update["controller_port"] = port + 1
    if controller_port is not None:
        update["controller_port"] = controller_port
    settings: BrokerSettings = _broker_settings(ctx).model_copy(update=update)
    return LocalBroker(settings)


def _broker_settings(ctx: click.Context) -> BrokerSettings:
    """The ``broker:`` section of the top-level ``--config`` file (and GREENCHANNEL_BROKER__*)."""
    root = ctx.find_root()
    config_path = root.obj.get("config_path") if isinstance(root.obj, dict) else None
    return load_broker_settings(config_path)


def _location_options(func: Any) -> Any:
    """--port / --controller-port / --data-dir, shared by every broker command."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Broker data directory (default: broker.data_dir, var/kafka).",
    )(func)
    func = click.option(
        "--controller-port", type=int, help="KRaft controller port (default: --port + 1)."
    )(func)
    func = click.option("--port", type=int, help="Client port (default: broker.port, 19092).")(func)
    return func


@click.group()
def broker() -> None:
    """Run a real single-node Apache Kafka (KRaft) for development and tests, without Docker."""


@broker.command()
@click.option("--wipe", is_flag=True, help="Delete all broker data first.")
@_location_options
@click.pass_context
def start(
    ctx: click.Context,
    wipe: bool,
    port: int | None,
    controller_port: int | None,
    data_dir: Path | None,
) -> None:
    """Assemble Kafka from Maven Central (once), start it detached, wait until it is ready.

    Prints the bootstrap address on stdout; details go to stderr.
    """
    local = _local(ctx, port, controller_port, data_dir)
    started = time.monotonic()
    was_running = local.is_running() and not wipe
    bootstrap = local.start(wipe=wipe)
    verb = "already running" if was_running else f"started in {time.monotonic() - started:.1f} s"
    click.echo(
        f"Kafka {local.settings.kafka_version} {verb}: pid {local.pid}, "
        f"data {local.data_dir}, log {local.log_file}",
        err=True,
    )
    click.echo(bootstrap)


@broker.command()
@_location_options
@click.pass_context
def stop(
    ctx: click.Context, port: int | None, controller_port: int | None, data_dir: Path | None
) -> None:
    """Stop the broker: SIGTERM, then SIGKILL after 60 s. Data is kept."""
    local = _local(ctx, port, controller_port, data_dir)
    pid = local.pid
    if local.stop():
        click.echo(f"stopped broker pid {pid}")
    else:
        click.echo(f"no broker running for {local.data_dir}")


@broker.command()
@_location_options
@click.pass_context
def status(
    ctx: click.Context, port: int | None, controller_port: int | None, data_dir: Path | None
) -> None:
    """Show whether the broker runs; exit status 1 when it does not."""
    local = _local(ctx, port, controller_port, data_dir)
    state = local.status()
    if state.running:
        click.echo(f"running: pid {state.pid}, bootstrap {state.bootstrap}, data {state.data_dir}")
    else:
        click.echo(f"not running (data {state.data_dir})")
        sys.exit(1)


def _producer_summary(output: str) -> str:
    """ProducerPerformance's final line ("N records sent, R records/sec (M MB/sec), …")."""
    lines = [line for line in output.splitlines() if "records sent" in line]
    return lines[-1].strip() if lines else output.strip()


def _consumer_summary(output: str) -> str:
    """ConsumerPerformance's CSV header and row, as ``key=value`` pairs."""
    lines = [line for line in output.splitlines() if line.strip()]
    header = next((line for line in lines if line.startswith("start.time")), None)
    rows = [line for line in lines if re.match(r"\d", line)]
    if header is None or not rows:
        return output.strip()
    pairs = zip(header.split(","), rows[-1].split(","), strict=False)
    wanted = ("MB.sec", "nMsg.sec", "data.consumed.in.nMsg", "fetch.time.ms")
    return ", ".join(f"{k.strip()}={v.strip()}" for k, v in pairs if k.strip() in wanted)


@broker.command("perf-ceiling")
@click.option("--records", default=200_000, show_default=True, help="Records to produce.")
@click.option("--record-size", default=1100, show_default=True, help="Bytes per record.")
@click.option("--partitions", default=6, show_default=True)
@click.option(
    "--bootstrap", default=None, help="Cluster to measure (default: kafka.bootstrap_servers)."
)
@click.pass_context
def perf_ceiling(
    ctx: click.Context, records: int, record_size: int, partitions: int, bootstrap: str | None
) -> None:
    """Measure what the broker itself can do (Kafka's own Java perf tools, PLAINTEXT only).

    The ceiling the Python pipeline is compared against.
    """
    from gateway.kafka.admin import Admin
    from gateway.topics import TopicSpec

    settings = settings_from(ctx)
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap} if bootstrap else {})
    local = LocalBroker(_broker_settings(ctx))
    spec = TopicSpec(_PERF_TOPIC, partitions, 3_600_000, "perf ceiling scratch topic")
    with Admin(kafka) as admin:
        admin.wait_ready(30)
        admin.delete_topics([spec.name])
        time.sleep(1.0)
        admin.create_topics([spec])
        try:
            produced = local.run_tool(
                "org.apache.kafka.tools.ProducerPerformance", "--topic", spec.name,
                "--num-records", str(records), "--record-size", str(record_size),
                "--throughput", "-1", "--producer-props",
                f"bootstrap.servers={kafka.bootstrap_servers}", "acks=all", "linger.ms=5",
            )  # fmt: skip
            consumed = local.run_tool(
                "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server",
                kafka.bootstrap_servers, "--topic", spec.name, "--messages", str(records),
            )  # fmt: skip
        finally:
            admin.delete_topics([spec.name])
    click.echo(f"produce (acks=all, {record_size} B): {_producer_summary(produced)}")
    click.echo(f"consume: {_consumer_summary(consumed)}")
