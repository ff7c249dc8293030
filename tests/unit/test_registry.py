"""gateway.avro.registry (client) against gateway.dev.registry (server), and error wrapping."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.avro.registry import SchemaRegistry
from gateway.avro.schemas_path import schema_text
from gateway.dev.registry import RegistryServer
from gateway.errors import ConfigError, FatalError, TransientError, UnknownSchema

pytestmark = pytest.mark.unit


@pytest.fixture
def server() -> Iterator[RegistryServer]:
    with RegistryServer() as srv:
        yield srv


@pytest.fixture
def client(server: RegistryServer) -> Iterator[SchemaRegistry]:
    with SchemaRegistry(server.url) as registry:
        yield registry


def complaint() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text("complaint"))
    return schema


def test_register_fetch_latest(client: SchemaRegistry) -> None:
    first = client.register("a-value", complaint())
    assert client.register("a-value", complaint()) == first  # idempotent
    assert client.register("b-value", complaint()) == first  # same schema, same global id
    assert json.loads(client.schema_by_id(first)) == complaint()
    latest = client.latest("a-value")
    assert (latest.version, latest.schema_id) == (1, first)


def test_compatibility_is_backward(client: SchemaRegistry) -> None:
    client.register("c-value", complaint())
    newer = complaint()
    newer["fields"].append({"name": "extra", "type": "string", "default": "", "doc": "x"})
    assert client.is_compatible("c-value", newer)
    broken = complaint()
    broken["fields"].append({"name": "extra", "type": "string", "doc": "no default"})
    assert not client.is_compatible("c-value", broken)
    with pytest.raises(FatalError) as err:
        client.register("c-value", broken)
    assert err.value.reason == "schema_incompatible"
    second = client.register("c-value", newer)
    assert client.latest("c-value").version == 2 and client.latest("c-value").schema_id == second
    assert client.is_compatible("never-registered-value", broken)  # nothing to break


def test_not_found_and_invalid(client: SchemaRegistry) -> None:
    with pytest.raises(UnknownSchema) as err:
        client.schema_by_id(424242)
    assert err.value.reason == "unknown_schema"
    with pytest.raises(UnknownSchema) as err:
        client.latest("nobody-value")
    assert err.value.reason == "unknown_subject"
    with pytest.raises(FatalError) as fatal:
        client.register("d-value", '{"type": "record"}')
    assert fatal.value.reason == "schema_invalid"


def test_subject_names_are_escaped(client: SchemaRegistry) -> None:
    schema_id = client.register("odd/subject name-value", complaint())
    assert client.latest("odd/subject name-value").schema_id == schema_id


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, TransientError), (429, TransientError), (401, ConfigError), (500, TransientError)],
)
def test_http_errors_are_wrapped(status: int, error: type[Exception]) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json={}))
    with (
        SchemaRegistry("http://registry.test", transport=transport) as client,
        pytest.raises(error),
    ):
        client.schema_by_id(1)


def test_unreachable_registry_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = SchemaRegistry(f"http://127.0.0.1:{port}", timeout_s=1)
    with client, pytest.raises(TransientError) as err:
        client.schema_by_id(1)
    assert err.value.reason == "registry_unavailable"


def test_keep_alive_requests_are_fast(client: SchemaRegistry) -> None:
    """TCP_NODELAY: without it every keep-alive request waits ~40 ms (Nagle + delayed ACK)."""
    client.register("fast-value", complaint())
    took = []
    for _ in range(50):
        started = time.perf_counter()
        client.latest("fast-value")
        took.append(time.perf_counter() - started)
    # The median: Nagle's wait would be in every request, a busy machine's stall in a few.
    assert statistics.median(took) < 0.02, took


def test_a_process_without_a_registry_never_loads_httpx() -> None:
    """The default wire format needs no registry: a router or deliverer does not carry the HTTP
    library (~2 MiB, ~5 with ``rich`` installed) in its memory."""
    code = (
        "import sys\n"
        "import gateway.app, gateway.commands.run\n"
        "from gateway.avro.codec import Codec\n"
        "from gateway.config import CodecSettings\n"
        "Codec(CodecSettings())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
