"""Exit codes decided at the CLI edge: each run of main() on its own, errors mapped only
where they are meant."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

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


CLOUDS_YAML = """\
clouds:
  reachable:
    auth:
      auth_url: http://127.0.0.1:9/v3
      username: u
      password: p
      project_name: p
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
"""


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """An inventory naming `cloud`, with a clouds.yaml and config/state dirs of its own."""
    (tmp_path / "clouds.yaml").write_text(CLOUDS_YAML)
    for var in ("OS_CLOUD", "OS_AUTH_URL", "SPARKSTACK_CLUSTER_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    def write(cloud: str) -> Path:
        path = tmp_path / "inv.toml"
        path.write_text(
            f'[cluster]\nname = "exits"\ncloud = "{cloud}"\nimage = "debian-12"\n'
            '[network]\nname = "private"\nallowed_cidrs = ["203.0.113.0/24"]\n'
            '[master]\nflavor = "m1.large"\n[workers]\nflavor = "m1.medium"\ncount = 1\n'
        )
        return path

    return write


def test_a_cloud_name_missing_from_clouds_yaml_exits_2_naming_it(
    inventory: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "-i", str(inventory("no-such-cloud"))]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "cannot load the cloud configuration 'no-such-cloud'" in err
    assert "Traceback" not in err


def test_a_key_error_out_of_the_cloud_config_loader_is_a_bug_exit_1_with_the_log(
    inventory: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """No clouds.yaml makes openstacksdk's loader raise KeyError, so one is put in its
    place: what is under test is only where such an error ends up."""
    import openstack.config

    def broken(**kwargs: object) -> None:
        raise KeyError("region_name")

    monkeypatch.setattr(openstack.config, "get_cloud_region", broken)
    assert cli.main(["status", "-i", str(inventory("reachable"))]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "unexpected error, please report: KeyError: 'region_name'" in err
    log = tmp_path / "state" / "sparkstack" / "exits" / "sparkstack.log"
    assert f"details: {log}" in err
    assert "Traceback" in log.read_text()  # the log has what a bug report needs


def test_ssh_stderr_is_kept_for_the_error_and_still_shown(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """What `logs` quotes when ssh cannot connect is what ssh wrote, which the user sees
    as it comes too (a shell stands in for ssh: the same pipe, the same exit 255)."""
    from provisioner import openssh

    kept: list[str] = []
    script = "echo 'u@10.0.0.1: Permission denied (publickey).' >&2; echo out; exit 255"
    assert openssh.run(["sh", "-c", script], stderr_tail=kept) == 255
    assert kept == ["u@10.0.0.1: Permission denied (publickey)."]
    shown = capfd.readouterr()
    assert shown.err == "u@10.0.0.1: Permission denied (publickey).\n"
    assert shown.out == "out\n"
