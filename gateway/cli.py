"""``greenchannel`` command line: a thin click group; each command lives in ``gateway/commands/``."""

from __future__ import annotations

import importlib
import sys

import click

from gateway.errors import GreenChannelError

# (module, attribute) of every top-level command or group; modules are imported lazily so a
# command's heavy imports never slow down the others.
COMMANDS: list[tuple[str, str]] = [
    ("gateway.commands.bureaus", "bureaus"),
    ("gateway.commands.connectors", "connectors"),
    ("gateway.commands.broker", "broker"),
    ("gateway.commands.topics", "topics"),
    ("gateway.commands.run", "run"),
    ("gateway.commands.run", "route"),
    ("gateway.commands.run", "deliver"),
    ("gateway.commands.run", "check_config"),
    ("gateway.commands.publish_samples", "publish_samples"),
    ("gateway.commands.dlq", "dlq"),
    ("gateway.commands.registry", "registry"),
    ("gateway.commands.schemas", "schemas"),
    ("gateway.commands.cases", "cases"),
]


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(attr.replace("_cmd", "").replace("_", "-") for _, attr in COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for module, attr in COMMANDS:
            if attr.replace("_cmd", "").replace("_", "-") == cmd_name:
                command = getattr(importlib.import_module(module), attr)
                assert isinstance(command, click.Command)
                return command
        return None


@click.group(cls=_LazyGroup)
@click.option(
    "--config",
    "config_path",
    envvar="GREENCHANNEL_CONFIG",
    type=click.Path(),
    default=None,
    help="YAML config file (env: GREENCHANNEL_CONFIG).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Green Channel: complaints from Kafka to the consumer-protection pyramid and 12315 bureaus."""
    ctx.obj = {"config_path": config_path}


# Third-party modules only the development tools (``gateway.dev``) need, and the extra that
# installs them.
DEV_ONLY_MODULES = {"cryptography": "sim"}


def main(args: list[str] | None = None) -> None:
    """The ``greenchannel`` command; ``args`` instead of ``sys.argv[1:]`` (a forked member)."""
    try:
        cli(args=args, prog_name="greenchannel", standalone_mode=True)
    except GreenChannelError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        extra = DEV_ONLY_MODULES.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        click.echo(
            f"error: this command needs the '{extra}' extra ({exc.name} is not installed): "
            f"pip install 'greenchannel[{extra}]'",
            err=True,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
