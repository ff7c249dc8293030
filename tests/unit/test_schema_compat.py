"""schemas/*.avsc stay BACKWARD compatible with their previous committed version, are
documented and namespaced, and decode at bounded cost; the compatibility checker itself is
checked against known good and bad changes."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema

from gateway.avro.schema_rules import (
    backward_problems,
    check_backward,
    decode_cost_problems,
    resolution_problems,
    sample_values,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = sorted((REPO / "schemas").glob("*.avsc"))
NAMESPACE = "com.greenchannel.v1"


def previous_version(path: Path) -> tuple[str, Any]:
    """(label, schema) of the last committed version that differs from the file as it is now;
    the current file itself when there is no such version (no git, no history, no change)."""
    current = json.loads(path.read_text(encoding="utf-8"))
    git = shutil.which("git")
    if git is None:
        return "itself (git missing)", current
    rel = path.relative_to(REPO).as_posix()
    log = subprocess.run(
        [git, "log", "--format=%H", "--", rel],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    for sha in log.stdout.split() if log.returncode == 0 else []:
        shown = subprocess.run(
            [git, "show", f"{sha}:{rel}"], cwd=REPO, capture_output=True, text=True, check=False
        )
        if shown.returncode != 0:
            continue
        old = json.loads(shown.stdout)
        if old != current:
            return sha[:12], old
    return "itself (no earlier different version)", current


def test_there_are_schemas() -> None:
    assert {p.name for p in SCHEMAS} >= {"complaint.avsc", "escalation.avsc", "receipt.avsc"}


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_backward_compatible_with_previous_version(path: Path) -> None:
    label, old = previous_version(path)
    new = json.loads(path.read_text(encoding="utf-8"))
    problems = check_backward(new, old)
    assert problems == [], f"{path.name} cannot read data written with {label}: {problems}"


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_trial_resolution_really_decodes(path: Path) -> None:
    """The resolution trial is not vacuous: samples cover every enum symbol and union branch."""
    schema = json.loads(path.read_text(encoding="utf-8"))
    parsed = parse_schema(copy.deepcopy(schema))
    samples = list(sample_values(parsed, 40))
    assert len({json.dumps(s, sort_keys=True, default=str) for s in samples}) > 10
    assert resolution_problems(schema, schema) == []


def named_types(schema: Any, namespace: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(full name, definition) of every record, enum and fixed in a raw schema."""
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, list):
        for branch in schema:
            out += named_types(branch, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            name = schema["name"]
            namespace = (
                schema.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
            )
            full = name if "." in name else f"{namespace}.{name}" if namespace else name
            out.append((full, schema))
            for field in schema.get("fields", []):
                out += named_types(field["type"], namespace)
        elif isinstance(kind, dict | list):
            out += named_types(kind, namespace)
        for key in ("items", "values"):
            if key in schema:
                out += named_types(schema[key], namespace)
    return out


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_documented_and_namespaced(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    types = named_types(schema)
    assert types, "no named types found"
    for full, definition in types:
        assert full.startswith(NAMESPACE + "."), f"{full} is not in {NAMESPACE}"
        assert definition.get("doc", "").strip(), f"{full} has no doc"
        for field in definition.get("fields", []):
            assert field.get("doc", "").strip(), f"{full}.{field['name']} has no doc"


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_bounded_decode_cost(path: Path) -> None:
    schema = parse_schema(json.loads(path.read_text(encoding="utf-8")))
    assert decode_cost_problems(schema) == []


# --- the checker itself --------------------------------------------------------------------


def complaint() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((REPO / "schemas" / "complaint.avsc").read_text("utf-8"))
    return schema


def field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def _add_field_with_default(s: dict[str, Any]) -> None:
    s["fields"].append({"name": "x", "type": "string", "default": ""})


def _add_field_without_default(s: dict[str, Any]) -> None:
    s["fields"].append({"name": "x", "type": "string"})


def _remove_field(s: dict[str, Any]) -> None:
    s["fields"] = [f for f in s["fields"] if f["name"] != "language"]


def _add_enum_symbol(s: dict[str, Any]) -> None:
    field(s, "channel")["type"]["symbols"].append("DOUYIN")


def _drop_symbol_with_default(s: dict[str, Any]) -> None:
    field(s, "channel")["type"]["symbols"].remove("EMAIL")


def _drop_symbol_without_default(s: dict[str, Any]) -> None:
    enum = field(s, "channel")["type"]
    enum["symbols"].remove("EMAIL")
    del enum["default"]


def _promote_int_to_long(s: dict[str, Any]) -> None:
    field(field(s, "signals")["type"], "repeat_count")["type"] = "long"


def _narrow_long_to_int(s: dict[str, Any]) -> None:
    field(s, "received_at")["type"] = "int"


def _string_to_int(s: dict[str, Any]) -> None:
    field(s, "city_code")["type"] = "int"


def _optional_becomes_required(s: dict[str, Any]) -> None:
    email = field(field(s, "consumer")["type"], "email")
    email["type"] = "string"
    del email["default"]


def _required_becomes_optional(s: dict[str, Any]) -> None:
    field(s, "description")["type"] = ["null", "string"]


def _rename_record(s: dict[str, Any]) -> None:
    field(s, "merchant")["type"]["name"] = "Seller"


def _rename_record_with_alias(s: dict[str, Any]) -> None:
    field(s, "merchant")["type"].update(name="Seller", aliases=["Merchant"])


def _rename_field_with_alias(s: dict[str, Any]) -> None:
    field(s, "description").update(name="text", aliases=["description"])


@pytest.mark.parametrize(
    ("change", "compatible"),
    [
        (_add_field_with_default, True),
        (_remove_field, True),
        (_add_enum_symbol, True),
        (_drop_symbol_with_default, True),
        (_promote_int_to_long, True),
        (_required_becomes_optional, True),
        (_rename_record_with_alias, True),
        (_rename_field_with_alias, True),
        (_add_field_without_default, False),
        (_drop_symbol_without_default, False),
        (_narrow_long_to_int, False),
        (_string_to_int, False),
        (_optional_becomes_required, False),
        (_rename_record, False),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else str(v),
)
def test_checker_on_known_changes(change: Any, compatible: bool) -> None:
    old = complaint()
    new = copy.deepcopy(old)
    change(new)
    problems = check_backward(new, old)
    assert (problems == []) is compatible, problems


def test_structural_and_trial_checks_agree_on_incompatible_changes() -> None:
    """Each incompatible change is caught by the structural rules *and* by a real fastavro
    read of sample records (the trial is an independent witness, not decoration)."""
    for change in (
        _add_field_without_default,
        _string_to_int,
        _optional_becomes_required,
        _narrow_long_to_int,
    ):
        old = complaint()
        new = copy.deepcopy(old)
        change(new)
        assert backward_problems(parse_schema(copy.deepcopy(new)), parse_schema(copy.deepcopy(old)))
        assert resolution_problems(new, old), change.__name__
