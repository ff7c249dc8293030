"""``greenchannel registry``: run the development schema registry until SIGINT/SIGTERM.

An in-memory, Confluent-compatible registry (:mod:`gateway.dev.registry`): point
``codec.registry_url`` and Confluent clients (``schema.registry.url``) at the URL it prints.
"""

from __future__ import annotations

import click

from gateway.commands.bureaus import wait_for_signal


@click.command("registry")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=18081, show_default=True, help="Port (0: any free).")
def registry(host: str, port: int) -> None:
    """Run the development schema registry (Confluent REST API v1, Avro, in memory)."""
    from gateway.dev.registry import RegistryServer

    server = RegistryServer(host, port).start()
    try:
        click.echo(f"schema registry on {server.url}", nl=True)
        wait_for_signal()
    finally:
        server.stop()
        click.echo("registry stopped")
