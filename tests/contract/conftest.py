"""The bureau simulator for contract tests: every configured city on free ports, real TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Settings, load_settings
from gateway.dev.bureaus import BureauSimulator


def sim_settings(tls_dir: Path) -> Settings:
    """Default settings with Shenzhen's TLS files under ``tls_dir``."""
    tls = {
        "ca_file": str(tls_dir / "ca.pem"),
        "cert_file": str(tls_dir / "client.pem"),
        "key_file": str(tls_dir / "client.key"),
    }
    return load_settings(None, cities={"shenzhen": {"tls": tls}})


@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BureauSimulator]:
    tls_dir = tmp_path_factory.mktemp("tls")
    sim = BureauSimulator(sim_settings(tls_dir), tls_dir, ephemeral_ports=True, admin_port=0)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(simulator: BureauSimulator) -> Iterator[BureauSimulator]:
    """The session simulator, with every city's knobs reset and history cleared after the test."""
    yield simulator
    for name in simulator.names():
        simulator.city(name).reset_faults()
        simulator.city(name).clear()
