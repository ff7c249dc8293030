"""The hostile-input corpus: every bad record and bad answer seen, against the real broker and
real misbehaving HTTP servers (``test_router*``: what reaches the router; ``test_answers*``: what
bureaus answer). The fixtures are ``tests/conftest.py``'s; tests here are integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.path)).parent == here and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)
