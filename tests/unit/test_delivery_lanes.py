"""Lanes on one shared worker pool: per-key order, a city's concurrency, isolation of a blocked
or rate-limited city, the token a lane takes for a record's first attempt."""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gateway.delivery.lane import WAKE_GRID_S, Completion, Job, Lane
from gateway.delivery.workers import Workers, blocked, blocking
from gateway.kafka.clients import Record, TopicPartition
from gateway.policies.ratelimit import TokenBucket
from gateway.sdk import Accepted
from tests.unit.delivery_fakes import Clock, FakeConnector, FakeLiveness
from tests.unit.test_delivery_loops import an_escalation, city_delivery, wait_for

Handle = Callable[[Record], bool]


def pool(size: int, **kwargs: float) -> Workers:
    workers = Workers(size, **kwargs)  # type: ignore[arg-type]
    workers.start()
    return workers


def lane_on(
    workers: Workers, city: str, handle: Handle, *, concurrency: int = 4, pacer: object = None
) -> tuple[Lane, queue.SimpleQueue[Completion]]:
    done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
    ln = Lane(
        city,
        concurrency,
        lambda record, finish: finish(handle(record)),
        done,
        is_current=lambda tp, g: True,
        stop=threading.Event(),
        clock=Clock(),
        pool=workers,
        pacer=pacer,  # type: ignore[arg-type]
    )
    ln.start()
    return ln, done


def rec(city: str, offset: int, key: bytes) -> Record:
    return Record(f"u.escalations.{city}.v1", 0, offset, key, b"", [], 1_790_000_000_000)


def stop_all(workers: Workers, *lanes: Lane) -> None:
    for ln in lanes:
        ln.request_stop()
        assert ln.join(5)
    workers.request_stop()
    assert workers.join(5)


def test_lanes_on_one_pool_keep_each_keys_order_one_at_a_time() -> None:
    workers = pool(3)
    lock = threading.Lock()
    seen: dict[tuple[str, bytes], list[int]] = {}
    inside: dict[tuple[str, bytes], int] = {}
    overlaps: list[tuple[str, bytes]] = []

    def handle(r: Record) -> bool:
        key = (r.topic, r.key or b"")
        with lock:
            inside[key] = inside.get(key, 0) + 1
            overlaps.extend([key] if inside[key] > 1 else [])
            seen.setdefault(key, []).append(r.offset)
        time.sleep(0)  # let the other threads run meanwhile
        with lock:
            inside[key] -= 1
        return True

    a, done_a = lane_on(workers, "wuhu", handle)
    b, done_b = lane_on(workers, "hefei", handle)
    for i in range(100):
        a.submit(Job(rec("wuhu", i, b"k%d" % (i % 3)), 0))
        b.submit(Job(rec("hefei", i, b"k%d" % (i % 5)), 0))
    for done in (done_a, done_b):
        assert len([done.get(timeout=5) for _ in range(100)]) == 100
    assert overlaps == []
    assert len(seen) == 8
    assert all(items == sorted(items) for items in seen.values())
    assert workers.threads() == 3  # nothing blocked: no more threads
    stop_all(workers, a, b)


def test_a_city_never_has_more_than_its_concurrency_in_flight() -> None:
    workers = pool(8)
    gate = threading.Event()
    lock = threading.Lock()
    inside = [0, 0]  # now, most

    def handle(r: Record) -> bool:
        with lock:
            inside[0] += 1
            inside[1] = max(inside[1], inside[0])
        gate.wait(5)
        with lock:
            inside[0] -= 1
        return True

    ln, done = lane_on(workers, "wuhu", handle, concurrency=2)
    for i in range(10):
        ln.submit(Job(rec("wuhu", i, b"k%d" % i), 0))  # ten keys: only the limit holds them
    assert wait_for(lambda: inside[0] == 2)
    assert ln.in_flight == 2 and ln.queued == 10
    gate.set()
    assert len([done.get(timeout=5) for _ in range(10)]) == 10
    assert inside[1] == 2
    stop_all(workers, ln)


