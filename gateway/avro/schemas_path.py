"""Where the Avro schemas (``schemas/*.avsc``, the source of truth) are found at run time.

The repository's top-level ``schemas/`` directory is the one copy that is edited.
``gateway/schemas`` is a symlink to it, listed in the package data, so a built wheel carries a
copy inside the package while an editable install reads the checkout directly. Should the
symlink be missing (a checkout without symlink support), the checkout directory is used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SCHEMA_FILES = {
    "complaint": "complaint.avsc",
    "escalation": "escalation.avsc",
    "receipt": "receipt.avsc",
    "case_update": "case_update.avsc",
    "case_state": "case_state.avsc",
    "handling_result": "handling_result.avsc",
}
"""Message kind -> file name under the schemas directory."""


def schemas_dir() -> Path:
    """The directory holding the ``.avsc`` files of this installation."""
    packaged = Path(str(resources.files("gateway").joinpath("schemas")))
    if (packaged / SCHEMA_FILES["complaint"]).is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "schemas"
    if (checkout / SCHEMA_FILES["complaint"]).is_file():
        return checkout
    raise FileNotFoundError(f"no Avro schemas in {packaged} or {checkout}")


def schema_text(kind: str) -> str:
    """The JSON text of one kind's schema (``complaint``, ``escalation`` or ``receipt``)."""
    return (schemas_dir() / SCHEMA_FILES[kind]).read_text(encoding="utf-8")
