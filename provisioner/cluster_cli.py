"""`sparkstack up|scale|down|status`. (Filled in by the cloud workflows work.)"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the cluster lifecycle commands to the app."""
