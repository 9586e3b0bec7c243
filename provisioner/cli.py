"""The `sparkstack` command: parse, call a workflow, print, map errors to exit codes.

Command groups live in their own modules and register themselves on the one app here;
this module decides exit codes, in one place, from the error class.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.markup import escape

from provisioner import __version__, cluster_cli, render_cli
from provisioner.errors import Interrupted, SparkstackError

log = logging.getLogger(__name__)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="sparkstack",
        help="An OpenStack project to a Spark cluster with a multi-user JupyterHub.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    ) -> None:
        if version:
            typer.echo(__version__)
            raise typer.Exit(0)

    render_cli.register(app)
    cluster_cli.register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become a message and a stable exit code, never a traceback."""
    err = Console(stderr=True)
    app = build_app()
    try:
        app(args=argv, prog_name="sparkstack", standalone_mode=False)
    except SparkstackError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.render())}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]")
        return Interrupted.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("aborted")
        return 1
    except Exception as exc:  # click's usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
