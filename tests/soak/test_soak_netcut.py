"""The soak's network cut, for real: nftables drops what the gateway's cgroup sends to one port,
and nothing else; healing and closing undo it, and a dead run's leftovers are cleaned up.

Needs root and nftables (``.ci/run`` installs it). Outside CI, a machine without them skips
with the reason; in CI that is a failure, like the soak itself refusing to skip the fault.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from bench.soak_netcut import TABLE_PREFIX, NetCut, _nft, clean_leftovers, unavailable_reason

pytestmark = pytest.mark.integration

REASON = unavailable_reason()
if REASON is not None and not os.environ.get("CI"):
    pytestmark = [pytest.mark.integration, pytest.mark.skip(reason=REASON)]


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    server.close()


def connects(port: int, preexec: Callable[[], None] | None = None) -> bool:
    """Whether a child process (in the gateway cgroup with ``preexec``) can connect."""
    code = (
        "import socket,sys\n"
        f"s=socket.socket(); s.settimeout(1.5)\n"
        f"try: s.connect(('127.0.0.1',{port})); sys.exit(0)\n"
        "except OSError: sys.exit(1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], preexec_fn=preexec, timeout=30, check=False)
    return proc.returncode == 0


def test_the_cut_drops_only_the_gateway_cgroup_and_is_undone(listener: int) -> None:
    assert REASON is None, REASON  # in CI the cut must be possible
    cut = NetCut(listener).open()
    try:
        assert connects(listener, cut.join)
        cut.cut()
        assert not connects(listener, cut.join)  # the gateway is cut off
        assert connects(listener)  # the ledger, publisher and simulator are not
        cut.heal()
        assert connects(listener, cut.join)
    finally:
        cut.close()
    assert cut.table not in _nft("list", "tables").stdout
    assert not cut.cgroup.exists()


def test_leftovers_of_a_dead_run_are_removed(listener: int) -> None:
    assert REASON is None, REASON
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)  # fmt: skip
    stale = f"{TABLE_PREFIX}{int(dead.stdout)}"
    _nft("add", "table", "inet", stale)
    cut = NetCut(listener)
    stale_cgroup = cut.cgroup.parent / stale
    stale_cgroup.mkdir()
    try:
        removed = clean_leftovers()
        assert stale in removed and str(stale_cgroup) in removed
        assert stale not in _nft("list", "tables").stdout
        assert not stale_cgroup.exists()
    finally:
        _nft("delete", "table", "inet", stale, check=False)
        if stale_cgroup.exists():
            stale_cgroup.rmdir()
