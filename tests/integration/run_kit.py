"""Building blocks for tests of the real ``greenchannel run`` process.

:class:`GatewayRun` starts ``greenchannel run`` (router + deliverers + ops endpoint) as a
subprocess on a config file written by :func:`run_config`, talks to its ops endpoint and stops
it with SIGTERM, measuring how long the drain took. :func:`expected_escalations` says which
published complaints the default rules escalate, and to which city.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.avro.codec import Codec
from gateway.cities import city_key
from gateway.config import Settings
from gateway.dev.broker import free_ports
from gateway.dev.bureaus import BureauSimulator
from gateway.dev.samples import Pacer, Sample, publish
from gateway.kafka.clients import Producer
from gateway.routing.escalation import escalation_id
from gateway.routing.rules import load_rules
from gateway.topics import Topics
from tests.helpers import gateway_process, write_config
from tests.integration.delivery_kit import sim_city_overrides


def run_config(
    path: Path,
    settings: Settings,
    sim: BureauSimulator,
    tls_dir: Path,
    *,
    log_level: str = "INFO",
    **city_extra: Any,
) -> Path:
    """A config file for ``greenchannel run`` on the test's topics, groups and simulator."""
    prefix = settings.topics.prefix
    return write_config(
        path,
        {
            "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
            "topics": {"prefix": prefix},
            "router": {"group_id": f"{prefix}router", "transactional_id_prefix": f"{prefix}tx"},
            "delivery": {"group_id": f"{prefix}deliver"},
            "observability": {"port": 0, "log_format": "json", "log_level": log_level},
            "cities": sim_city_overrides(sim, tls_dir, **city_extra),
        },
    )


@dataclass
class Stopped:
    code: int
    seconds: float
    """From SIGTERM to the process having exited."""


@dataclass
class GatewayRun:
    """One ``greenchannel run`` process at a time, restartable, logging to one file."""

    config: Path
    log: Path
    shutdown_timeout_s: float = 10.0
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> GatewayRun:
        self.port = free_ports(1)[0]
        self.runs += 1
        args = ["run", "--metrics-port", str(self.port)]
        args += ["--shutdown-timeout", str(self.shutdown_timeout_s)]
        self.proc = gateway_process(args, self.config, self.log, self.env)
        return self

    def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
        """(status, body) of GET ``path`` on the ops endpoint; status 0 when it does not answer."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError:
            return 0, ""

    def json(self, path: str) -> tuple[int, dict[str, Any]]:
        status, body = self.get(path)
        return status, (json.loads(body) if body else {})

    def wait_ready(self, timeout_s: float = 60.0) -> list[int]:
        """Poll /readyz until 200; returns every status seen (0 = endpoint not up yet)."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail()
            status, _ = self.get("/readyz", timeout_s=1.0)
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == 200:
                return seen
            time.sleep(0.05)
        raise AssertionError(f"/readyz not 200 after {timeout_s}s (saw {seen}):\n{self.tail()}")

    def terminate(self, wait_s: float = 60.0) -> Stopped:
        """SIGTERM and wait for the exit; measures the drain."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"no exit {wait_s}s after SIGTERM:\n{self.tail()}") from None
        return Stopped(int(self.proc.returncode), time.monotonic() - started)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]

    def log_entries(self) -> list[dict[str, Any]]:
        """The JSON log lines (other lines, e.g. from the interpreter, are skipped)."""
        out = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


def expected_escalations(settings: Settings, samples: Iterable[Sample]) -> dict[str, str]:
    """escalation id -> city for every sample the default rules escalate."""
    classifier = load_rules(settings.router.rules_file)
    green = set(settings.router.green_cities)
    out: dict[str, str] = {}
    for sample in samples:
        city = city_key(sample.record["city_code"])
        if city in green and classifier.classify(sample.record).major:
            out[escalation_id(sample.record["complaint_id"], city)] = city
    return out


class Publisher:
    """Publishes complaints from a thread at a steady rate (like an upstream system)."""

    def __init__(self, settings: Settings, samples: list[Sample], rate: float) -> None:
        self.settings = settings
        self.samples = samples
        self.rate = rate
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> Publisher:
        self.thread.start()
        return self

    def _run(self) -> None:
        producer = Producer(self.settings.kafka)
        try:
            publish(
                producer,
                Codec(self.settings.codec),
                Topics(self.settings.topics.prefix).complaints,
                iter(self.samples),
                pacer=Pacer(self.rate),
                max_in_flight=200,
            )
        except BaseException as exc:
            self.error = exc
        finally:
            producer.close()

    def join(self, timeout_s: float = 120.0) -> None:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "publisher did not finish"
        assert self.error is None, f"publishing failed: {self.error!r}"
