"""Baseline for bench/deliver.py: the obvious hand-written deliverer.

One kafka-python consumer over every city's escalation topic, one synchronous HTTP call per
record from the poll loop, ``time.sleep`` between retries (1, 2, 4, 8 s), auto-commit. It uses
the same connectors (so the protocol work is identical) — only the delivery strategy differs.
Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import threading
import time
import uuid

import httpx
from kafka import KafkaConsumer

from gateway.avro.codec import Codec
from gateway.config import load_settings
from gateway.connectors_registry import load_connectors
from gateway.delivery.convert import to_escalation
from gateway.sdk import Accepted, BureauResponse, Credentials, Rejected, RequestContext
from gateway.topics import Topics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    args = ap.parse_args()
    settings = load_settings(args.config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    topics = Topics(settings.topics.prefix)
    cities = list(settings.cities)
    connectors = load_connectors({settings.connector_of(c) for c in cities})
    codec = Codec(settings.codec)
    clients = {}
    for c in cities:
        cs = settings.city(c)
        verify: ssl.SSLContext | bool = True
        if cs.tls.ca_file:
            verify = ssl.create_default_context(cafile=str(cs.tls.ca_file))
            if cs.tls.cert_file and cs.tls.key_file:
                verify.load_cert_chain(str(cs.tls.cert_file), str(cs.tls.key_file))
        clients[c] = httpx.Client(base_url=cs.endpoint, timeout=cs.timeout_s, verify=verify)
    consumer = KafkaConsumer(
        *[topics.escalations(c) for c in cities],
        bootstrap_servers=settings.kafka.bootstrap_servers,
        group_id=settings.delivery.group_id,
        auto_offset_reset="earliest",
    )
    tokens: dict[str, str] = {}
    while not stop.is_set():
        for records in consumer.poll(timeout_ms=100).values():
            for r in records:
                city = topics.city_of(r.topic)
                conn = connectors[settings.connector_of(city)]
                cs = settings.city(city)
                creds = Credentials(cs.credentials.client_id, cs.credentials.resolved_secret())
                esc = to_escalation(codec.decode_as("escalation", r.value))
                for attempt in range(5):
                    try:
                        ctx = RequestContext(int(time.time() * 1000), uuid.uuid4().hex, creds)
                        if conn.token_grant is not None:
                            if city not in tokens:
                                t = conn.token_request(ctx)
                                resp = clients[city].request(
                                    t.method, t.path, headers=dict(t.headers), content=t.body
                                )
                                tokens[city] = conn.interpret_token(
                                    BureauResponse(
                                        resp.status_code,
                                        {k.lower(): v for k, v in resp.headers.items()},
                                        resp.content,
                                    )
                                )[0]
                            ctx = RequestContext(ctx.now_ms, ctx.nonce, creds, tokens[city])
                        req = conn.translate(esc, ctx)
                        resp = clients[city].request(
                            req.method, req.path, headers=dict(req.headers), content=req.body
                        )
                        outcome = conn.interpret(
                            BureauResponse(
                                resp.status_code,
                                {k.lower(): v for k, v in resp.headers.items()},
                                resp.content,
                            )
                        )
                        if isinstance(outcome, Accepted | Rejected):
                            break
                    except (httpx.HTTPError, ValueError):
                        pass
                    time.sleep(2**attempt)
    consumer.close()


if __name__ == "__main__":
    main()
