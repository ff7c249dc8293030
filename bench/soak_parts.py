"""The soak's moving parts: gateway processes under a supervisor, the publisher, the simulator.

:class:`GatewayProc` is one ``greenchannel route|deliver|run`` child, started as the gateway uid
(so the network cut can single it out), in its own session, killed with the soak (parent-death
signal). :class:`Publisher` sends complaints at a steady rate from a thread, with poison records
on demand, and tells the ledger what each acknowledged record should become.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from bench.soak_ledger import Expected, Ledger
from gateway.avro.codec import Codec
from gateway.cities import GREEN_CHANNEL, city_key
from gateway.config import Settings
from gateway.dev.samples import MAJOR_HEADER, NOT_COMPLAINTS, SampleFactory, utc_now_ms
from gateway.kafka.clients import Producer
from gateway.topics import Topics

REPO = Path(__file__).resolve().parent.parent
GREEN = {c.key for c in GREEN_CHANNEL}
BROKER_LIMIT_BYTES = 1_048_588
"""The broker's default ``message.max.bytes``: the oversized poison sits just under it."""
YEAR_10000_MS = 253_402_300_800_000
DELIVERY_TIMEOUT_MS = 120_000
WEDGED_AFTER_S = 150.0


def _preexec(join: Callable[[], None] | None) -> Callable[[], None]:
    """preexec: own session, SIGKILL when the soak dies (PR_SET_PDEATHSIG), join the cgroup."""

    def run() -> None:
        os.setsid()
        with suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        if join is not None:
            join()

    return run


