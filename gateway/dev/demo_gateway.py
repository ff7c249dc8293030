"""The gateway as the demo runs it: a real ``greenchannel run`` child process, supervised (start,
readiness, SIGTERM drain, log tail), and the environment that points it at the demo's broker and
simulated bureaus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from gateway.config import DeliverySettings, RouterSettings, Settings, TopicSettings
from gateway.dev.demo_options import DemoError

if TYPE_CHECKING:
    from gateway.dev.bureaus import BureauSimulator

GATEWAY_DRAIN_S = 10.0


def _one_process(args: tuple[str, ...]) -> tuple[str, ...]:
    """The demo shows one gateway process (``run`` and ``route`` default to one per core)."""
    return ("--processes", "1") if args[:1] in (("run",), ("route",)) else ()


class GatewayProcess:
    """``greenchannel run`` as a child process in its own session (Ctrl-C reaches only us)."""

    def __init__(
        self,
        env: dict[str, str],
        metrics_port: int,
        log_path: Path,
        args: tuple[str, ...] = ("run",),
    ) -> None:
        script = Path(sys.executable).with_name("greenchannel")
        base = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
        self.command = [
            *base, *args, *_one_process(args), "--metrics-port", str(metrics_port),
            "--shutdown-timeout", f"{GATEWAY_DRAIN_S:g}",
        ]  # fmt: skip
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True,
            )  # fmt: skip
        return self.proc.pid

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, base_url: str, timeout_s: float, stop: threading.Event) -> None:
        """Until ``/readyz`` answers 200 (router and deliverer have their partitions)."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline and not stop.is_set():
                code = self.exit_code()
                if code is not None:
                    raise DemoError(f"the gateway exited with {code}:\n{self.log_tail()}")
                with suppress(httpx.HTTPError):
                    if http.get(f"{base_url}/readyz").status_code == 200:
                        return
                stop.wait(0.3)
        if not stop.is_set():
            raise DemoError(f"the gateway is not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, hurry: threading.Event) -> int | None:
        """SIGTERM and wait for the drain; SIGKILL after the drain timeout or on ``hurry``."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + GATEWAY_DRAIN_S + 10.0
            while proc.poll() is None and time.monotonic() < deadline and not hurry.is_set():
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(0.2)
            if proc.poll() is None:
                proc.kill()
        return proc.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no gateway log)"
        return "\n".join(text.splitlines()[-lines:])


def gateway_env(settings: Settings, sim: BureauSimulator) -> dict[str, str]:
    """The gateway's environment: ours, plus the broker, the simulator's real endpoints and,
    under a non-default topic prefix, consumer groups and transactional ids of its own (so a
    demo on a shared cluster never joins, or fences, somebody else's gateway)."""
    env = dict(os.environ)
    env["GREENCHANNEL_BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers
    env["PYTHONUNBUFFERED"] = "1"
    for name in sim.names():
        env[f"GREENCHANNEL_CITIES__{name.upper()}__ENDPOINT"] = sim.endpoint(name)
    prefix = settings.topics.prefix
    if prefix != TopicSettings().prefix:
        tag = prefix.strip(".") or "demo"
        router, delivery = RouterSettings(), DeliverySettings()
        defaults = {
            "ROUTER__GROUP_ID": (settings.router.group_id, router.group_id),
            "ROUTER__TRANSACTIONAL_ID_PREFIX": (
                settings.router.transactional_id_prefix,
                router.transactional_id_prefix,
            ),
            "DELIVERY__GROUP_ID": (settings.delivery.group_id, delivery.group_id),
        }
        for key, (current, default) in defaults.items():
            if current == default:
                env[f"GREENCHANNEL_{key}"] = f"{default}-{tag}"
    return env
