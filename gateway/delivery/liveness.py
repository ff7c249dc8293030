"""What delivery reports about its own progress (``/healthz``), as a small Protocol.

The operations side implements it (a registry behind ``/healthz``): ``register`` a name with
how long it may go without a ``beat`` before it counts as stuck; ``fail`` marks it unhealthy
at once (until its next beat). Delivery registers its poll loop (``deliver-loop``), its commit
progress (``deliver-commit``) and its worker threads (``deliver-workers``).
"""

from __future__ import annotations

from typing import Protocol


class Liveness(Protocol):
    def register(self, name: str, stale_after_s: float) -> None: ...
    def beat(self, name: str) -> None: ...
    def fail(self, name: str, reason: str) -> None: ...


class NoLiveness:
    """Reports nowhere (tools and tests that do not look at health)."""

    def register(self, name: str, stale_after_s: float) -> None:
        return None

    def beat(self, name: str) -> None:
        return None

    def fail(self, name: str, reason: str) -> None:
        return None
