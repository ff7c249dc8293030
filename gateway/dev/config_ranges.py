"""The ranges table of ``docs/configuration.md``, generated from the config model.

    python -m gateway.dev.config_ranges     # or: make docs

Every numeric setting of :class:`gateway.config.Settings` with its ``Field`` bounds
(``cities.<city>`` stands for each city), written between the ``config:ranges`` markers of
the document. ``tests/unit/test_config_ranges.py`` fails when the document differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import annotated_types
from pydantic import BaseModel

from gateway.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
BEGIN = "<!-- config:ranges:begin -->"
END = "<!-- config:ranges:end -->"


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
                low = f">= {_number(meta.ge)}"
            elif isinstance(meta, annotated_types.Gt):
                low = f"> {_number(meta.gt)}"
            elif isinstance(meta, annotated_types.Le):
                high = f"<= {_number(meta.le)}"
            elif isinstance(meta, annotated_types.Lt):
                high = f"< {_number(meta.lt)}"
        yield key, low, high


def table() -> str:
    rows = [f"| `{key}` | {low} | {high} |" for key, low, high in numeric_settings()]
    return "\n".join(["| setting | lower bound | upper bound |", "|---|---|---|", *rows])


def documented(text: str) -> str:
    """What stands between the markers of ``text``."""
    _, rest = text.split(BEGIN, 1)
    return rest.split(END, 1)[0].strip()


def rewrite(text: str) -> str:
    """``text`` with the table between its markers generated anew."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


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


def _number(value: Any) -> str:
    """Exact: 16777216, not 1.67772e+07."""
    if isinstance(value, int):
        return str(value)
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def main() -> None:
    DOC.write_text(rewrite(DOC.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main()
