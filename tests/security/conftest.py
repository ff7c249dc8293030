"""Fixtures of the security tier: the bureau simulator on ephemeral ports, real TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dev.bureaus import BureauSimulator
from tests.contract.conftest import sim_settings


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def bureaus(tls_dir: Path) -> Iterator[BureauSimulator]:
    """One simulator per test module (tests change its behaviour)."""
    sim = BureauSimulator(sim_settings(tls_dir), tls_dir, ephemeral_ports=True, admin_port=0)
    sim.start()
    yield sim
    sim.stop()
