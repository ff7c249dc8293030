"""Baseline for bench/route.py: the plainest transactional kafka-python pipe.

consume bytes (read_committed) -> produce the same bytes -> send_offsets_to_transaction ->
commit, batch by batch, with the same client settings as the router (batch of up to 8,000
records, the router's fetch sizes, linger 500 ms, 256 KiB batches, acks=all, idempotence, 10 ms
retry backoff). It is plain kafka-python: none of the fixes in gateway/kafka/clients.py (key partitioner,
ending the flush kafka-python leaves on after a commit). Runs until SIGTERM.

With ``--gateway-producer`` it produces through the gateway's own ``Producer.send_all`` (see
gateway/kafka/append.py) instead: the same produce path as the router, so the router's ratio to
it is the cost of the router's own work alone.
"""

from __future__ import annotations

import argparse
import signal
import threading

from kafka import KafkaConsumer, KafkaProducer
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.structs import OffsetAndMetadata, TopicPartition

from gateway.config import KafkaSettings
from gateway.kafka.clients import Producer
from gateway.kafka.clients import TopicPartition as GatewayTP


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--sink", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--gateway-producer", action="store_true")
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consumer = KafkaConsumer(
        args.source,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=8_000,
        fetch_max_bytes=8_000 * 800,  # gateway.routing.router.fetch_bytes_for(8_000)
        max_partition_fetch_bytes=1024 * 1024,
        partition_assignment_strategy=[CooperativeStickyAssignor],
    )
    if args.gateway_producer:
        gateway_pipe(args, consumer, stop)
        return
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        transactional_id=f"{args.group}-tx",
        acks="all",
        enable_idempotence=True,
        linger_ms=500,
        batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
        retry_backoff_ms=10,
    )
    producer.init_transactions()
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=100)
        if not batches:
            continue
        producer.begin_transaction()
        offsets = {}
        for tp, records in batches.items():
            for r in records:
                producer.send(args.sink, value=r.value, key=r.key, headers=r.headers)
            offsets[TopicPartition(tp.topic, tp.partition)] = OffsetAndMetadata(
                records[-1].offset + 1, "", -1
            )
        producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
        producer.commit_transaction()
    consumer.close(autocommit=False)
    producer.close()


def gateway_pipe(args: argparse.Namespace, consumer: KafkaConsumer, stop: threading.Event) -> None:
    producer = Producer(
        KafkaSettings(bootstrap_servers=args.bootstrap),
        transactional_id=f"{args.group}-tx",
        linger_ms=500,
    )
    producer.init_transactions()
    producer.load_metadata([args.sink])
    while not stop.is_set():
        batches = consumer.poll(timeout_ms=100)
        if not batches:
            continue
        producer.begin()
        producer.send_all(
            [
                (args.sink, r.key, r.value, r.headers)
                for records in batches.values()
                for r in records
            ]
        )
        offsets = {
            GatewayTP(tp.topic, tp.partition): records[-1].offset + 1
            for tp, records in batches.items()
        }
        producer.send_offsets(offsets, consumer.group_metadata())
        producer.commit()
    consumer.close(autocommit=False)
    producer.close()


if __name__ == "__main__":
    main()
