"""The CLI edge: usage mistakes and user errors end in a message and a stable exit code."""

from __future__ import annotations

import pytest

from provisioner import __version__
from provisioner.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["render", "--role", "bogus"], "'bogus' is not one of"),
        (["render", "--bogus"], "No such option: --bogus"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_exit_2_without_traceback(capsys, argv, expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert expected in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_user_error_is_one_message_with_hint_and_exit_2(capsys, tmp_path):
    missing = tmp_path / "nope.toml"
    assert main(["render", "-i", str(missing), "--role", "master"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err
    assert "hint:" in err
    assert "Traceback" not in err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__
