"""The README's exit-code table, row by row: each row's example is run as a user runs it
(`python -m provisioner.cli` in a process of its own) and must end with the row's code.

Rows are read from the README, so a row whose code or example changes without the program
following fails here, and so does a row with no way to run it. Only the example of code 4
needs the OpenStack bed (a cluster's servers to look at); the others run anywhere.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cloud.test_workflows import cli_env, cluster_resources, write_inventory
from tests.unit.test_interrupts import Blackhole, finish, wait_for_request

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TABLE_HEADER = "| code | meaning | for example |"


@dataclass(frozen=True)
class Row:
    code: int
    meaning: str
    example: str


def readme_rows() -> list[Row]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(TABLE_HEADER) + 2  # past the header and its |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        code, meaning, example = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append(Row(int(code), meaning, example))
    return rows


@dataclass
class Outcome:
    code: int
    err: str


INVENTORY = (
    '[cluster]\nname = "rows"\ncloud = "c"\nimage = "debian-12"\n'
    '[network]\nname = "private"\nallowed_cidrs = ["203.0.113.0/24"]\n'
    '[master]\nflavor = "m1.large"\n[workers]\nflavor = "m1.medium"\ncount = 1\n'
)


def _env(tmp: Path, clouds_yaml: str) -> dict[str, str]:
    (tmp / "clouds.yaml").write_text(clouds_yaml)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "SPARKSTACK_"))}
    env.update(
        OS_CLIENT_CONFIG_FILE=str(tmp / "clouds.yaml"),
        XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_STATE_HOME=str(tmp / "state"),
        # what a pipeline that must fail fast sets: one second of retries, not two minutes
        SPARKSTACK_API_RETRY_FOR="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _cloud(auth_url: str) -> str:
    return (
        "clouds:\n  c:\n    auth:\n"
        f"      auth_url: {auth_url}\n      username: u\n      password: p\n"
        "      project_name: p\n      user_domain_name: Default\n"
        "      project_domain_name: Default\n    region_name: RegionOne\n"
    )


def _cli(*args: str, env: dict[str, str], timeout: float = 120) -> Outcome:
    proc = subprocess.run(
        [sys.executable, "-m", "provisioner.cli", *args], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    return Outcome(proc.returncode, " ".join(proc.stderr.split()))


def _version(tmp: Path, request: pytest.FixtureRequest) -> Outcome:
    return _cli("--version", env=_env(tmp, ""))


def _empty_clouds_entry(tmp: Path, request: pytest.FixtureRequest) -> Outcome:
    # openstacksdk reads an entry with nothing under it as None and fails on it with an
    # AttributeError of its own: a crash, which must be reported as one.
    (tmp / "inv.toml").write_text(INVENTORY)
    out = _cli("status", "-i", str(tmp / "inv.toml"), env=_env(tmp, "clouds:\n  c:\n"))
    assert "unexpected error, please report: AttributeError" in out.err, out.err
    assert f"details: {tmp / 'state' / 'sparkstack' / 'rows' / 'sparkstack.log'}" in out.err
    return out


def _invalid_inventory(tmp: Path, request: pytest.FixtureRequest) -> Outcome:
    (tmp / "inv.toml").write_text(INVENTORY.replace("count = 1", 'count = "one"'))
    out = _cli("status", "-i", str(tmp / "inv.toml"), env=_env(tmp, ""))
    assert "workers.count: must be an integer" in out.err, out.err
    return out


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on leaving: nothing listens there


def _cloud_not_listening(tmp: Path, request: pytest.FixtureRequest) -> Outcome:
    (tmp / "inv.toml").write_text(INVENTORY)
    url = f"http://127.0.0.1:{_closed_port()}/v3"
    out = _cli("status", "-i", str(tmp / "inv.toml"), env=_env(tmp, _cloud(url)))
    assert url in out.err and "could not be reached" in out.err, out.err
    return out


def _unrecorded_first_use_keys(tmp: Path, request: pytest.FixtureRequest) -> Outcome:
    project: Any = request.getfixturevalue("clean_project")
    inv = write_inventory(tmp / "inv.toml", name="rows4", workers=1)
    inv.write_text(inv.read_text() + '[ssh]\nhost_key_trust = "first-use"\n')
    env = cli_env(tmp, project.clouds_yaml)
    try:
        up = _cli("up", "-i", str(inv), "--until", "servers", env=env, timeout=600)
        assert up.code == 0, up.err
        out = _cli("logs", "-i", str(inv), env=env)
        assert "[ssh] rows4-master: no host key recorded" in out.err, out.err
    finally:
        _cli("down", "-i", str(inv), "--yes", env=env, timeout=600)
    assert cluster_resources(project.admin(), "rows4") == {}
    return out


def _signal_while_status_waits(sig: signal.Signals) -> Callable[..., Outcome]:
    def run(tmp: Path, request: pytest.FixtureRequest) -> Outcome:
        hole = Blackhole()  # accepts and never answers: `status` waits in its first request
        try:
            (tmp / "inv.toml").write_text(INVENTORY)
            env = _env(tmp, _cloud(f"http://127.0.0.1:{hole.port}/v3"))
            proc = subprocess.Popen(
                [sys.executable, "-m", "provisioner.cli", "status", "-i", str(tmp / "inv.toml")],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            wait_for_request(proc, hole)
            code, _, err = finish(proc, sig)
        finally:
            hole.close()
        err = " ".join(err.split())
        word = "interrupted" if sig == signal.SIGINT else f"interrupted by {sig.name}"
        assert f"error: {word} before anything was changed" in err, err
        return Outcome(code, err)

    return run


# Each README example, by its text, and how to run it.
EXAMPLES: dict[str, Callable[[Path, pytest.FixtureRequest], Outcome]] = {
    "`sparkstack --version`": _version,
    "openstacksdk failing on an empty clouds.yaml entry": _empty_clouds_entry,
    "an inventory that does not validate": _invalid_inventory,
    "a cloud whose auth_url nothing listens on": _cloud_not_listening,
    "`logs` with first-use host keys that `up` never recorded": _unrecorded_first_use_keys,
    "Ctrl-C while `status` waits for the cloud": _signal_while_status_waits(signal.SIGINT),
    "SIGTERM while `status` waits for the cloud": _signal_while_status_waits(signal.SIGTERM),
    "SIGHUP while `status` waits for the cloud": _signal_while_status_waits(signal.SIGHUP),
}
NEEDS_BED = {"`logs` with first-use host keys that `up` never recorded"}


def _params() -> list[Any]:
    return [
        pytest.param(row, id=str(row.code), marks=[pytest.mark.cloud] * (row.example in NEEDS_BED))
        for row in readme_rows()
    ]


def test_every_readme_row_has_a_runnable_example_and_every_example_a_row() -> None:
    rows = readme_rows()
    assert {r.code for r in rows} >= {0, 1, 2, 3, 4, 129, 130, 143}
    assert sorted(r.example for r in rows) == sorted(EXAMPLES)


@pytest.mark.parametrize("row", _params())
def test_the_readme_rows_example_exits_with_its_code(
    row: Row, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run = EXAMPLES.get(row.example)
    assert run is not None, f"README row {row.code}: no way to run {row.example!r}"
    outcome = run(tmp_path, request)
    assert outcome.code == row.code, f"README says {row.code} for {row.example!r}: {outcome}"
    assert "Traceback" not in outcome.err
