"""Subcommands of `longtrove` (see pipelines/cli.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, longctx_app: typer.Typer) -> None:
    """Attach this module's commands to the app."""
