"""Commands that talk to a running hub over HTTP (filled in by cli/ modules)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
