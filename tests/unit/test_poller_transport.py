"""The poller reaches a polled bureau under the connector's transport policy (client
certificate, minimum TLS version), as delivery and result reporting do."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.avro.codec import Codec
from gateway.cases import poller
from gateway.config import CodecSettings, load_settings
from gateway.connectors_registry import load_connectors
from gateway.ops.watchdog import Watchdog
from gateway.sdk import TransportPolicy, inbound_kind
from tests.unit.delivery_fakes import FakeObserver

pytestmark = pytest.mark.unit


def test_polls_are_held_to_the_connectors_transport_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policies: dict[str, TransportPolicy | None] = {}

    class Recorder:
        def __init__(self, city: str, settings: Any, allowlist: Any, policy: Any = None) -> None:
            policies[city] = policy

    class NoProducer:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

    monkeypatch.setattr(poller, "HttpTransport", Recorder)
    monkeypatch.setattr(poller, "Producer", NoProducer)
    settings = load_settings()
    polled = {c for c, cs in settings.cities.items() if cs.inbound.enabled}
    connectors = load_connectors({settings.connector_of(c) for c in polled})
    strict = TransportPolicy(client_cert=True, min_tls="TLSv1.3")
    by_city = {}
    for city in polled:
        connector = connectors[settings.connector_of(city)]
        if inbound_kind(connector) == "poll":
            by_city[city] = dataclasses.replace(connector, transport=strict)  # type: ignore[type-var]
    assert by_city, "no polled city in the built-in configuration"
    poller.CasePoller(settings, by_city, Codec(CodecSettings()), FakeObserver(), Watchdog(30))  # type: ignore[arg-type]
    assert policies == {city: strict for city in by_city}
