"""Every numeric setting has a finite range, and docs/configuration.md documents exactly it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import annotated_types
from pydantic import BaseModel

from gateway.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _model(annotation: Any) -> type[BaseModel] | None:
    if get_origin(annotation) is dict:
        return _model(get_args(annotation)[1])
    for arg in get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _numeric(annotation: Any) -> bool:
    args = get_args(annotation) or (annotation,)
    return any(a in (int, float) for a in args) and bool not in args


def numeric_settings(
    model: type[BaseModel] = Settings, prefix: str = ""
) -> Iterator[tuple[str, str, str]]:
    """(key, lower bound, upper bound) of every numeric setting; ``cities.<city>`` for the map."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _model(field.annotation)
        if inner is not None:
            sub = f"{key}.<city>." if get_origin(field.annotation) is dict else f"{key}."
            yield from numeric_settings(inner, sub)
            continue
        if not _numeric(field.annotation):
            continue
        low = high = ""
        for meta in field.metadata:
            if isinstance(meta, annotated_types.Ge):
                low = f">= {meta.ge:g}"
            elif isinstance(meta, annotated_types.Gt):
                low = f"> {meta.gt:g}"
            elif isinstance(meta, annotated_types.Le):
                high = f"<= {meta.le:g}"
            elif isinstance(meta, annotated_types.Lt):
                high = f"< {meta.lt:g}"
        yield key, low, high


def test_every_numeric_setting_has_a_finite_lower_and_upper_bound() -> None:
    unbounded = [key for key, low, high in numeric_settings() if not low or not high]
    assert not unbounded, f"numeric settings without a range: {unbounded}"
    for _key, _low, high in numeric_settings():
        assert math.isfinite(float(high.split()[-1]))


def test_the_ranges_table_in_docs_configuration_md_is_the_model() -> None:
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]*) \| ([^|]*) \|$", DOC.read_text("utf-8"), re.M)
    documented = {key: (low.strip(), high.strip()) for key, low, high in rows}
    expected = {key: (low, high) for key, low, high in numeric_settings()}
    assert documented == expected
