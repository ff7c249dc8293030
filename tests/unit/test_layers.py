"""The layer contract: which package may import which (read from the source, not the runtime).

Each rule below is also written in the importing package's docstring. A new import that crosses
a layer fails here with the file, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ("gateway", "connectors")
# Where a gateway module may import from: the package (or module) on the left may not import
# any module whose name starts with one of those on the right.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # the development tools are never imported by the runtime (only by commands and cli)
    "gateway.kafka": (
        "gateway.dev",
        "gateway.avro",
        "gateway.routing",
        "gateway.delivery",
        "gateway.ops",
        "gateway.deadletters",
        "gateway.commands",
    ),
    "gateway.avro": (
        "gateway.dev",
        "gateway.kafka",
        "gateway.routing",
        "gateway.delivery",
        "gateway.deadletters",
        "gateway.commands",
    ),
    "gateway.ops": (
        "gateway.dev",
        "gateway.routing",
        "gateway.delivery",
        "gateway.deadletters",
        "gateway.commands",
    ),
    "gateway.policies": (
        "gateway.dev",
        "gateway.kafka",
        "gateway.avro",
        "gateway.routing",
        "gateway.delivery",
        "gateway.ops",
        "gateway.deadletters",
        "gateway.commands",
    ),
    "gateway.deadletters.headers": (
        "gateway.dev",
        "gateway.avro",
        "gateway.routing",
        "gateway.delivery",
        "gateway.commands",
    ),
    "gateway.deadletters": (
        "gateway.dev",
        "gateway.routing",
        "gateway.delivery",
        "gateway.commands",
    ),
    "gateway.routing": ("gateway.dev", "gateway.delivery", "gateway.commands"),
    "gateway.delivery": ("gateway.dev", "gateway.routing", "gateway.commands"),
    "gateway.app": ("gateway.dev", "gateway.commands"),
    # the supervisor of member processes: configuration and the set's ops endpoint only
    "gateway.supervisor": (
        "gateway.dev",
        "gateway.commands",
        "gateway.app",
        "gateway.kafka",
        "gateway.routing",
        "gateway.delivery",
    ),
    # case lifecycle: above kafka/avro/ops/policies/deadletters, beside routing and delivery
    "gateway.cases": ("gateway.dev", "gateway.routing", "gateway.delivery", "gateway.commands"),
    # the handling-result path reuses the delivery engine's public pieces (CityDelivery)
    "gateway.cases.results": ("gateway.dev", "gateway.routing", "gateway.commands"),
    # the calendar sits in the router's hot path: standard library, PyYAML, chinese_calendar
    "gateway.cases.calendar": (
        "gateway.dev",
        "gateway.kafka",
        "gateway.avro",
        "gateway.routing",
        "gateway.delivery",
        "gateway.ops",
        "gateway.policies",
        "gateway.deadletters",
        "gateway.commands",
        "gateway.config",
    ),
    "gateway.http": (
        "gateway.dev",
        "gateway.kafka",
        "gateway.routing",
        "gateway.delivery",
        "gateway.commands",
    ),
    "gateway.sdk": (
        "gateway.dev",
        "gateway.kafka",
        "gateway.avro",
        "gateway.routing",
        "gateway.delivery",
        "gateway.ops",
        "gateway.commands",
    ),
    "gateway.config": (
        "gateway.dev",
        "gateway.kafka",
        "gateway.avro",
        "gateway.routing",
        "gateway.delivery",
        "gateway.ops",
        "gateway.commands",
    ),
    "gateway.errors": ("gateway.",),
    # the servers bureaus call (case callbacks, the dev simulator) share it: standard library only
    "gateway.httpd": ("gateway.",),
    # below both wire formats that use it (Kafka records, Avro): imports nothing of the gateway
    "gateway.varint": ("gateway.",),
    "connectors": (
        "gateway.dev",
        "gateway.kafka",
        "gateway.avro",
        "gateway.routing",
        "gateway.delivery",
        "gateway.ops",
        "gateway.policies",
        "gateway.commands",
        "tenacity",
        "kafka",
        "prometheus_client",
        "httpx",
    ),
}
KAFKA_PYTHON_HOME = "gateway.kafka"


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in RUNTIME_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append((".".join(parts), path))
    return found


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.lineno, node.module))
            names.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
    return names


def _rule_for(module: str) -> tuple[str, tuple[str, ...]] | None:
    best = None
    for owner, banned in FORBIDDEN.items():
        if (module == owner or module.startswith(owner + ".")) and (
            best is None or len(owner) > len(best[0])
        ):
            best = (owner, banned)
    return best


def _matches(name: str, prefix: str) -> bool:
    if prefix.endswith("."):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + ".")


MODULES = _modules()


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_module_keeps_its_layer(module: str, path: Path) -> None:
    rule = _rule_for(module)
    violations = []
    for line, name in _imports(path):
        if _matches(name, "kafka") and not (
            module == KAFKA_PYTHON_HOME or module.startswith(KAFKA_PYTHON_HOME + ".")
        ):
            violations.append(f"{path.name}:{line} imports {name}: only gateway.kafka may")
        if rule is not None:
            owner, banned = rule
            violations.extend(
                f"{path.name}:{line} imports {name}: {owner} may not import {prefix}"
                for prefix in banned
                if _matches(name, prefix) and not name.startswith(owner)
            )
    assert not violations, "\n".join(violations)


def test_every_runtime_package_says_what_it_owns() -> None:
    packages = [p for p in (ROOT / "gateway").rglob("__init__.py") if "defaults" not in p.parts]
    undocumented = [
        str(p.relative_to(ROOT))
        for p in packages
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert not undocumented, f"packages without a docstring: {undocumented}"


def test_the_contract_sees_the_layers() -> None:
    # Guard against a contract that checks nothing: the packages it names exist and hold modules.
    names = {m for m, _ in MODULES}
    for owner in FORBIDDEN:
        assert any(n == owner or n.startswith(owner + ".") for n in names), owner
