"""Members forked from the supervisor (``gateway.supervisor.fork_spawner``): real forks, in a
fresh single-threaded interpreter each (a pytest worker runs threads, and forking is refused
there by design); and the fall-back to a fresh process once threads run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from gateway.supervisor import Supervisor, fork_spawner, may_fork
from tests.unit.test_supervisor import POLICY, Clock, Spawner

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: fork member 0 with the given member main, then report what the
# child saw (written by the child to a file) and the return code the parent's handle gives.
HARNESS = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from gateway.supervisor import ForkedChild, fork_spawner, may_fork

    out, behaviour = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGTERM, lambda *a: None)  # the supervisor's own handler

    def member_main(args):
        seen = {
            "args": args,
            "argv": sys.argv,
            "env": dict(os.environ),
            "own_session": os.getsid(0) == os.getpid(),
            "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
            "ppid_is_parent": os.getppid() == int(os.environ["PARENT"]),
        }
        with open(out, "w") as f:
            json.dump(seen, f)
        if behaviour == "exit3":
            sys.exit(3)
        if behaviour == "exit-message":
            sys.exit("refused: a message")
        if behaviour == "raise":
            raise RuntimeError("boom in the member")
        if behaviour == "hang":
            time.sleep(60)

    def no_fallback(index):
        raise AssertionError("forking was possible: the fall-back must not run")

    command = [sys.executable, "-m", "gateway.cli", "route", "--member", "0", "--instance", "x"]
    env = {"PARENT": str(os.getpid()), "GREENCHANNEL_OBSERVABILITY__HOST": "127.0.0.1"}
    assert may_fork()
    spawn = fork_spawner(lambda i: command, env, member_main, fallback=no_fallback)
    child = spawn(0)
    assert isinstance(child, ForkedChild) and child.pid != os.getpid()
    if behaviour == "hang":
        deadline = time.monotonic() + 10
        while not os.path.exists(out) and time.monotonic() < deadline:
            time.sleep(0.01)
        child.kill()
    deadline = time.monotonic() + 20
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)  # gone and reaped: never signals a reused pid
    print(json.dumps({"code": child.poll(), "in_parent": os.getpid()}))
    """
)


def fork_once(tmp_path: Path, behaviour: str) -> tuple[dict[str, object], dict[str, object], str]:
    out = tmp_path / "seen.json"
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, str(out), behaviour],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    # the child never runs the parent's code after the fork: one result line, the parent's
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    return result, json.loads(out.read_text()), proc.stderr


def test_a_forked_member_runs_its_command_in_its_own_session_with_the_members_env(
    tmp_path: Path,
) -> None:
    result, seen, _ = fork_once(tmp_path, "return")
    assert result["code"] == 0
    assert seen["args"] == ["route", "--member", "0", "--instance", "x"]
    assert seen["argv"] == ["greenchannel", "route", "--member", "0", "--instance", "x"]
    env = seen["env"]
    assert isinstance(env, dict)
    assert env["GREENCHANNEL_OBSERVABILITY__HOST"] == "127.0.0.1"
    assert "PATH" not in env, "the child's environment is the members' one, not the parent's"
    assert seen["own_session"] and seen["sigterm_default"] and seen["ppid_is_parent"]


@pytest.mark.parametrize(
    ("behaviour", "code", "stderr_has"),
    [
        ("exit3", 3, ""),
        ("exit-message", 1, "refused: a message"),
        ("raise", 1, "RuntimeError: boom in the member"),
        ("hang", -signal.SIGKILL, ""),
    ],
)
def test_a_forked_members_exit_is_reported_as_a_process_return_code(
    tmp_path: Path, behaviour: str, code: int, stderr_has: str
) -> None:
    result, _, stderr = fork_once(tmp_path, behaviour)
    assert result["code"] == code
    assert stderr_has in stderr


def test_with_threads_running_a_member_is_started_as_a_fresh_process() -> None:
    fallback = Spawner()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        assert not may_fork()
        spawn = fork_spawner(lambda i: ["x"], {}, lambda args: None, fallback=fallback)
        child = spawn(1)
    finally:
        stop.set()
        thread.join()
    assert fallback.started == [(1, child)]


def test_start_then_run_starts_each_member_once() -> None:
    clock, spawn = Clock(), Spawner()
    sup = Supervisor(2, spawn, POLICY, clock=clock, sleep=clock.sleep)
    sup.start()
    assert [i for i, _ in spawn.started] == [0, 1]
    stop = threading.Event()
    stop.set()
    assert sup.run(stop) == 0
    assert [i for i, _ in spawn.started] == [0, 1], "run() started them again"
