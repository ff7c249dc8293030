"""Helpers shared by CLI commands."""

from __future__ import annotations

import click

from gateway.config import Settings, load_settings


def settings_from(ctx: click.Context) -> Settings:
    """Load (once per invocation) the settings named by the top-level ``--config``."""
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    cached = obj.get("settings")
    if isinstance(cached, Settings):
        return cached
    settings = load_settings(obj.get("config_path"))
    obj["settings"] = settings
    root.obj = obj
    return settings
