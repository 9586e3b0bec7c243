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


def test_status_table_fits_80_columns_and_shows_faults_whole():
    from rich.console import Console

    from provisioner import plan as P
    from provisioner.commands.output import nodes_table as _nodes_table

    fault = "No valid host was found. There are not enough hosts available."
    nodes = [
        P.Node(name="demo-master", role="master", index=0, id="a", status="ACTIVE",
               fixed_ip="10.77.0.158", floating_ip="10.78.0.134", flavor="m1.large",
               created="2026-01-01T00:00:00Z", fault=""),
        P.Node(name="demo-worker-10", role="worker", index=10, id="b", status="ERROR",
               fixed_ip="10.77.0.251", floating_ip="", flavor="m1.medium",
               created="2026-01-01T00:00:00Z", fault=fault),
    ]
    observed = P.Observed(cluster="demo", nodes=nodes, security_group=None, server_group=None,
                          master_port=None, floating_ip=None, attached_ip="", keypair=None)
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(_nodes_table(observed))
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines)
    header = next(line for line in lines if "fixed IP" in line)
    assert header.split() == ["name", "role", "state", "fixed", "IP", "floating", "IP", "flavor",
                              "age"]
    assert "…" not in text
    assert any(line.split()[:3] == ["demo-master", "master", "ACTIVE"] for line in lines)
    assert f"demo-worker-10: {fault}" in text