class GatewayProc:
    """One gateway child process, restartable; counts its exits by code."""

    def __init__(
        self,
        name: str,
        args: list[str],
        config: Path,
        log: Path,
        join: Callable[[], None] | None = None,
    ) -> None:
        self.name, self.args, self.config, self.log, self.join = name, args, config, log, join
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: Counter[int] = Counter()
        self.starts = 0
        self.down_since: float | None = None

    def start(self) -> None:
        env = (
            {"GREENCHANNEL_PROCESS__MEMBERS": "1"}
            | os.environ
            | {  # one process each
                "GREENCHANNEL_CONFIG": str(self.config),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("GREENCHANNEL_BOOTSTRAP_SERVERS", None)
        with self.log.open("ab") as out:
            out.write(f"--- soak: start #{self.starts + 1} at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *self.args],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_preexec(self.join),  # noqa: PLW1509
            )  # fmt: skip
        self.starts += 1
        self.down_since = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reap(self) -> int | None:
        """The exit code if the process exited since the last call (and counts it)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        code = int(self.proc.returncode)
        self.exits[code] += 1
        self.proc = None
        self.down_since = time.monotonic()
        return code

    def signal(self, sig: int) -> bool:
        if not self.alive():
            return False
        assert self.proc is not None
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout_s: float) -> tuple[int | None, float]:
        """SIGTERM, wait, SIGKILL after ``timeout_s``; (exit code, seconds it took)."""
        started = time.monotonic()
        if not self.signal(signal.SIGTERM):
            return self.reap(), 0.0
        assert self.proc is not None
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.reap(), time.monotonic() - started


class Publisher:
    """Complaints at ``rate``/s on a thread; every acknowledged one is told to the ledger."""

    def __init__(self, settings: Settings, ledger: Ledger, rate: float, seed: int) -> None:
        self.topic = Topics(settings.topics.prefix).complaints
        self.ledger, self.rate = ledger, rate
        self.factory = SampleFactory(
            seed, major_share=0.15, start_ms=utc_now_ms(), interval_ms=max(1, round(1000 / rate))
        )
        self.rng = random.Random(seed + 1)
        self.codec = Codec(settings.codec)
        self.kafka = settings.kafka
        self.producer = self._producer()
        self.sent = self.abandoned = 0
        self.send_errors: Counter[str] = Counter()
        self.findings: list[str] = []
        self.diagnostics: list[str] = []
        """console only: too long for the report"""
        self._pending: dict[str, float] = {}
        """key -> when it was sent, until the producer acknowledges or fails it"""
        self._pending_lock = threading.Lock()
        self._poison: list[str] = []
        self._poison_lock = threading.Lock()
        self._poison_n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def _producer(self) -> Producer:
        return Producer(self.kafka, linger_ms=20, delivery_timeout_ms=DELIVERY_TIMEOUT_MS)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _check_wedged(self) -> None:
        """A send neither acknowledged nor failed well past the producer's own delivery timeout:
        the producer is wedged (seen after broker restarts). Say so, give up on what it holds
        (the ledger treats those as unacknowledged: fine if they arrive, not required) and
        carry on with a new producer, so complaints keep flowing."""
        now = time.monotonic()
        with self._pending_lock:
            oldest = min(self._pending.values(), default=now)
            if now - oldest < WEDGED_AFTER_S:
                return
            keys = list(self._pending)
            self._pending.clear()
        for key in keys:
            self.ledger.failed(key)
        self.abandoned += len(keys)
        self.findings.append(
            f"publisher: the producer neither acknowledged nor failed {len(keys)} sends for "
            f"{now - oldest:.0f} s (delivery timeout {DELIVERY_TIMEOUT_MS // 1000} s): replaced"
        )
        self.diagnostics.append(f"publisher: the wedged producer's threads: {_kafka_stacks()}")
        old, self.producer = self.producer, self._producer()
        threading.Thread(target=lambda: _quiet(old.close, 0), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)
        try:
            self.producer.flush(120)
        except Exception as exc:
            self.send_errors[f"flush: {type(exc).__name__}"] += 1
        with self._pending_lock:
            left = list(self._pending)
            self._pending.clear()
        if left:
            self.abandoned += len(left)
            self.findings.append(f"publisher: {len(left)} sends unacknowledged at the end")
            for key in left:
                self.ledger.failed(key)
        _quiet(self.producer.close, 10)
        self.codec.close()

    def poison(self, kind: str) -> None:
        """Queue one poison record of ``kind`` (sent by the publisher thread, in order)."""
        with self._poison_lock:
            self._poison.append(kind)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if next_at > now:
                self._stop.wait(next_at - now)
                continue
            next_at = max(next_at + interval, now - 1.0)  # never burst more than 1 s to catch up
            with self._poison_lock:
                kind = self._poison.pop(0) if self._poison else None
            try:
                self._check_wedged()
                if kind is None:
                    self._send_sample()
                else:
                    self._send_poison(kind)
            except Exception as exc:  # a broker restart or freeze: count it, carry on
                self.send_errors[type(exc).__name__] += 1
                self._stop.wait(0.5)

    def _send(
        self,
        key: str,
        value: bytes,
        expected: Expected,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        future = self.producer.send(self.topic, value, key=key.encode(), headers=headers)
        self.sent += 1
        with self._pending_lock:
            self._pending[key] = time.monotonic()
        future.add_callback(lambda _md: self._acked(key, expected))
        future.add_errback(lambda exc: self._failed(key, exc))

    def _acked(self, key: str, expected: Expected) -> None:
        with self._pending_lock:
            self._pending.pop(key, None)
        self.ledger.published(key, expected)

    def _failed(self, key: str, exc: Any) -> None:
        with self._pending_lock:
            self._pending.pop(key, None)
        self.send_errors[type(exc).__name__] += 1
        self.ledger.failed(key)

    def _send_sample(self) -> None:
        sample = self.factory.next()
        rec = sample.record
        city = city_key(rec["city_code"])
        if sample.major:
            kind = "major-green" if city in GREEN else "major-other"
        else:
            kind = "desk" if rec["category"] in NOT_COMPLAINTS else "general"
        value = self.codec.encode("complaint", rec, self.topic)
        headers = [(MAJOR_HEADER, b"1" if sample.major else b"0")]
        self._send(rec["complaint_id"], value, Expected(kind, city), headers)

    def _send_poison(self, kind: str) -> None:
        self._poison_n += 1
        key = f"poison-{kind}-{self._poison_n}"
        rng = self.rng
        if kind == "undecodable":
            value = rng.choice(
                [
                    b"\x00soak: not an Avro complaint",
                    b"\xc3\x01" + rng.randbytes(40),
                    rng.randbytes(rng.randint(1, 300)),
                    b"\xc3\x01" + b"\x00" * 8 + b"\xfe\xff\xff\xff\x0f",
                ]
            )
            self._send(key, value, Expected("poison-undecodable"))
        elif kind == "oversized":
            self._send(key, rng.randbytes(BROKER_LIMIT_BYTES - 200), Expected("poison-oversized"))
        elif kind == "big-header":
            sample = self.factory.next(major=False)
            value = self.codec.encode("complaint", sample.record, self.topic)
            headers = [("x-soak-trace", b"t" * 1_000_000)]
            self._send(sample.record["complaint_id"], value, Expected("poison-big-header"), headers)
        elif kind == "far-future":
            city = rng.choice(GREEN_CHANNEL)
            sample = self.factory.next(major=True, city=city)
            record = sample.record | {"received_at": YEAR_10000_MS}
            value = self.codec.encode("complaint", record, self.topic)
            self._send(record["complaint_id"], value, Expected("poison-far-future", city.key))
        else:
            raise ValueError(f"unknown poison kind {kind!r}")


def _kafka_stacks() -> str:
    """Where the soak's other threads are (innermost frames): kafka-python's sender among them."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        name = names.get(ident, "")
        if name in ("MainThread", "publisher", "ledger"):
            continue
        frames = traceback.extract_stack(frame)[-6:]
        where = " <- ".join(
            f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames)
        )
        out.append(f"[{name}] {where}")
    return "; ".join(out)[:4000] or "no other threads"


def _quiet(call: Callable[..., Any], *args: Any) -> None:
    with suppress(Exception):
        call(*args)


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception:  # not up yet
            pass
        time.sleep(every_s)
    return False
