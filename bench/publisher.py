"""The latency benchmark's publisher, in a process of its own.

Publishing in the measuring process made the measurement part of what it measured: at 1,000/s
the publisher's encoding and sends took the interpreter lock from the thread reading the
results, and at 5,000/s it reached only ~3,000/s. Here the complaints are encoded before the
clock starts, and they are sent with librdkafka (confluent-kafka, the dev extra) when it is
installed: kafka-python builds and encodes one produce request per record at linger 0 (~1 ms of
CPU each on a slow 2-core machine, so the publisher itself fell behind 1,000/s), librdkafka a
few microseconds. Upstream systems are not the gateway; the figure is the router's. Each record
carries its wall-clock send time in the ``bench-sent-at`` header (the reader subtracts it from
the time it reads the routed record, on the same machine). Keys go to partitions with murmur2,
as Kafka's Java client and the gateway place them.

    python -m bench.publisher --bootstrap HOST:PORT --topic T --rate 1000 --count 20000 \
        [--description-bytes N] [--seed S]

Prints one JSON line when done: ``{"published": count, "seconds": publishing time, "client":
"confluent-kafka x.y.z" | "kafka-python x.y.z"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version

from gateway.avro.codec import Codec
from gateway.config import CodecSettings, KafkaSettings
from gateway.dev.samples import BENCH_DESCRIPTION_BYTES, Pacer, bench_complaints
from gateway.kafka.clients import Producer

SENT_HEADER = "bench-sent-at"


Send = Callable[[bytes, bytes, list[tuple[str, bytes]]], None]


def publish(
    bootstrap: str, topic: str, rate: float, count: int, description_bytes: int, seed: int
) -> tuple[float, str]:
    """Send ``count`` complaints at ``rate``/s, each on its own (no linger); (the seconds it
    took, the client that sent them)."""
    codec = Codec(CodecSettings())
    records = [
        (record["complaint_id"].encode(), codec.encode("complaint", record))
        for record in bench_complaints(count, seed, description_bytes=description_bytes)
    ]
    with _sender(bootstrap, topic, warm_up=records[0]) as (send, client):
        pacer = Pacer(rate)
        began = time.monotonic()
        for key, value in records:
            pacer.wait()
            send(key, value, [(SENT_HEADER, repr(time.time()).encode())])
        seconds = time.monotonic() - began  # the flush in _sender waits for the last ones
    return seconds, client


@contextlib.contextmanager
def _sender(
    bootstrap: str, topic: str, *, warm_up: tuple[bytes, bytes]
) -> Iterator[tuple[Send, str]]:
    """A client ready to send: connected, the topic's partitions known and its producer id
    given. ``warm_up`` (key, value) is sent without the send-time header (the reader skips it)
    and acknowledged before the send function is handed out: without it the first ~0.5 s of
    records waited for that set-up and counted as routing latency."""
    key, value = warm_up
    try:
        import confluent_kafka
    except ImportError:
        producer = Producer(KafkaSettings(bootstrap_servers=bootstrap), linger_ms=0)
        producer.load_metadata([topic])
        producer.send_and_wait(topic, value, key=key)

        def send_kafka_python(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
            producer.send(topic, value, key=key, headers=headers)

        yield send_kafka_python, f"kafka-python {version('kafka-python')}"
        producer.flush()
        producer.close()
        return
    fast = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 0,
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
        }
    )

    fast.produce(topic, value, key)
    if fast.flush(30):
        raise RuntimeError("the publisher's warm-up record was not acknowledged in 30 s")

    def send_confluent(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        wire: list[tuple[str, str | bytes | None]] = [*headers]
        fast.produce(topic, value, key, headers=wire)
        fast.poll(0)

    yield send_confluent, f"confluent-kafka {confluent_kafka.version()[0]}"
    fast.flush(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--description-bytes", type=int, default=BENCH_DESCRIPTION_BYTES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seconds, client = publish(
        args.bootstrap, args.topic, args.rate, args.count, args.description_bytes, args.seed
    )
    print(json.dumps({"published": args.count, "seconds": seconds, "client": client}), flush=True)


if __name__ == "__main__":
    main()
