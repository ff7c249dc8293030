"""The latency benchmark's publisher, in a process of its own.

Publishing in the measuring process made the measurement part of what it measured: at 1,000/s
the publisher's encoding and sends took the interpreter lock from the thread reading the
results, and at 5,000/s the publisher reached only ~3,000/s. Here the complaints are encoded
before the clock starts; each send carries its wall-clock time in the ``bench-sent-at`` header
(the reader subtracts it from the time it reads the routed record, on the same machine).

    python -m bench.publisher --bootstrap HOST:PORT --topic T --rate 1000 --count 20000 \
        [--description-bytes N] [--seed S]

Prints one JSON line when done: ``{"published": count, "seconds": publishing time}``.
"""

from __future__ import annotations

import argparse
import json
import time

from gateway.avro.codec import Codec
from gateway.config import CodecSettings, KafkaSettings
from gateway.dev.samples import BENCH_DESCRIPTION_BYTES, Pacer, bench_complaints
from gateway.kafka.clients import Producer

SENT_HEADER = "bench-sent-at"


def publish(
    bootstrap: str, topic: str, rate: float, count: int, description_bytes: int, seed: int
) -> float:
    """Send ``count`` complaints at ``rate``/s, each on its own (no linger); the seconds it took."""
    codec = Codec(CodecSettings())
    records = [
        (record["complaint_id"].encode(), codec.encode("complaint", record))
        for record in bench_complaints(count, seed, description_bytes=description_bytes)
    ]
    producer = Producer(KafkaSettings(bootstrap_servers=bootstrap), linger_ms=0)
    producer.load_metadata([topic])
    pacer = Pacer(rate)
    began = time.monotonic()
    for key, value in records:
        pacer.wait()
        producer.send(topic, value, key=key, headers=[(SENT_HEADER, repr(time.time()).encode())])
    producer.flush()
    seconds = time.monotonic() - began
    producer.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--description-bytes", type=int, default=BENCH_DESCRIPTION_BYTES)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    seconds = publish(
        args.bootstrap, args.topic, args.rate, args.count, args.description_bytes, args.seed
    )
    print(json.dumps({"published": args.count, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
