"""The `sparkstack` command: parse, call a workflow, print, map errors to exit codes.

Command groups live in their own modules and register themselves on the one app here;
this module decides exit codes, in one place, from the error class.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from provisioner import __version__
from provisioner.commands import cluster, hub, nodes, render, smoke
from provisioner.errors import Interrupted, SparkstackError

log = logging.getLogger(__name__)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


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
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                help="Print the version and exit.",
                callback=_print_version,
                is_eager=True,
            ),
        ] = False,
    ) -> None:
        """Root options; each command lives in its own module."""

    render.register(app)
    cluster.register(app)
    smoke.register(app)
    hub.register(app)
    nodes.register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become a message and a stable exit code, never a traceback."""
    err = Console(stderr=True, emoji=False)
    app = build_app()
    try:
        # Outside standalone mode click hands back a typer.Exit's code instead of raising it.
        code = app(args=argv, prog_name="sparkstack", standalone_mode=False)
        if isinstance(code, int):
            return code
    except SparkstackError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.render())}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]")
        return Interrupted.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("aborted")
        return 1
    except Exception as exc:
        # typer vendors its own click, so usage errors are not click.ClickException: match
        # the interface (show + exit_code) rather than a class from one or the other.
        code = getattr(exc, "exit_code", None)
        if callable(getattr(exc, "show", None)) and isinstance(code, int):
            exc.show()
            return code
        # A bug outside any command's session: still no traceback on the terminal.
        log.debug("unexpected error", exc_info=True)
        err.print(
            f"[bold red]error:[/] unexpected error, please report: "
            f"{escape(type(exc).__name__)}: {escape(str(exc))}",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
