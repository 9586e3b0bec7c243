"""`sparkstack render`: paste-ready cloud-init and kernel.json. (Filled in by the foundation work.)"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the render command to the app."""
