"""confluent-kafka's own Schema Registry client and Avro serdes against the gateway.

1. The dev registry answers every call ``SchemaRegistryClient`` makes (and Confluent's REST API
   documents) with Confluent's status codes and error bodies.
2. Both directions, Confluent framing, through the real broker: complaints written by
   confluent-kafka's ``AvroSerializer`` (auto-registered, and looked up with
   ``auto.register.schemas=False``) are routed and delivered by the gateway; the escalations and
   receipts the gateway writes are read by confluent-kafka's consumer (``read_committed``) and
   ``AvroDeserializer`` with ``use.latest.version=True``, which finds ``<topic>-value``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

try:
    from confluent_kafka import Consumer as CKConsumer
    from confluent_kafka import Producer as CKProducer
    from confluent_kafka.schema_registry import (
        Schema,
        SchemaRegistryClient,
        SchemaRegistryError,
    )
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
except ImportError as exc:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        f"{exc}: the interop tests need confluent-kafka: pip install -e '.[dev]'"
    ) from exc

from gateway.avro.schemas_path import schema_text
from gateway.cities import CITIES
from gateway.config import Settings
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.registry import RegistryServer
from gateway.dev.samples import SampleFactory
from tests.conftest import TopicFactory
from tests.helpers import REPO
from tests.integration.delivery_kit import accepted_ids, sim_city_overrides, wait_until
from tests.interop.kit import running_gateway

COMPLAINT = schema_text("complaint")


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def evolved(extra_field: dict[str, Any]) -> str:
    schema = json.loads(COMPLAINT)
    schema["fields"].append(extra_field)
    return json.dumps(schema)


def error_of(call: Callable[[], object]) -> tuple[int, int]:
    with pytest.raises(SchemaRegistryError) as err:
        call()
    return err.value.http_status_code, err.value.error_code


def test_schema_registry_client_calls(registry: RegistryServer) -> None:
    client = SchemaRegistryClient({"url": registry.url})
    avro = Schema(COMPLAINT, "AVRO")
    schema_id = client.register_schema("c-value", avro)
    assert client.register_schema("other-value", avro) == schema_id  # one global id
    assert json.loads(client.get_schema(schema_id).schema_str) == json.loads(COMPLAINT)
    assert client.get_schema_types() == ["AVRO"]
    assert sorted(client.get_subjects()) == ["c-value", "other-value"]
    assert sorted(client.get_subjects_by_schema_id(schema_id)) == ["c-value", "other-value"]
    assert {(v.subject, v.version) for v in client.get_schema_versions(schema_id)} == {
        ("c-value", 1),
        ("other-value", 1),
    }
    found = SchemaRegistryClient({"url": registry.url}).lookup_schema("c-value", avro)
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, "c-value")
    latest = client.get_latest_version("c-value")
    assert (latest.schema_id, latest.version) == (schema_id, 1)
    assert client.get_version("c-value", 1).schema_id == schema_id
    assert client.get_versions("c-value") == [1]

    compatible = Schema(evolved({"name": "x", "type": ["null", "string"], "default": None}), "AVRO")
    broken = Schema(evolved({"name": "y", "type": "string"}), "AVRO")
    assert client.test_compatibility("c-value", compatible)
    assert not client.test_compatibility("c-value", broken)
    assert client.test_compatibility_all_versions("c-value", compatible)
    assert not client.test_compatibility_all_versions("c-value", broken)
    assert error_of(lambda: client.register_schema("c-value", broken)) == (409, 409)
    assert client.register_schema("c-value", compatible) != schema_id
    assert client.get_versions("c-value") == [1, 2]

    assert client.get_compatibility() == "BACKWARD"
    assert client.set_compatibility(level="FULL") == {"compatibility": "FULL"}
    assert client.set_compatibility("c-value", "NONE") == {"compatibility": "NONE"}
    assert client.get_compatibility("c-value") == "NONE"
    assert client.get_config().compatibility_level == "FULL"
    assert error_of(lambda: client.get_compatibility("other-value")) == (404, 40408)
    assert error_of(lambda: client.set_compatibility(level="SIDEWAYS")) == (422, 42203)
    assert client.update_mode("c-value", "READONLY") == "READONLY"
    assert client.get_mode("c-value") == "READONLY"
    assert error_of(lambda: client.register_schema("c-value", broken)) == (422, 42205)
    assert client.delete_mode("c-value") == "READONLY"
    assert error_of(lambda: client.get_mode("c-value")) == (404, 40409)
    assert client.get_global_mode() == "READWRITE"
    assert client.update_global_mode("READWRITE") == "READWRITE"
    assert error_of(lambda: client.update_global_mode("SOMETIMES")) == (422, 42204)
    assert client.get_contexts() == ["."]

    assert client.delete_version("c-value", 2) == 2
    assert client.get_versions("c-value") == [1]
    assert client.delete_version("c-value", 2, permanent=True) == 2
    assert client.delete_subject("other-value") == [1]
    assert error_of(lambda: client.delete_subject("other-value")) == (404, 40404)
    assert client.delete_subject("other-value", permanent=True) == [1]
    assert "other-value" not in client.get_subjects()

    assert error_of(lambda: client.get_latest_version("nope")) == (404, 40401)
    assert error_of(lambda: client.get_version("c-value", 9)) == (404, 40402)
    assert error_of(lambda: client.get_schema(999)) == (404, 40403)
    assert error_of(lambda: client.lookup_schema("c-value", broken)) == (404, 40403)
    assert error_of(lambda: client.register_schema("p", Schema("{}", "PROTOBUF"))) == (422, 42201)
    assert error_of(lambda: client.register_schema("a", Schema("{bad", "AVRO"))) == (422, 42201)


def test_rest_api_answers_as_confluent_documents(registry: RegistryServer) -> None:
    with httpx.Client(base_url=registry.url) as http:
        assert http.get("/").json() == {}
        first = http.post("/subjects/s/versions", json={"schema": COMPLAINT}).json()["id"]
        assert http.get(f"/schemas/ids/{first}/schema").json() == json.loads(COMPLAINT)
        assert http.get("/subjects/s/versions/1/schema").json() == json.loads(COMPLAINT)
        assert http.get("/subjects/s/versions/latest/referencedby").json() == []
        assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
        assert http.get("/mode").json() == {"mode": "READWRITE"}
        assert http.get("/contexts").json() == ["."]
        broken = {"schema": evolved({"name": "y", "type": "string"})}
        verbose = http.post("/compatibility/subjects/s/versions/latest?verbose=true", json=broken)
        answer = verbose.json()
        assert answer["is_compatible"] is False
        assert any("new field without a default" in m for m in answer["messages"]), answer
        quiet = http.post("/compatibility/subjects/s/versions", json=broken).json()
        assert quiet == {"is_compatible": False}
        for path in (
            "/subjects/s/versions/0",
            "/subjects/s/versions/x",
            "/subjects/nope/versions/0",
        ):
            zero = http.get(path)
            assert (zero.status_code, zero.json()["error_code"]) == (422, 42202), path
        json_schema = {"schema": "{}", "schemaType": "JSON"}
        bad_type = http.post("/subjects/s/versions", json=json_schema)
        assert (bad_type.status_code, bad_type.json()["error_code"]) == (422, 42201)
        wrong_method = http.put("/schemas/types", json={})
        assert wrong_method.status_code == 405
        assert wrong_method.json() == {"error_code": 405, "message": "HTTP 405 Method Not Allowed"}
        missing = http.get("/no/such/path")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/vnd.schemaregistry.v1+json"
        assert missing.json()["error_code"] == 404


def _delivered(sim: BureauSimulator, cities: list[str]) -> int:
    return sum(len(accepted_ids(sim, c)) for c in cities)


def test_confluent_clients_both_directions_through_the_gateway(
    settings_factory: Callable[..., Settings],
    topic_factory: TopicFactory,
    registry: RegistryServer,
    sim: BureauSimulator,
    tls_dir: Path,
) -> None:
    cities = ["beijing", "hefei", "wuhu"]
    topic_factory.create_all(cities)
    topics = topic_factory.topics
    settings = settings_factory(
        codec={"wire_format": "confluent", "registry_url": registry.url},
        router={
            "group_id": f"{topic_factory.prefix}router",
            "transactional_id_prefix": f"{topic_factory.prefix}router",
            "green_cities": cities,
        },
        delivery={"group_id": f"{topic_factory.prefix}deliver"},
        cities=sim_city_overrides(sim, tls_dir),
    )
    bootstrap = settings.kafka.bootstrap_servers
    client = SchemaRegistryClient({"url": registry.url})
    context = SerializationContext(topics.complaints, MessageField.VALUE)
    register = AvroSerializer(client, COMPLAINT)
    lookup = AvroSerializer(client, COMPLAINT, conf={"auto.register.schemas": False})
    factory = SampleFactory(seed=11, major_share=1.0, green_share=1.0)
    by_code = {c.code: c.key for c in CITIES}
    producer = CKProducer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    sent = 0
    for sample in factory.complaints(200):
        if by_code.get(sample.record["city_code"]) not in cities:
            continue
        serializer = register if sent < 5 else lookup  # lookup: POST /subjects/{s}
        value = serializer(sample.record, context)
        producer.produce(topics.complaints, value, key=sample.record["complaint_id"])
        sent += 1
        if sent == 12:
            break
    assert producer.flush(30) == 0
    assert sent == 12

    with running_gateway(settings, route=True, deliver=True, cities=cities):
        assert wait_until(lambda: _delivered(sim, cities) >= sent, 120), "not delivered"

    escalation_topics = [topics.escalations(c) for c in cities]
    escalations = consume(bootstrap, escalation_topics, sent, client)
    assert {e["city"] for e in escalations} <= set(cities)
    assert len({e["escalation_id"] for e in escalations}) == sent
    receipts = consume(bootstrap, [topics.receipts], sent, client)
    assert {r["outcome"] for r in receipts} == {"ACCEPTED"}
    subjects = set(client.get_subjects())
    assert {f"{t}-value" for t in [*escalation_topics, topics.receipts]} <= subjects, subjects
    assert f"{topics.complaints}-value" in subjects
    assert not any(s.startswith("com.greenchannel") for s in subjects), subjects


def consume(
    bootstrap: str, topics: list[str], expect: int, client: SchemaRegistryClient
) -> list[dict[str, Any]]:
    """Read with confluent-kafka (read_committed) and decode with the latest registered schema."""
    deserializer = AvroDeserializer(client, conf={"use.latest.version": True})
    consumer = CKConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ck-{topics[0]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(topics)
    out: list[dict[str, Any]] = []
    try:
        for _ in range(600):
            message = consumer.poll(0.2)
            if message is None:
                if len(out) >= expect:
                    break
                continue
            assert message.error() is None, message.error()
            ctx = SerializationContext(message.topic(), MessageField.VALUE)
            out.append(deserializer(message.value(), ctx))
    finally:
        consumer.close()
    assert len(out) == expect, f"{len(out)} of {expect} read from {topics}"
    return out


def test_greenchannel_registry_command_serves_the_api() -> None:
    """``greenchannel registry`` (as the README says) is the registry the client talks to."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "registry", "--port", "0"],
        cwd=REPO,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("schema registry on http://127.0.0.1:"), line
        url = line.split()[-1]
        client = SchemaRegistryClient({"url": url})
        schema_id = client.register_schema("x-value", Schema(COMPLAINT, "AVRO"))
        assert client.get_latest_version("x-value").schema_id == schema_id
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
