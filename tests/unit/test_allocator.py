"""Process tuning at start-up: glibc allocator (gateway.app.tune_allocator), interpreter lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.app import ALLOCATOR_TUNING, GIL_SWITCH_INTERVAL_S, tune_allocator

pytestmark = pytest.mark.unit


def test_each_setting_is_applied_unless_the_environment_already_sets_it() -> None:
    # a child process: mallopt changes the allocator of the process that calls it
    code = (
        "from gateway.app import tune_allocator; "
        "print(sorted(tune_allocator({'MALLOC_ARENA_MAX': '4'}).items()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == str(
        sorted((k, v) for k, (_, v) in ALLOCATOR_TUNING.items() if k != "MALLOC_ARENA_MAX")
    )


def test_nothing_is_applied_when_every_variable_is_set() -> None:
    assert tune_allocator({name: "1" for name in ALLOCATOR_TUNING}) == {}


def test_the_router_process_hands_the_interpreter_lock_over_within_a_millisecond() -> None:
    code = (
        "import sys; from gateway.app import tune_interpreter; "
        "before = sys.getswitchinterval(); tune_interpreter(); print(before, sys.getswitchinterval())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert float(out[0]) == pytest.approx(0.005)  # CPython's default, unchanged on import
    assert float(out[1]) == pytest.approx(GIL_SWITCH_INTERVAL_S)
