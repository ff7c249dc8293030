"""The ops endpoint of a supervised set of members (``gateway.supervisor``).

The supervisor listens on ``observability.host:port`` (the port the chart, the probes and
Prometheus know); each member has its own endpoint on loopback (``MemberView.port``), read by
the supervisor at request time:

* ``/metrics``: every member's exposition, each sample with a ``member`` label (the member
  index), merged into one exposition (one ``# TYPE`` per family); ``SET_WIDE`` families once,
  unlabelled; a member that does not answer is left out of that scrape.
* ``/readyz``: 200 when every member runs and answers 200 (the set is ready when all of its
  partitions' owners are); the body has each member's components.
* ``/healthz``: 200 when every running member answers 200; a member waiting for its restart,
  or within ``start_grace_s`` of its start (its endpoint not up yet), counts as alive — the
  supervisor is already handling it. 503 when a member reports itself unhealthy, or has not
  answered for longer than the grace: the orchestrator then restarts the whole set.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.health import Answer, Routes

FETCH_TIMEOUT_S = 2.0
SET_WIDE = frozenset({"greenchannel_build_info"})
"""Families that are the same in every member: exposed once, without ``member``, so joins on
``instance`` (``group_left (version) greenchannel_build_info``) keep one series per pod."""
START_GRACE_S = 60.0


class MemberView(NamedTuple):
    member: int
    """the member's index"""
    port: int
    pid: int | None
    """None while the member waits for its restart."""
    started_at: float
    """monotonic time of its (last) start"""
    restarts: int
    last_exit: int | None


Fetch = Callable[[int, str], tuple[int, bytes]]
"""(status, body) of GET ``path`` on a member's port; status 0 when it does not answer."""


def fetch_member(port: int, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


class MembersCollector:
    """A collector re-exposing the members' metrics with a ``member`` label."""

    def __init__(self, members: Callable[[], list[MemberView]], fetch: Fetch) -> None:
        self.members = members
        self.fetch = fetch

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for member in self.members():
            if member.pid is None:
                continue
            status, body = self.fetch(member.port, "/metrics")
            if status != 200:
                continue
            for family in text_string_to_metric_families(body.decode()):
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                elif family.name in SET_WIDE:
                    continue  # the first member's answer stands for the set
                extra = {} if family.name in SET_WIDE else {"member": str(member.member)}
                for s in family.samples:
                    target.add_sample(
                        s.name, {**s.labels, **extra}, s.value, s.timestamp, s.exemplar
                    )
        yield from merged.values()


def _json(status: int, body: object) -> Answer:
    return status, json.dumps(body).encode(), "application/json"


def _decoded(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def member_routes(
    members: Callable[[], list[MemberView]],
    fetch: Fetch = fetch_member,
    *,
    clock: Callable[[], float] = time.monotonic,
    start_grace_s: float = START_GRACE_S,
) -> Routes:
    """The supervisor's ``/metrics``, ``/readyz`` and ``/healthz`` (see the module docstring)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MembersCollector(members, fetch))

    def metrics() -> Answer:
        return 200, generate_latest(registry), CONTENT_TYPE_LATEST

    def readyz() -> Answer:
        views = members()
        parts: dict[str, object] = {}
        ok = bool(views)
        for m in views:
            status, body = fetch(m.port, "/readyz") if m.pid is not None else (0, b"")
            ok = ok and status == 200
            parts[str(m.member)] = {"ready": status == 200, "pid": m.pid, **_state(body)}
        return _json(200 if ok else 503, {"ok": ok, "members": parts})

    def healthz() -> Answer:
        now = clock()
        parts: dict[str, object] = {}
        ok = True
        for m in members():
            alive, detail = _alive(m, fetch, now, start_grace_s)
            ok = ok and alive
            parts[str(m.member)] = {
                "ok": alive,
                "pid": m.pid,
                "restarts": m.restarts,
                "last_exit": m.last_exit,
                **detail,
            }
        return _json(200 if ok else 503, {"ok": ok, "members": parts})

    return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}


def _state(body: bytes) -> dict[str, object]:
    decoded = _decoded(body)
    if isinstance(decoded, dict) and "components" in decoded:
        return {"components": decoded["components"]}
    return {}


def _alive(
    member: MemberView, fetch: Fetch, now: float, grace_s: float
) -> tuple[bool, dict[str, object]]:
    if member.pid is None:
        return True, {"state": "restarting"}
    status, body = fetch(member.port, "/healthz")
    if status == 0:
        starting = now - member.started_at < grace_s
        return starting, {"state": "starting" if starting else "not answering"}
    decoded = _decoded(body)
    detail: dict[str, object] = {"state": "running"}
    if isinstance(decoded, dict) and "progress" in decoded:
        detail["progress"] = decoded["progress"]
    return status == 200, detail
