"""One supervisor, N member processes: ``greenchannel run|route --processes N``.

A router is CPU-bound in one Python thread, so a machine's cores are used by running several
member processes of the same consumer group. The supervisor starts them (each one a plain
``greenchannel run|route --member I`` process), forwards SIGTERM/SIGINT for a graceful drain,
and restarts a member that exits, with capped exponential backoff. Each member has a stable
identity from its index (``<instance>-<index>``): its router's transactional id (a restarted
member fences its predecessor's open transaction) and its static group membership (a member
back within ``router.session_timeout_ms`` gets its partitions again without a rebalance, so
the other members keep committing).

Restart policy (exit codes as in ``docs/errors.md``), decided by :func:`decide`:

* exit 2 (configuration refused) is never retried: every member is stopped and the supervisor
  exits 2 — restarting would fail the same way, in a loop;
* any other exit (1 fatal, 3 stuck, 5 unreachable, a signal, even 0 without a stop) is
  restarted after ``process.restart_initial_s``, doubling for each exit in a row up to
  ``process.restart_max_s``; a member that ran ``process.restart_reset_s`` starts over at the
  initial wait;
* more than ``process.max_restarts`` restarts of one member within ``process.restart_window_s``:
  the crash loop is handed to the orchestrator — every member is stopped and the supervisor
  exits with that member's code.

Time, sleep and process creation are injected (:class:`Supervisor`), so the policy is tested
with fakes. The ops endpoint of the set is :mod:`gateway.ops.members`.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn, Protocol

from gateway.config import ProcessSettings
from gateway.errors import ConfigError
from gateway.ops.members import MemberView

log = logging.getLogger(__name__)

EXIT_CONFIG = 2
EXIT_FATAL, EXIT_DRAIN_TIMEOUT = 1, 4
DRAIN_MARGIN_S = 5.0
"""A member's own drain may take ``--shutdown-timeout`` + 5 s (``gateway.app``); the
supervisor waits that long plus this before it kills what is left."""
TICK_S = 0.1
"""How often the supervisor looks at its members."""


class Child(Protocol):
    """A started member process (``subprocess.Popen`` or a fake)."""

    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int, /) -> None: ...

    def kill(self) -> None: ...


Spawn = Callable[[int], Child]
"""Start member ``index``."""


@dataclass(frozen=True)
class RestartPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    reset_s: float = 60.0
    max_restarts: int = 10
    window_s: float = 600.0

    @classmethod
    def of(cls, settings: ProcessSettings) -> RestartPolicy:
        return cls(
            settings.restart_initial_s,
            settings.restart_max_s,
            settings.restart_reset_s,
            settings.max_restarts,
            settings.restart_window_s,
        )


@dataclass(frozen=True)
class Decision:
    action: Literal["restart", "stop"]
    delay_s: float = 0.0
    code: int = 0
    """With ``stop``: the supervisor's exit code."""
    reason: str = ""


@dataclass
class History:
    """What the policy remembers of one member's exits."""

    in_a_row: int = 0
    restarts: list[float] = field(default_factory=list)
    """When it was restarted, within the window."""


def exit_code(returncode: int) -> int:
    """A process's return code as a supervisor exit code (killed by a signal: 1)."""
    return returncode if returncode > 0 else EXIT_FATAL


def decide(
    policy: RestartPolicy, history: History, returncode: int, ran_s: float, now: float
) -> Decision:
    """What to do about a member that exited with ``returncode`` after running ``ran_s``
    (updates ``history`` when it is to be restarted)."""
    if returncode == EXIT_CONFIG:
        return Decision("stop", code=EXIT_CONFIG, reason="configuration refused (exit 2)")
    history.restarts = [t for t in history.restarts if now - t < policy.window_s]
    if len(history.restarts) >= policy.max_restarts:
        return Decision(
            "stop",
            code=exit_code(returncode),
            reason=f"{len(history.restarts)} restarts within {policy.window_s:g}s",
        )
    history.in_a_row = 1 if ran_s >= policy.reset_s else history.in_a_row + 1
    delay = min(policy.max_s, policy.initial_s * 2 ** (history.in_a_row - 1))
    history.restarts.append(now)
    return Decision("restart", delay_s=delay)


@dataclass
class _Slot:
    index: int
    child: Child | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    history: History = field(default_factory=History)
    last_exit: int | None = None
    restarts: int = 0


