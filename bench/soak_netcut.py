"""The soak's network cut: drop the gateway's packets to the broker, and only the gateway's.

The gateway processes run in a cgroup v2 of their own (``gcsoak_<pid>`` under the cgroup2 root;
a child joins it before it execs); an nftables table of this run (``inet gcsoak_<pid>``) holds
one output chain, and a cut is one rule in it dropping the TCP packets that sockets of that
cgroup send to the broker's port (``socket cgroupv2``: a blackhole, connections hang as in a
real partition rather than being reset). The ledger, the publisher and the simulator stay in
the soak's own cgroup and keep talking to the broker. Locally generated loopback packets pass
the output hook, so this works for a broker on 127.0.0.1. (A separate uid and ``meta skuid``
would work too, but the interpreter may live where another uid cannot read it.)

Always reversible: :meth:`NetCut.close` deletes the table and the cgroup (called from
``finally`` and ``atexit``), and :func:`clean_leftovers` removes the tables and cgroups of soak
runs that died without cleaning up (their pid is gone).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TABLE_PREFIX = "gcsoak_"
"""Table and cgroup names: ``gcsoak_<pid of the soak>``, so runs side by side (a local long soak
and the CI test) never cut each other's gateways."""
NFT_CGROUP_ROOT = "/sys/fs/cgroup"
"""nft resolves ``socket cgroupv2`` paths relative to this folder."""


def _nft(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", *args], capture_output=True, text=True, check=check, timeout=20)


def unavailable_reason() -> str | None:
    """Why a network cut cannot be injected here, or None when it can."""
    if shutil.which("nft") is None:
        return "nft not installed (apt-get install nftables)"
    if os.geteuid() != 0:
        return "not root: nftables rules and a separate gateway uid need root"
    try:
        probe = _nft("list", "tables", check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nft failed: {exc}"
    if probe.returncode != 0:
        return f"nft cannot list tables: {probe.stderr.strip()[:200]}"
    if cgroup2_root() is None:
        return f"no writable cgroup v2 mount under {NFT_CGROUP_ROOT}"
    return None


def cgroup2_root() -> Path | None:
    """Where cgroup v2 is mounted (``/sys/fs/cgroup``, or ``.../unified`` on hybrid hosts)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] == "cgroup2":
            root = Path(parts[1])
            if (root == Path(NFT_CGROUP_ROOT) or Path(NFT_CGROUP_ROOT) in root.parents) and (
                os.access(root, os.W_OK)
            ):
                return root
    return None


def _remove_cgroup(path: Path) -> None:
    """Kill what is left in the cgroup and remove it (best effort)."""
    if not path.exists():
        return
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")
    for _ in range(50):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.1)


def clean_leftovers() -> list[str]:
    """Delete ``gcsoak_<pid>`` tables whose soak process is gone; returns their names."""
    listing = _nft("list", "tables", check=False).stdout
    removed = []
    for family, name in re.findall(r"table (\w+) (" + TABLE_PREFIX + r"\d+)", listing):
        if _dead(name):
            _nft("delete", "table", family, name, check=False)
            removed.append(name)
    root = cgroup2_root()
    for path in root.glob(f"{TABLE_PREFIX}*") if root else ():
        if path.is_dir() and _dead(path.name):
            _remove_cgroup(path)
            removed.append(str(path))
    return removed


def _dead(name: str) -> bool:
    pid = name[len(TABLE_PREFIX) :]
    return pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}")


@dataclass
class NetCut:
    """One run's table; :meth:`cut` / :meth:`heal` the gateway uid's traffic to ``port``."""

    port: int
    table: str = ""
    cgroup: Path = Path()
    _handle: str | None = None

    def __post_init__(self) -> None:
        self.table = f"{TABLE_PREFIX}{os.getpid()}"
        root = cgroup2_root()
        if root is None:
            raise RuntimeError("no cgroup v2 mount")
        self.cgroup = root / self.table

    @property
    def nft_path(self) -> str:
        return str(self.cgroup.relative_to(NFT_CGROUP_ROOT))

    def join(self) -> None:
        """preexec in a child: move this process into the gateway cgroup (before exec)."""
        (self.cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def open(self) -> NetCut:
        clean_leftovers()
        self.cgroup.mkdir(exist_ok=True)
        _nft("add", "table", "inet", self.table)
        _nft(
            "add", "chain", "inet", self.table, "out",
            "{ type filter hook output priority 0 ; policy accept ; }",
        )  # fmt: skip
        atexit.register(self.close)
        return self

    def cut(self) -> None:
        if self._handle is not None:
            return
        # level 1: the cgroup sits right under the cgroup2 root
        where = ["socket", "cgroupv2", "level", "1", f'"{self.nft_path}"']
        rule = [*where, "tcp", "dport", str(self.port), "drop"]
        out = _nft("--echo", "--handle", "add", "rule", "inet", self.table, "out", *rule).stdout
        match = re.search(r"# handle (\d+)", out)
        if match is None:
            raise RuntimeError(f"nft did not return the rule's handle: {out!r}")
        self._handle = match.group(1)

    def heal(self) -> None:
        if self._handle is None:
            return
        _nft("delete", "rule", "inet", self.table, "out", "handle", self._handle)
        self._handle = None

    @property
    def active(self) -> bool:
        return self._handle is not None

    def close(self) -> None:
        """Remove the table and the cgroup (idempotent; never raises)."""
        self._handle = None
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            _nft("delete", "table", "inet", self.table, check=False)
        _remove_cgroup(self.cgroup)