def test_a_blocked_city_does_not_hold_back_another_city() -> None:
    # One pool thread; the slow city blocks it (a bureau that does not answer): the pool
    # starts another thread for the healthy city's records.
    workers = pool(1, blocked_after_s=0.02, call_blocked_after_s=0.02, tick_s=0.005)
    gate = threading.Event()

    def wait(r: Record) -> bool:
        with blocking():  # as a bureau call is
            return gate.wait(10)

    slow, _ = lane_on(workers, "wuhu", wait, concurrency=2)
    fast, fast_done = lane_on(workers, "hefei", lambda r: True)
    slow.submit(Job(rec("wuhu", 0, b"a"), 0))
    slow.submit(Job(rec("wuhu", 1, b"b"), 0))
    assert wait_for(lambda: slow.in_flight == 2)
    began = time.monotonic()
    for i in range(20):
        fast.submit(Job(rec("hefei", i, b"k%d" % i), 0))
    assert len([fast_done.get(timeout=5) for _ in range(20)]) == 20
    assert time.monotonic() - began < 2.0 and not gate.is_set()
    assert 2 <= workers.threads() <= 3  # one per blocked thread, not one per record
    gate.set()
    stop_all(workers, slow, fast)


class Pacer:
    """A bucket the test opens: ``reserve`` has no token until ``tokens`` is raised."""

    def __init__(self) -> None:
        self.tokens = 0
        self.asked = 0
        self.prepaid_on: list[str] = []
        self.waits: list[float] = []

    def reserve(self) -> float:
        self.asked += 1
        if self.tokens:
            self.tokens -= 1
            return 0.0
        return 0.01

    @contextlib.contextmanager
    def prepaid(self) -> Iterator[None]:
        self.prepaid_on.append(threading.current_thread().name)
        yield

    def waited(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_a_city_short_of_tokens_holds_no_thread_and_starts_when_one_is_due() -> None:
    workers = pool(1)
    pacer = Pacer()
    calls: list[int] = []
    paced, paced_done = lane_on(
        workers, "wuhu", lambda r: calls.append(r.offset) or True, pacer=pacer
    )
    other, other_done = lane_on(workers, "hefei", lambda r: True)
    for i in range(3):
        paced.submit(Job(rec("wuhu", i, b"k%d" % i), 0))
    for i in range(5):
        other.submit(Job(rec("hefei", i, b"k%d" % i), 0))
    assert len([other_done.get(timeout=5) for _ in range(5)]) == 5  # not behind the paced city
    assert wait_for(lambda: pacer.asked >= 3)  # the timer looks again (no thread waits)
    assert calls == [] and paced.in_flight == 0 and workers.threads() == 1
    pacer.tokens = 3
    assert sorted(c.offset for c in (paced_done.get(timeout=5) for _ in range(3))) == [0, 1, 2]
    assert len(pacer.prepaid_on) == 3  # each first attempt ran on its prepaid token
    assert len(pacer.waits) == 1 and pacer.waits[0] > 0  # one wait, reported once
    stop_all(workers, paced, other)


class TimerPool:
    """Stands in for the pool: ``run`` runs at once, ``at`` only records the wake-up."""

    def __init__(self) -> None:
        self.wakes: list[tuple[float, Callable[[], None]]] = []

    def start(self) -> None:
        pass

    def run(self, task: Callable[[], None]) -> None:
        task()

    def at(self, due: float, task: Callable[[], None]) -> None:
        self.wakes.append((due, task))


class DuePacer(Pacer):
    """The next token is due at ``due`` (monotonic): each answer a few microseconds off, as
    two clocks read a moment apart give it."""

    def __init__(self, due: float) -> None:
        super().__init__()
        self.due = due
        self.jitter = itertools.cycle([0.0, -3e-6, 2e-6, -1e-6])

    def reserve(self) -> float:
        self.asked += 1
        if self.tokens:
            self.tokens -= 1
            return 0.0
        return max(1e-6, self.due - time.monotonic() + next(self.jitter))


def test_a_lane_short_of_tokens_keeps_one_wake_up_and_ignores_superseded_ones() -> None:
    """Records arriving while a lane waits for its token share one wake-up (not one each, a few
    microseconds apart), and a wake-up superseded by an earlier one does nothing when it fires:
    before, each superseded wake-up that fired cleared the lane's pending one and armed another,
    so duplicates lived on: ~23 wake-ups per delivery for five paced lanes."""
    workers = TimerPool()
    pacer = DuePacer(time.monotonic() + 0.05)
    calls: list[int] = []
    paced, done = lane_on(
        workers,  # type: ignore[arg-type]
        "wuhu",
        lambda r: calls.append(r.offset) or True,
        pacer=pacer,
    )
    for i in range(50):
        paced.submit(Job(rec("wuhu", i, b"k%d" % i), 0))
    assert len(workers.wakes) == 1
    [(due, first)] = workers.wakes
    assert due >= pacer.due - 1e-5  # rounded up: the token is due when the lane wakes
    assert round(due / WAKE_GRID_S, 6).is_integer()  # on the grid lanes share

    # A token is due much earlier now (another lane's give-back, a recovered rate): the lane
    # arms an earlier wake-up; the first one, superseded, must not pump when it fires.
    pacer.due = time.monotonic() + 0.02
    paced.submit(Job(rec("wuhu", 50, b"k50"), 0))
    assert len(workers.wakes) == 2
    asked = pacer.asked
    first()
    assert pacer.asked == asked and len(workers.wakes) == 2  # superseded: nothing happened
    pacer.tokens = 2
    workers.wakes[1][1]()  # the current one pumps: two records start
    assert calls == [0, 1]
    assert len(workers.wakes) == 3  # short again: one new wake-up
    assert [done.get(timeout=5).offset for _ in range(2)] == [0, 1]


def test_a_prepaid_token_is_used_by_the_first_attempt_or_given_back() -> None:
    connector = FakeConnector([Accepted("WH-1")])
    delivery = city_delivery(connector, burst=2, rate_per_s=0.001)
    delivery.limiter = TokenBucket(0.001, 2, Clock())  # two tokens, no refill
    assert delivery.reserve() == 0.0
    with delivery.prepaid():
        assert delivery.deliver(an_escalation()).accepted  # no second token taken
    assert delivery.reserve() == 0.0  # the second token is still there
    assert delivery.reserve() > 0
    with delivery.prepaid():
        pass  # no attempt made (a dropped record): the token goes back
    assert delivery.reserve() == 0.0
    assert len(connector.requests) == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_pool_thread_that_dies_is_reported_and_replaced_when_work_waits() -> None:
    liveness = FakeLiveness(Clock())
    workers = Workers(1, liveness=liveness, workers_name="deliver-workers", tick_s=0.005)
    workers.start()

    def die() -> None:
        raise SystemExit("simulated thread death")

    workers.run(die)
    assert wait_for(lambda: workers.dead_workers() == ["deliver-0"])
    assert liveness.failures and liveness.failures[0][0] == "deliver-workers"
    ran = threading.Event()
    workers.run(ran.set)
    assert ran.wait(5)
    workers.request_stop()
    assert workers.join(5)


def test_idle_threads_over_the_pool_size_exit() -> None:
    workers = pool(1, blocked_after_s=0.01, tick_s=0.005, keep_s=0.05)
    gate = threading.Event()

    def wait() -> None:
        blocked()  # as a retrying delivery is
        gate.wait(5)

    workers.run(wait)
    ran = threading.Event()
    workers.run(ran.set)
    assert ran.wait(5)  # ran on a second thread, the first being blocked
    assert workers.threads() == 2
    gate.set()
    assert wait_for(lambda: workers.threads() == 1)
    workers.request_stop()
    assert workers.join(5)


def test_a_revoked_record_on_a_shared_pool_frees_its_slot() -> None:
    workers = pool(2)
    done: queue.SimpleQueue[Completion] = queue.SimpleQueue()
    current: Callable[[TopicPartition, int], bool] = lambda tp, g: g == 1  # noqa: E731
    ln = Lane(
        "wuhu",
        1,
        lambda record, finish: finish(True),
        done,
        is_current=current,
        stop=threading.Event(),
        clock=Clock(),
        pool=workers,
    )
    ln.start()
    ln.submit(Job(rec("wuhu", 0, b"a"), 0))
    ln.submit(Job(rec("wuhu", 1, b"a"), 1))
    assert done.get(timeout=5).offset == 1
    assert wait_for(lambda: ln.in_flight == 0 and ln.queued == 0)
    stop_all(workers, ln)


def test_a_thread_that_is_only_busy_is_not_made_up_for() -> None:
    # Slow for want of CPU (not in a marked wait): another thread would not help it.
    workers = pool(1, blocked_after_s=0.01, tick_s=0.005)
    gate = threading.Event()
    ran = threading.Event()
    workers.run(lambda: gate.wait(5) and None)  # unmarked: counts as working
    workers.run(ran.set)
    assert not ran.wait(0.2)  # time itself is the scenario: many ticks pass
    assert workers.threads() == 1
    gate.set()
    assert ran.wait(5)
    workers.request_stop()
    assert workers.join(5)


def test_the_timer_runs_each_task_at_its_due_time_an_earlier_one_first() -> None:
    """A task due before the one the timer sleeps towards wakes it; tasks due later than that
    do not (the timer finds them when it wakes) and all run, in due order."""
    workers = pool(1)
    ran: list[str] = []
    now = time.monotonic()
    workers.at(now + 30.0, lambda: ran.append("late"))
    assert wait_for(lambda: workers._wakes_at > now + 29)  # the timer sleeps towards it
    workers.at(now + 0.2, lambda: ran.append("b"))  # earlier: wakes the timer
    workers.at(now + 0.1, lambda: ran.append("a"))
    workers.at(now + 0.3, lambda: ran.append("c"))  # after "b": no wake-up needed for it
    assert wait_for(lambda: len(ran) == 3)
    assert ran == ["a", "b", "c"] and time.monotonic() - now < 20
    workers.request_stop()
    assert workers.join(5)


def test_a_bureau_call_counts_as_blocked_only_once_it_is_slow_a_backoff_at_once() -> None:
    """A thread waiting for an answer is made up for only after ``call_blocked_after_s`` (most
    answers come within milliseconds: a thread for each would only add threads); a thread in
    a retry's backoff or a hold after ``blocked_after_s``."""
    workers = pool(1, blocked_after_s=0.01, call_blocked_after_s=30.0, tick_s=0.005)
    gate = threading.Event()
    ran: queue.SimpleQueue[str] = queue.SimpleQueue()

    def call() -> None:
        with blocking():
            gate.wait(10)

    workers.run(call)
    workers.run(lambda: ran.put("behind the call"))
    time.sleep(0.3)  # 30 ticks, 30 x blocked_after_s: still within call_blocked_after_s
    assert workers.threads() == 1 and ran.empty()
    gate.set()
    assert ran.get(timeout=5) == "behind the call"

    held = threading.Event()

    def backoff() -> None:
        blocked()
        held.wait(10)

    workers.run(backoff)
    workers.run(lambda: ran.put("behind the backoff"))
    assert ran.get(timeout=5) == "behind the backoff"  # on a thread started for it
    assert workers.threads() == 2
    held.set()
    workers.request_stop()
    assert workers.join(5)