class Supervisor:
    """Keeps ``count`` members running until stopped (see the module docstring)."""

    def __init__(
        self,
        count: int,
        spawn: Spawn,
        policy: RestartPolicy,
        *,
        shutdown_timeout_s: float = 20.0,
        ports: Sequence[int] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.spawn = spawn
        self.policy = policy
        self.shutdown_timeout_s = shutdown_timeout_s
        self.ports = list(ports) or [0] * count
        self.clock = clock
        self.sleep = sleep
        self.slots = [_Slot(i) for i in range(count)]
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start every member not started yet (``run`` does it too; a caller that must start
        them before its own threads, see :func:`fork_spawner`, calls it first)."""
        for slot in self.slots:
            if slot.child is None and slot.restart_at is None:
                self._start(slot)

    def run(self, stop: threading.Event) -> int:
        """Start every member, keep them running until ``stop``, then drain; the exit code."""
        self.start()
        code: int | None = None
        while code is None and not stop.is_set():
            code = self.step()
            if code is None:
                self.sleep(TICK_S)
        drained = self.drain()
        return code if code is not None else drained

    def step(self) -> int | None:
        """Reap exited members, start due restarts; an exit code when the set must stop."""
        now = self.clock()
        for slot in self.slots:
            if slot.child is not None:
                returncode = slot.child.poll()
                if returncode is None:
                    continue
                code = self._exited(slot, returncode, now)
                if code is not None:
                    return code
            if slot.restart_at is not None and now >= slot.restart_at:
                slot.restarts += 1
                self._start(slot)
        return None

    def _exited(self, slot: _Slot, returncode: int, now: float) -> int | None:
        with self._lock:
            slot.child = None
            slot.last_exit = returncode
        decision = decide(self.policy, slot.history, returncode, now - slot.started_at, now)
        if decision.action == "stop":
            log.critical(
                "supervisor: member %d exited with %d: %s; stopping every member",
                slot.index,
                returncode,
                decision.reason,
            )
            return decision.code
        log.warning(
            "supervisor: member %d exited with %d after %.1fs; restarting in %.1fs",
            slot.index,
            returncode,
            now - slot.started_at,
            decision.delay_s,
        )
        slot.restart_at = now + decision.delay_s
        return None

    def _start(self, slot: _Slot) -> None:
        child = self.spawn(slot.index)
        with self._lock:
            slot.child = child
            slot.started_at = self.clock()
            slot.restart_at = None
        log.info("supervisor: member %d started (pid %d)", slot.index, child.pid)

    def drain(self) -> int:
        """SIGTERM every running member and wait for them (SIGKILL after the deadline)."""
        for slot in self.slots:
            slot.restart_at = None
            if slot.child is not None:
                with contextlib.suppress(ProcessLookupError):
                    slot.child.send_signal(signal.SIGTERM)
        deadline = self.clock() + self.shutdown_timeout_s + DRAIN_MARGIN_S + 2.0
        codes: list[int] = []
        while True:
            running = []
            for slot in self.slots:
                if slot.child is None:
                    continue
                returncode = slot.child.poll()
                if returncode is None:
                    running.append(slot)
                    continue
                codes.append(returncode)
                with self._lock:
                    slot.child, slot.last_exit = None, returncode
            if not running:
                break
            if self.clock() >= deadline:
                for slot in running:
                    log.error("supervisor: member %d did not drain in time: killed", slot.index)
                    with contextlib.suppress(ProcessLookupError):
                        slot.child.kill()  # type: ignore[union-attr]  # running: not None
                return EXIT_DRAIN_TIMEOUT
            self.sleep(TICK_S)
        failed = [c for c in codes if c != 0]
        return exit_code(failed[0]) if failed else 0

    def views(self) -> list[MemberView]:
        """The members as the ops endpoint shows them."""
        with self._lock:
            return [
                MemberView(
                    member=s.index,
                    port=self.ports[s.index],
                    pid=s.child.pid if s.child is not None else None,
                    started_at=s.started_at,
                    restarts=s.restarts,
                    last_exit=s.last_exit,
                )
                for s in self.slots
            ]


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU limit (a
    container's ``resources.limits.cpu``, rounded down, at least 1)."""
    counter = getattr(os, "process_cpu_count", None)  # Python >= 3.13
    if counter is not None:
        cores = int(counter() or 1)
    elif hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cores = min(cores, max(1, math.floor(limit)))
    return max(1, cores)


def cgroup_cpu_limit(root: Path) -> float | None:
    """CPUs granted by the cgroup's CFS quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), if any."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def member_ports(host: str, base: int, count: int) -> list[int]:
    """Member ``i``'s ops port: ``base + 1 + i``, or a free port when ``base`` is 0."""
    if base == 0:
        return [_free_port(host) for _ in range(count)]
    if base + count > 65_535:
        raise ConfigError(
            f"observability.port {base}: members need ports up to {base + count}, over 65535"
        )
    return [base + 1 + i for i in range(count)]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


MEMBER_HOST = "127.0.0.1"
"""Members' ops endpoints listen on loopback only: the supervisor's endpoint is the public one."""


def member_command(
    command: str,
    index: int,
    *,
    instance: str,
    port: int,
    shutdown_timeout_s: float,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of member ``index`` (the same CLI, one process)."""
    return [
        sys.executable,
        "-m",
        "gateway.cli",
        command,
        "--member",
        str(index),
        "--instance",
        instance,
        "--metrics-port",
        str(port),
        "--shutdown-timeout",
        str(shutdown_timeout_s),
        *extra,
    ]


def process_spawner(
    commands: Callable[[int], list[str]], env: Mapping[str, str]
) -> Callable[[int], Child]:
    """Start member ``index`` as a child process sharing this one's stdout and stderr, in its
    own session: a terminal's Ctrl-C reaches the supervisor only, which forwards it once."""

    def spawn(index: int) -> Child:
        return subprocess.Popen(commands(index), env=dict(env), start_new_session=True)

    return spawn


class ForkedChild:
    """A member forked from the supervisor (:func:`fork_spawner`): ``Child`` over its pid, the
    return code as ``subprocess.Popen`` gives it (killed by signal N: -N)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone, its code unknown
                self.returncode = EXIT_FATAL
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int, /) -> None:
        if self.poll() is None:  # never signal a pid that may have been reused
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


MemberMain = Callable[[list[str]], None]
"""Runs a member in a forked child from its command line's arguments after ``-m gateway.cli``
(``gateway.cli.main``); it exits through ``SystemExit``."""


MEMBER_MODULES = ("gateway.app",)
"""What a member imports before it connects (the loops, the clients, kafka-python, fastavro)."""


def preload_member(modules: Sequence[str] = MEMBER_MODULES) -> None:
    """Import the members' modules here once, for :func:`fork_spawner`'s children."""
    for name in modules:
        importlib.import_module(name)


def may_fork() -> bool:
    """Forking is safe only while this process runs one thread: a lock another thread holds at
    the fork stays locked forever in the child."""
    return hasattr(os, "fork") and threading.active_count() == 1


def fork_spawner(
    commands: Callable[[int], list[str]],
    env: Mapping[str, str],
    member_main: MemberMain,
    *,
    fallback: Spawn | None = None,
    can_fork: Callable[[], bool] = may_fork,
) -> Spawn:
    """Start member ``index`` as a fork of this process while it is single-threaded, else (a
    restart, once the supervisor's ops endpoint runs threads) with ``fallback``
    (:func:`process_spawner`).

    The supervisor has imported the member's modules before (``preload``), so a forked member
    skips the interpreter's start-up and the gateway's imports (~0.8 s of CPU on the benchmark
    machine, per member, while the others start too) and shares those pages with its siblings
    until it writes them. The child gets what ``process_spawner`` gives one: its own session,
    the members' environment, default signal handlers, and the member's command line; it never
    returns into the supervisor's code (``os._exit`` with the member's exit code)."""
    spawn_process = fallback or process_spawner(commands, env)

    def spawn(index: int) -> Child:
        if not can_fork():
            return spawn_process(index)
        argv = commands(index)
        gc.freeze()  # the start-up objects stay in pages the members share
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child: measured by the members' tests
            _member_child(argv, env, member_main)
        return ForkedChild(pid)

    return spawn


def _member_child(argv: list[str], env: Mapping[str, str], member_main: MemberMain) -> NoReturn:
    code = EXIT_FATAL
    try:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        args = argv[argv.index("gateway.cli") + 1 :]
        sys.argv = ["greenchannel", *args]
        member_main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FATAL)
        if isinstance(exc.code, str):
            sys.stderr.write(f"{exc.code}\n")
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


SUPERVISOR_PID_ENV = "GC_SUPERVISOR_PID"
"""Tells a member its supervisor's pid (not a ``GREENCHANNEL_*`` setting)."""


def member_env(config_path: str | None) -> dict[str, str]:
    """The members' environment: this one's, the same config file, loopback ops endpoints."""
    env = dict(os.environ)
    env[SUPERVISOR_PID_ENV] = str(os.getpid())
    if config_path is not None:
        env["GREENCHANNEL_CONFIG"] = str(Path(config_path).resolve())
    env["GREENCHANNEL_OBSERVABILITY__HOST"] = MEMBER_HOST
    env["PYTHONUNBUFFERED"] = "1"
    return env


def die_with_parent() -> None:
    """Make this member receive SIGTERM when its supervisor dies (Linux ``PR_SET_PDEATHSIG``),
    so a supervisor killed with SIGKILL leaves no members behind; best effort elsewhere."""
    parent = os.environ.get(SUPERVISOR_PID_ENV, "")
    if sys.platform != "linux" or not parent.isdigit():
        return
    parent_pid = int(parent)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the supervisor died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, frame: object) -> None:
        log.info("supervisor: signal %s: draining every member", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
