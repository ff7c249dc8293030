"""Where the optional compiled parts are loaded (``setup.py`` builds them where a C compiler
is; ``docs/operations.md``, "Compiled parts"): one rule for each, the module if it is built,
unless its environment variable asks for the Python code."""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def optional(module: str, pure_variable: str) -> Any | None:
    """The compiled ``module``, or ``None`` when ``pure_variable=1`` is set or it is not built
    (then the caller does the same work in Python)."""
    if os.environ.get(pure_variable) == "1":
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        log.info("%s is not built (no C compiler at install): its work is done in Python", module)
        return None
