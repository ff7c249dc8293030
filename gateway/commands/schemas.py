"""``greenchannel schemas register | list``: the schema store of writer schemas (docs/schemas.md).

``register FILE`` checks a writer schema as the gateway will (a known record, bounded decode
cost, readable by the gateway's current schema: BACKWARD) and publishes it to the compacted
``{prefix}schemas.v1`` topic, keyed by its fingerprint; running gateways pick it up within a
poll, without a release or a restart. ``--dry-run`` only checks. ``list`` prints what the store
holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from gateway.avro.codec import RECORD_NAMES, Codec, current_schemas, fingerprint_text
from gateway.avro.store import SchemaStore, store_record
from gateway.commands.common import settings_from
from gateway.config import CodecSettings
from gateway.errors import ConfigError, UnknownSchema
from gateway.kafka.clients import Producer
from gateway.kafka.follow import TopicFollower
from gateway.topics import Topics


@click.group("schemas")
def schemas() -> None:
    """Writer schemas upstream teams add without a gateway release."""


@schemas.command("register")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check only; publish nothing.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def register(ctx: click.Context, file: Path, dry_run: bool, timeout_s: float) -> None:
    """Check writer schema FILE against the gateway's reader schema, then publish it."""
    settings = settings_from(ctx)
    text = file.read_text(encoding="utf-8")
    codec = Codec(CodecSettings(max_message_bytes=settings.codec.max_message_bytes))
    try:
        fp = codec.add_writer(None, text)
    except UnknownSchema as exc:
        click.echo(f"refused ({exc.reason}): {exc}", err=True)
        ctx.exit(1)
    raw = json.loads(text)
    name = str(raw.get("name", "?"))
    kind = RECORD_NAMES.get(name.rsplit(".", 1)[-1], "?")
    if "." not in name and raw.get("namespace"):
        name = f"{raw['namespace']}.{name}"
    current = fp in {i.fingerprint for i in current_schemas().values()}
    what = "the current" if current else "a compatible"
    click.echo(f"{fingerprint_text(fp)}  {name}: {what} {kind} writer schema")
    if dry_run:
        return
    topic = Topics(settings.topics.prefix).schemas
    key, value = store_record(text)
    producer = Producer(settings.kafka, linger_ms=0)
    try:
        producer.load_metadata([topic])
        producer.send_and_wait(topic, value, key=key, timeout_s=timeout_s)
    finally:
        producer.close()
    click.echo(f"published to {topic}: gateways accept it from their next poll")


@schemas.command("list")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, help="Seconds to wait.")
@click.pass_context
def list_(ctx: click.Context, timeout_s: float) -> None:
    """Print the writer schemas of the store topic the gateway accepts (fingerprint, name)."""
    settings = settings_from(ctx)
    topic = Topics(settings.topics.prefix).schemas
    codec = Codec(CodecSettings(max_message_bytes=settings.codec.max_message_bytes))
    before = set(codec.writer_fingerprints())
    store = SchemaStore(codec, wait_s=0)
    follower = TopicFollower(settings.kafka, topic, store.on_record)
    if not follower.start(timeout_s):
        raise ConfigError(f"{topic} does not exist (greenchannel topics init)")
    follower.stop()
    added = [fp for fp in codec.writer_fingerprints() if fp not in before]
    for fp in added:
        click.echo(fingerprint_text(fp))
    click.echo(f"{len(added)} writer schema(s) in {topic} besides the current ones")
