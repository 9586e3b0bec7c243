"""The `sparkstack` command: parse, call a workflow, print, map errors to exit codes.

Command groups live in their own modules and register themselves on the one app here;
this module decides exit codes, in one place, from the error class. typer, rich and the
commands are imported inside main(), after the signal handlers are in place, so a Ctrl-C
while the program loads ends like any other: a message and 130, not a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from provisioner import __version__
from provisioner.errors import Interrupted, SparkstackError, UnexpectedError
from provisioner.interrupts import Handler, handled_signals, installed, interrupted, signum_of

if TYPE_CHECKING:
    import typer

log = logging.getLogger(__name__)


def unchanged(signum: int) -> Interrupted:
    """Stopped before any command changed anything (loading, parsing, a question)."""
    return Interrupted(f"{interrupted(signum)} before anything was changed", signum=signum)


def _print_version(value: bool) -> None:
    import typer

    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


def build_app(command_exits: list[int] | None = None) -> typer.Typer:
    """The app; the codes its commands exit with through typer.Exit are appended to
    `command_exits`, which belongs to one run (see _run)."""
    import typer
    import typer.core

    from provisioner.commands import cluster, hub, image, nodes, render, smoke, users

    class Group(typer.core.TyperGroup):
        """typer turns a KeyboardInterrupt anywhere in its main, parsing the command line
        included, into a bare exit 130 (SIGTERM's too) with no message: make it the
        message and exit code of every other interruption."""

        def make_context(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().make_context(*args, **kwargs)
            except KeyboardInterrupt as exc:
                raise unchanged(signum_of(exc)) from None

        def invoke(self, ctx: Any) -> Any:
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt as exc:
                raise unchanged(signum_of(exc)) from None
            except typer.Exit as exc:
                if command_exits is not None:
                    command_exits.append(exc.exit_code)
                raise

    app = typer.Typer(
        name="sparkstack",
        cls=Group,
        help="An OpenStack project to a Spark cluster with a multi-user JupyterHub.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root(
        # typer.Option as the default, not in Annotated: this module imports typer only
        # here, and a string annotation would be resolved in the module's globals.
        version: bool = typer.Option(
            False,
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ) -> None:
        """Root options; each command lives in its own module."""

    render.register(app)
    cluster.register(app)
    smoke.register(app)
    hub.register(app)
    nodes.register(app)
    image.register(app)
    users.register(app)
    return app


def _run(argv: list[str] | None) -> int:
    """The command's exit code; its SparkstackError, or a bug as one, raised."""
    import typer

    # Per run: a record kept across calls of main() would grow with each and let an
    # earlier command's exit 130 hide a signal typer swallowed in a later one.
    command_exits: list[int] = []
    app = build_app(command_exits)
    try:
        # Outside standalone mode click hands back a typer.Exit's code instead of raising it.
        code = app(args=argv, prog_name="sparkstack", standalone_mode=False)
        handler = installed()
        if code == 130 and handler and handler.received and 130 not in command_exits:
            # No command exited 130: typer's main swallowed a signal (in the moment
            # around a command, where neither hook above sees it).
            raise unchanged(handler.received)
    except SparkstackError:
        raise
    except typer.Abort:
        raise
    except Exception as exc:
        # typer vendors its own click, so usage errors are not click.ClickException: match
        # the interface (show + exit_code) rather than a class from one or the other.
        usage = getattr(exc, "exit_code", None)
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(usage, int):
            show()
            return usage
        # A bug outside any command's session: still no traceback on the terminal.
        log.debug("unexpected error", exc_info=True)
        raise UnexpectedError(f"{type(exc).__name__}: {exc}") from exc
    return code if isinstance(code, int) else 0


def _outcome(argv: list[str] | None, signals: Handler) -> tuple[int, BaseException | None]:
    """(exit code, what to report): every way out of a command, interruptions included."""
    try:
        return _run(argv), None
    except KeyboardInterrupt as exc:  # loading the program, before a command ran
        failure: BaseException = unchanged(signum_of(exc))
    except SparkstackError as exc:
        failure = exc
    except Exception as exc:
        import typer

        if not isinstance(exc, typer.Abort):
            raise
        if signals.received is None:
            return 1, exc
        # click's prompt turns Ctrl-C into Abort
        failure = unchanged(signals.received)
    assert isinstance(failure, SparkstackError)
    return failure.exit_code, failure


def _report(failure: BaseException) -> None:
    text = failure.render() if isinstance(failure, SparkstackError) else "aborted"
    try:
        from rich.console import Console
        from rich.markup import escape

        err = Console(stderr=True, emoji=False)
        if isinstance(failure, SparkstackError):
            err.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
        else:
            err.print(text, highlight=False)
    except ImportError:  # interrupted while rich itself was loading
        sys.stderr.write(f"error: {text}\n")
    except OSError:  # SIGHUP: the terminal is gone; the log has the details
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become a message and a stable exit code, never a traceback.
    Ctrl-C, SIGTERM and SIGHUP end in 128 + the signal's number, never 0, with the state
    the cluster is left in, whatever the command was doing."""
    with handled_signals() as signals:
        code, failure = _outcome(argv, signals)
        signals.armed = False  # a second Ctrl-C must not cut the report short
        if failure is not None:
            _report(failure)
        if signals.dropped is not None and not isinstance(failure, Interrupted):
            # The signal came while Python could not raise it (a finalizer ran) and the
            # command went on to its end: still not a success.
            late = Interrupted(
                f"{interrupted(signals.dropped)}, but where the signal could not stop the "
                "command, which went on to its end: what it printed above is what it did",
                signum=signals.dropped,
            )
            _report(late)
            code = late.exit_code
        return code


if __name__ == "__main__":
    sys.exit(main())
