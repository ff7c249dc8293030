"""``greenchannel publish-samples``: send realistic sample complaints to the input topic."""

from __future__ import annotations

import click

from gateway.avro.codec import Codec
from gateway.commands.common import settings_from
from gateway.dev.samples import Pacer, SampleFactory, publish, utc_now_ms
from gateway.kafka.clients import Producer
from gateway.topics import Topics


@click.command("publish-samples")
@click.option(
    "--count", "-n", type=click.IntRange(min=1), required=True, help="Complaints to send."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Complaints per second (default: as fast as possible).",
)
@click.option(
    "--format",
    "wire_format",
    type=click.Choice(["single_object", "confluent"]),
    default=None,
    help="Wire format (default: codec.wire_format).",
)
@click.option(
    "--major-share",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of major complaints.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed: same seed and --start-ms, same complaints.",
)
@click.option(
    "--start-ms",
    type=int,
    default=None,
    help="received_at of the first complaint, epoch ms (default: now).",
)
@click.option("--topic", default=None, help="Topic (default: the complaints input topic).")
@click.pass_context
def publish_samples(
    ctx: click.Context,
    count: int,
    rate: float | None,
    wire_format: str | None,
    major_share: float,
    seed: int,
    start_ms: int | None,
    topic: str | None,
) -> None:
    """Publish --count realistic complaints (key = complaint id), a share of them major."""
    settings = settings_from(ctx)
    codec_settings = settings.codec
    if wire_format is not None:
        codec_settings = codec_settings.model_copy(update={"wire_format": wire_format})
    topic = topic or Topics(settings.topics.prefix).complaints
    factory = SampleFactory(
        seed, major_share=major_share, start_ms=utc_now_ms() if start_ms is None else start_ms
    )
    producer = Producer(settings.kafka)
    try:
        with Codec(codec_settings) as codec:
            samples = factory.complaints(count)
            result = publish(producer, codec, topic, samples, pacer=Pacer(rate))
    finally:
        producer.close()
    click.echo(
        f"published {result.sent} complaints ({result.majors} major, {result.bytes} bytes, "
        f"{codec_settings.wire_format}) to {topic} in {result.elapsed_s:.2f} s "
        f"({result.per_second:,.0f} msg/s)"
    )
