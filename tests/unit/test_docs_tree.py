"""The layout as the README and CONTRIBUTING.md describe it is the tree: every package under
``gateway/`` is named in the README's architecture table and in CONTRIBUTING.md's layout, and
neither names a package that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def packages() -> set[str]:
    return {p.parent.name for p in (ROOT / "gateway").glob("*/__init__.py")}


def test_the_readme_architecture_table_names_every_package() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `gateway/([a-z_]+)/` \|", text, re.MULTILINE))
    assert named == packages() - {"commands", "schemas"}, "README architecture table vs gateway/"
    assert "| `gateway/` (top level) |" in text and "`commands/`" in text


def test_contributing_layout_names_every_package() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    named = set(re.findall(r"^  ([a-z_]+)/ ", text, re.MULTILINE))
    named |= set(re.findall(r"^  cli\.py, ([a-z_]+)/ ", text, re.MULTILINE))
    assert named - {"defaults"} == packages() - {"schemas"}, "CONTRIBUTING.md layout vs gateway/"
