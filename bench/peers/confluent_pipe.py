"""The raw transactional pipe of bench/raw_pipe.py on confluent-kafka (librdkafka).

consume bytes (read_committed) -> produce the same bytes -> send_offsets_to_transaction (the
consumer's positions) -> commit, batch by batch, with the router's client settings: batches of
up to 8,000 records, the router's fetch sizes, linger 500 ms, 256 KiB batches, acks=all,
idempotence, 10 ms retry backoff. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import threading
from pathlib import Path

from bench.peers import Job, Prepared, Unavailable, python_module


def prepare(tmp: Path) -> Prepared:
    try:
        import confluent_kafka
    except ImportError as exc:
        raise Unavailable("confluent-kafka is not installed (the dev extra has it)") from exc

    def start(job: Job) -> subprocess.Popen[bytes]:
        args = ["--bootstrap", job.bootstrap, "--source", job.source, "--sink", job.sink]
        return python_module(job, __name__, [*args, "--group", job.group])

    version = f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}"
    return Prepared(start, version)


def main() -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--sink", required=True)
    ap.add_argument("--group", required=True)
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.max.bytes": 8_000 * 800,
            "max.partition.fetch.bytes": 1024 * 1024,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": args.bootstrap,
            "transactional.id": f"{args.group}-tx",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 500,
            "batch.size": 256 * 1024,
            "message.max.bytes": 4 * 1024 * 1024,
            "retry.backoff.ms": 10,
        }
    )
    producer.init_transactions()
    consumer.subscribe([args.source])
    while not stop.is_set():
        records = [m for m in consumer.consume(num_messages=8_000, timeout=0.1) if not m.error()]
        if not records:
            continue
        producer.begin_transaction()
        partitions: dict[int, str] = {}
        for m in records:
            while True:
                try:
                    producer.produce(args.sink, m.value(), m.key(), headers=m.headers())
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    producer.poll(0.01)
            topic, partition = m.topic(), m.partition()
            if topic is not None and partition is not None:  # always, for a consumed message
                partitions[partition] = topic
        positions = consumer.position([TopicPartition(t, p) for p, t in partitions.items()])
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata())
        producer.commit_transaction()
    consumer.close()


if __name__ == "__main__":
    main()
