"""Helpers shared by CLI commands."""

from __future__ import annotations

import click

from gateway.config import Settings, load_settings
from gateway.ops.logs import setup_logging


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


def service_settings(ctx: click.Context, metrics_port: int | None) -> Settings:
    """The settings of a long-running command (the ops endpoint on ``--metrics-port`` when
    given), with logging set up as they say."""
    settings = settings_from(ctx)
    if metrics_port is not None:
        obs = settings.observability.model_copy(update={"port": metrics_port})
        settings = settings.model_copy(update={"observability": obs})
    setup_logging(settings.observability.log_level, settings.observability.log_format)
    return settings
