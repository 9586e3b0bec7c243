"""Exit codes decided at the CLI edge: each run of main() on its own, errors mapped only
where they are meant."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import typer

from provisioner import cli


@pytest.fixture
def extra_commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two commands beside the real ones: one that exits 130 on purpose (as `logs -f`
    may), and one whose Ctrl-C lands while typer closes the command line's context, where
    typer itself turns it into a bare 130."""
    build = cli.build_app

    def with_extras(*args: list[int]) -> typer.Typer:
        app = build(*args)

        @app.command("exit-130")
        def exit_130() -> None:
            raise typer.Exit(130)

        @app.command("late-ctrl-c")
        def late_ctrl_c(ctx: typer.Context) -> None:
            ctx.find_root().call_on_close(lambda: signal.raise_signal(signal.SIGINT))

        return app

    monkeypatch.setattr(cli, "build_app", with_extras)
    yield


def test_an_earlier_runs_exit_130_does_not_hide_a_later_runs_ctrl_c(
    extra_commands: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["exit-130"]) == 130
    assert capsys.readouterr().err == ""
    for _ in range(2):
        assert cli.main(["late-ctrl-c"]) == 130
        assert "error: interrupted before anything was changed" in capsys.readouterr().err
