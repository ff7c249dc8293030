"""The gateway in this process for interop tests: router and/or deliverer on a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry

from gateway.app import App
from gateway.config import Settings
from gateway.ops.metrics import Metrics


@contextmanager
def running_gateway(
    settings: Settings,
    *,
    route: bool = True,
    deliver: bool = False,
    cities: list[str] | None = None,
) -> Iterator[tuple[App, CollectorRegistry]]:
    registry = CollectorRegistry()
    app = App(settings, route=route, deliver=deliver, cities=cities, metrics=Metrics(registry))
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(app.run(shutdown_timeout_s=10, with_ops=False)), daemon=True
    )
    thread.start()
    try:
        yield app, registry
    finally:
        app.stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the gateway did not stop"
    assert result == [0], f"the gateway exited with {result} ({app.errors})"
