"""Every string of the inventory is one line of printable text: a control character in any
string key (a TOML "\\n" escape, a tab, NUL, DEL, a C1 control or a Unicode line separator)
ends in exit 2 naming that key and nothing else, before any file is written or any cloud
is asked. The values land in cloud-config, shell scripts and node settings files, where
such a character ends a line early.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provisioner.cli import main
from provisioner.errors import InventoryError
from provisioner.inventory import memory_mib, parse_inventory
from provisioner.inventory.fields import show, toml_string
from provisioner.inventory.services import MIN_SERVER_IDLE_TIMEOUT
from tests.unit.inventory_cases import (
    every_string_set,
    example_data,
    string_at,
    string_keys,
    with_changes,
    with_string,
)
from tests.unit.toml_writer import toml_document

ROOT = Path(__file__).resolve().parents[2]
# One of each kind: C0 controls (line breaks, tab, NUL, escape), DEL, a C1 control (NEL)
# and the Unicode line separator; YAML takes NEL and U+2028 for line breaks too.
CONTROLS = ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028"]


@pytest.fixture(scope="module")
def string_cases(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, dict, tuple]]:
    """(key, a valid inventory in which it holds a real value, where it is) for every string
    key of the example, array items included."""
    cases: dict[str, tuple[str, dict, tuple]] = {}
    for data in every_string_set(tmp_path_factory.mktemp("files")):
        parse_inventory(data, source="<base>")  # valid as it stands
        for key, where in string_keys(data):
            cases.setdefault(key, (key, data, where))
    return list(cases.values())


def problems(data: dict[str, Any]) -> list[str] | None:
    """The problem lines of ``data``, or None when it loads."""
    try:
        parse_inventory(data, source="<case>")
    except InventoryError as exc:
        assert exc.exit_code == 2
        head, *lines = exc.message.splitlines()
        assert head == "inventory is not valid:"
        return [line.strip() for line in lines]
    return None


def refused_for_its_key(key: str, lines: list[str] | None, bad: str) -> bool:
    message = "must not contain control characters such as newlines or tabs"
    return lines == [f"{key}: {message}, got {show(bad)}; remove the {escaped(bad)}"]


def escaped(bad: str) -> str:
    control = next(ch for ch in bad if ch in CONTROLS)
    return toml_string(control)[1:-1]


def example_string_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    """Keys of the example that hold a string or an array (of strings), empty or not."""
    keys: set[str] = set()
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            keys |= example_string_keys(value, dotted)
        elif isinstance(value, str | list):
            keys.add(dotted)
    return keys


def test_the_cases_cover_every_string_key_of_the_example(string_cases):
    covered = {key.split("[")[0] for key, _, _ in string_cases}
    assert covered == example_string_keys(example_data())
    assert len(covered) == 51


def test_a_trailing_newline_in_any_string_key_is_refused_naming_only_that_key(string_cases):
    wrong = []
    for key, data, where in string_cases:
        bad = string_at(data, where) + "\n"
        lines = problems(with_string(data, where, bad))
        if not refused_for_its_key(key, lines, bad):
            wrong.append((key, lines))
    assert wrong == []


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_control_character_inside_any_string_key_is_refused_naming_only_that_key(
    string_cases, control
):
    wrong = []
    for key, data, where in string_cases:
        good = string_at(data, where)
        bad = good[:1] + control + good[1:]
        lines = problems(with_string(data, where, bad))
        if not refused_for_its_key(key, lines, bad):
            wrong.append((key, lines))
    assert wrong == []


@pytest.fixture
def quiet_home(tmp_path, monkeypatch) -> Path:
    """XDG directories of the test's own: where a run would leave state, were it to run."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def test_render_with_a_newline_in_any_string_key_exits_2_and_writes_nothing(
    string_cases, quiet_home, capsys
):
    inv = quiet_home / "inv.toml"
    wrong = []
    for key, data, where in string_cases:
        inv.write_text(toml_document(with_string(data, where, string_at(data, where) + "\n")))
        code = main(["render", "-i", str(inv), "--role", "master"])
        out, err = capsys.readouterr()
        if code != 2 or out or f"\n  {key}: must not contain control characters" not in err:
            wrong.append((key, code, out[:80], err))
    assert wrong == []
    assert not (quiet_home / "state").exists() and not (quiet_home / "config").exists()


def test_the_real_cli_refuses_a_newline_from_the_file_or_the_environment_before_any_cloud(
    tmp_path,
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "SPARKSTACK_"))}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    file_name = tmp_path / "name.toml"
    file_name.write_text(toml_document(with_changes({"cluster.name": "spark-demo\n"})))
    user = tmp_path / "user.toml"
    user.write_text(toml_document(with_changes({"jupyterhub.users": ["alice", "bob\n"]})))
    example = ROOT / "inventory.example.toml"
    runs = [
        (["up", "-i", str(file_name), "--dry-run"], {}, "cluster.name: must not contain"),
        (["render", "-i", str(user), "--role", "master"], {}, "jupyterhub.users[1]: must not"),
        # one cluster per CI run: the name may come from the environment instead
        (
            ["up", "-i", str(example), "--dry-run"],
            {"SPARKSTACK_CLUSTER_NAME": "ci-42\n"},
            "cluster.name: must not contain control characters such as newlines or tabs, "
            'got "ci-42\\n"',
        ),
    ]
    procs = [
        subprocess.Popen([sys.executable, "-m", "provisioner.cli", *argv], cwd=ROOT,
                         env=env | extra, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for argv, extra, _ in runs
    ]  # fmt: skip
    for (argv, _, expected), proc in zip(runs, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (argv, err)
        assert out == "" and "Traceback" not in err, (argv, err)
        assert expected in err, (argv, err)
    assert not (tmp_path / "state").exists() and not (tmp_path / "config").exists()


# ------------------------------------------------- patterns checked over the whole value


def test_a_memory_size_with_a_trailing_newline_is_not_a_size():
    assert memory_mib("2g") == 2048
    with pytest.raises(ValueError, match="not a memory size"):
        memory_mib("2g\n")


def test_a_version_in_digits_other_than_ascii_is_refused():
    lines = problems(with_changes({"spark.version": "\u0664.\u0663.\u0660"}))
    assert lines == ['spark.version: must be a release number like "4.3.0", got "٤.٣.٠"']


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("spark.limits.executor_memory", " 2G "),
        ("spark.mirror", " https://mirror.example.org/spark/ "),
        ("spark.sha512", f" {'AB' * 64} "),
    ],
)
def test_spaces_around_a_value_are_still_forgiven(key, value):
    assert problems(with_changes({key: value})) is None


# ----------------------------------- checks the hub relied on, now made by the inventory


def test_a_server_idle_timeout_the_culler_would_misread_is_refused_by_the_inventory():
    short = MIN_SERVER_IDLE_TIMEOUT - 1
    lines = problems(with_changes({"jupyterhub.culling.server_idle_timeout": short}))
    assert lines == [
        f"jupyterhub.culling.server_idle_timeout: must be 0 (never) or at least "
        f"{MIN_SERVER_IDLE_TIMEOUT} s (the hub learns of activity every 300 s), got {short}"
    ]
    for fine in (0, MIN_SERVER_IDLE_TIMEOUT):
        assert problems(with_changes({"jupyterhub.culling.server_idle_timeout": fine})) is None
