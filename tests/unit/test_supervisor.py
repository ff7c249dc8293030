"""The supervisor's restart and exit policy, with fake members and a fake clock; the ops
answers of a supervised set with a fake fetch; the default member count."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.ops.members import Fetch, MemberView, member_routes
from gateway.supervisor import (
    History,
    RestartPolicy,
    Supervisor,
    available_cores,
    cgroup_cpu_limit,
    decide,
    member_ports,
)

POLICY = RestartPolicy(initial_s=0.5, max_s=4.0, reset_s=60.0, max_restarts=5, window_s=600.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeChild:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.signals: list[int] = []
        self.drain_code: int | None = 0
        """What it exits with on SIGTERM (None: it hangs)."""

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int, /) -> None:
        self.signals.append(sig)
        if sig == signal.SIGTERM and self.drain_code is not None:
            self.returncode = self.drain_code

    def kill(self) -> None:
        self.returncode = -9


class Spawner:
    def __init__(self) -> None:
        self.started: list[tuple[int, FakeChild]] = []

    def __call__(self, index: int) -> FakeChild:
        child = FakeChild(100 + len(self.started))
        self.started.append((index, child))
        return child

    def current(self, index: int) -> FakeChild:
        return [c for i, c in self.started if i == index][-1]


def supervisor(count: int = 2) -> tuple[Supervisor, Spawner, Clock]:
    clock, spawn = Clock(), Spawner()
    sup = Supervisor(count, spawn, POLICY, shutdown_timeout_s=10.0, clock=clock, sleep=clock.sleep)
    for slot in sup.slots:
        sup._start(slot)
    return sup, spawn, clock


def test_a_member_that_dies_is_restarted_after_a_doubling_backoff_and_the_others_untouched() -> (
    None
):
    sup, spawn, clock = supervisor()
    other = spawn.current(0)
    waits: list[float] = []
    for _ in range(4):
        spawn.current(1).returncode = -9  # SIGKILL
        assert sup.step() is None
        died = clock.now
        while len(spawn.started) == 2 + len(waits):
            clock.sleep(0.1)
            assert sup.step() is None
        waits.append(round(clock.now - died, 1))
    assert waits == [0.5, 1.0, 2.0, 4.0]  # capped at restart_max_s next
    assert other.signals == [] and spawn.current(0) is other
    assert sup.views()[1].restarts == 4 and sup.views()[1].last_exit == -9


def test_a_member_that_ran_long_enough_restarts_after_the_initial_wait_again() -> None:
    history = History()
    for _ in range(3):
        decide(POLICY, history, 1, ran_s=1.0, now=0.0)
    assert decide(POLICY, history, 1, ran_s=1.0, now=1.0).delay_s == 4.0
    assert decide(POLICY, history, 1, ran_s=61.0, now=70.0).delay_s == 0.5


@pytest.mark.parametrize("code", [0, 1, 3, 4, 5, -9, -15])
def test_every_exit_but_a_configuration_error_is_restarted(code: int) -> None:
    assert decide(POLICY, History(), code, ran_s=5.0, now=0.0).action == "restart"


def test_a_configuration_error_stops_every_member_and_is_the_exit_code() -> None:
    sup, spawn, _ = supervisor(3)
    spawn.current(1).returncode = 2
    code = sup.step()
    assert code == 2
    assert sup.drain() == 0  # the others drained cleanly
    assert len(spawn.started) == 3, "a configuration error was restarted"
    for index in (0, 2):
        assert spawn.current(index).signals == [signal.SIGTERM]


def test_run_returns_the_configuration_error_after_draining_the_others() -> None:
    clock, spawn = Clock(), Spawner()
    sup = Supervisor(2, spawn, POLICY, clock=clock, sleep=clock.sleep)

    def sleep(seconds: float) -> None:  # member 0 is refused its config once both started
        clock.sleep(seconds)
        spawn.current(0).returncode = 2

    sup.sleep = sleep
    assert sup.run(threading.Event()) == 2
    assert spawn.current(1).signals == [signal.SIGTERM]
    assert len(spawn.started) == 2


def test_a_crash_loop_beyond_the_budget_is_handed_to_the_orchestrator() -> None:
    history = History()
    for i in range(POLICY.max_restarts):
        assert decide(POLICY, history, 1, ran_s=1.0, now=float(i)).action == "restart"
    stop = decide(POLICY, history, 1, ran_s=1.0, now=10.0)
    assert (stop.action, stop.code) == ("stop", 1)
    assert decide(POLICY, history, -9, ran_s=1.0, now=11.0).code == 1  # a signal: 1
    # restarts older than the window no longer count
    assert decide(POLICY, history, 1, ran_s=1.0, now=700.0).action == "restart"


def test_sigterm_is_forwarded_to_every_member_and_a_clean_drain_exits_0() -> None:
    clock, spawn = Clock(), Spawner()
    sup = Supervisor(2, spawn, POLICY, clock=clock, sleep=clock.sleep)
    stop = threading.Event()
    stop.set()  # the signal arrived
    assert sup.run(stop) == 0
    assert [c.signals for _, c in spawn.started] == [[signal.SIGTERM]] * 2


def test_a_member_that_does_not_drain_in_time_is_killed_and_the_exit_is_4() -> None:
    sup, spawn, clock = supervisor()
    spawn.current(1).drain_code = None  # hangs
    started = clock.now
    assert sup.drain() == 4
    assert spawn.current(1).returncode == -9
    assert clock.now - started == pytest.approx(10.0 + 5.0 + 2.0, abs=0.2)


def test_a_member_failing_its_drain_makes_the_exit_code() -> None:
    sup, spawn, _ = supervisor()
    spawn.current(0).drain_code = 1
    assert sup.drain() == 1


def test_no_restart_is_started_once_draining() -> None:
    sup, spawn, clock = supervisor()
    spawn.current(0).returncode = 1
    assert sup.step() is None  # restart scheduled in 0.5 s
    assert sup.drain() == 0
    clock.sleep(5)
    assert sup.step() is None
    assert len(spawn.started) == 2


def _fetch(answers: dict[tuple[int, str], tuple[int, bytes]]) -> Fetch:
    return lambda port, path: answers.get((port, path), (0, b""))


def _view(member: int, pid: int | None = 10, started_at: float = 0.0) -> MemberView:
    return MemberView(member, 9309 + member, pid, started_at, 0, None)


def test_readyz_is_200_only_when_every_member_is_ready() -> None:
    ready = (200, json.dumps({"ok": True, "components": {"router": True}}).encode())
    answers = {(9309, "/readyz"): ready, (9310, "/readyz"): (503, b"{}")}
    routes = member_routes(lambda: [_view(0), _view(1)], _fetch(answers))
    status, body, _ = routes["/readyz"]()
    assert status == 503
    assert json.loads(body)["members"]["0"] == {
        "ready": True,
        "pid": 10,
        "components": {"router": True},
    }
    answers[(9310, "/readyz")] = ready
    assert routes["/readyz"]()[0] == 200
    waiting = member_routes(lambda: [_view(0), _view(1, pid=None)], _fetch(answers))
    assert waiting["/readyz"]()[0] == 503  # a member waiting for its restart is not ready


def test_healthz_tolerates_a_restarting_or_starting_member_not_a_sick_or_silent_one() -> None:
    clock = Clock()
    healthy = (200, b'{"ok": true}')
    answers = {(9309, "/healthz"): healthy}
    views = [_view(0), _view(1, pid=None)]
    routes = member_routes(lambda: views, _fetch(answers), clock=clock, start_grace_s=60)
    assert routes["/healthz"]()[0] == 200  # member 1 waits for its restart
    views[1] = _view(1, pid=11, started_at=clock.now - 5)  # restarted, endpoint not up yet
    assert routes["/healthz"]()[0] == 200
    views[1] = _view(1, pid=11, started_at=clock.now - 61)  # silent beyond the grace
    assert routes["/healthz"]()[0] == 503
    answers[(9310, "/healthz")] = (503, b'{"ok": false}')
    views[1] = _view(1, pid=11, started_at=clock.now - 5)
    status, body, _ = routes["/healthz"]()
    assert status == 503 and json.loads(body)["members"]["1"]["ok"] is False


def test_metrics_merge_the_members_with_a_member_label() -> None:
    def exposition(n: float) -> bytes:
        return (
            "# HELP greenchannel_build_info Build.\n"
            "# TYPE greenchannel_build_info gauge\n"
            'greenchannel_build_info{version="1.0"} 1.0\n'
            "# HELP greenchannel_router_consumed_total Consumed.\n"
            "# TYPE greenchannel_router_consumed_total counter\n"
            f"greenchannel_router_consumed_total {n}\n"
            "# HELP greenchannel_router_stalled Stalled.\n"
            "# TYPE greenchannel_router_stalled gauge\n"
            'greenchannel_router_stalled{reason="rebalance"} 0.0\n'
        ).encode()

    answers = {(9309, "/metrics"): (200, exposition(5)), (9310, "/metrics"): (200, exposition(7))}
    views = [_view(0), _view(1), _view(2)]  # member 2 does not answer: left out
    _, body, _ = member_routes(lambda: views, _fetch(answers))["/metrics"]()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    consumed = families["greenchannel_router_consumed"]
    assert consumed.type == "counter"
    assert {(s.labels["member"], s.value) for s in consumed.samples} == {("0", 5.0), ("1", 7.0)}
    stalled = families["greenchannel_router_stalled"].samples
    assert {s.labels["member"] for s in stalled} == {"0", "1"}
    assert all(s.labels["reason"] == "rebalance" for s in stalled)
    assert body.decode().count("# TYPE greenchannel_router_consumed_total counter") == 1
    build = families["greenchannel_build_info"].samples  # one per pod: joins on instance work
    assert [s.labels for s in build] == [{"version": "1.0"}]


def test_member_ports_follow_the_base_port_or_are_free_ones() -> None:
    assert member_ports("127.0.0.1", 9308, 3) == [9309, 9310, 9311]
    free = member_ports("127.0.0.1", 0, 2)
    assert len(set(free)) == 2 and all(p > 0 for p in free)


def test_the_default_member_count_follows_the_cgroup_cpu_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert available_cores(tmp_path) == 1  # rounded down
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cores(tmp_path) == 1  # at least one
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 4.0


def test_process_settings_from_file_and_env_and_refused_out_of_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GREENCHANNEL_PROCESS__MEMBERS", raising=False)
    assert load_settings().process.members is None  # one per core
    config = tmp_path / "gc.yaml"
    config.write_text("process: {members: 3, restart_max_s: 5}\n")
    settings = load_settings(config)
    assert (settings.process.members, RestartPolicy.of(settings.process).max_s) == (3, 5.0)
    monkeypatch.setenv("GREENCHANNEL_PROCESS__MEMBERS", "2")
    assert load_settings(config).process.members == 2
    config.write_text("process: {members: 0}\n")
    monkeypatch.delenv("GREENCHANNEL_PROCESS__MEMBERS")
    with pytest.raises(ConfigError, match=r"process\.members"):
        load_settings(config)
