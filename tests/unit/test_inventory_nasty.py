"""Hand-picked nasty inventories and command lines: each ends in exit 2 with the key it is
about (or the file, when there is no key), never a traceback. The loader is called in
this process for the table; a sample goes through the real CLI, each in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from provisioner.cli import main
from provisioner.errors import InventoryError
from provisioner.inventory import load_inventory
from tests.unit.inventory_cases import EXAMPLE, pinned_example, with_changes
from tests.unit.toml_writer import toml_document

ROOT = Path(__file__).resolve().parents[2]
LINUX = sys.platform.startswith("linux")


def write(path: Path, changes: dict, drop: tuple[str, ...] = ()) -> Path:
    path.write_text(toml_document(with_changes(changes, drop=drop)), encoding="utf-8")
    return path


def problem_lines(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as err:
        load_inventory(path)
    assert err.value.exit_code == 2
    return [line.strip() for line in err.value.message.splitlines()]


NASTY = {
    "unicode name": ({"cluster.name": "spаrk"}, "cluster.name: must be 1-40 characters"),
    "emoji name": ({"cluster.name": "🚀-demo"}, 'got "🚀-demo"'),
    "zero-width space": ({"cluster.name": "spark\u200bdemo"}, r'got "spark\u200Bdemo"'),
    "newline in a name": (
        {"cluster.name": "a\nb"},
        r'cluster.name: must not contain control characters such as newlines or tabs, got "a\nb"',
    ),
    "a million workers": ({"workers.count": 10**6}, "workers.count: must be <= 1000, got 1000000"),
    "2**64 workers": ({"workers.count": 2**64}, f"workers.count: must be <= 1000, got {2**64}"),
    "negative workers": ({"workers.count": -1}, "workers.count: must be >= 0, got -1"),
    "float workers": ({"workers.count": 2.5}, "workers.count: must be an integer, got float 2.5"),
    "nan timeout": (
        {"workers.decommission_timeout": float("nan")},
        "workers.decommission_timeout: ",
    ),
    "duplicate users": (
        {"jupyterhub.users": ["alice", "bob", "alice"]},
        'jupyterhub.users[2]: "alice" is listed twice',
    ),
    "admin not a user": (
        {"jupyterhub.admins": ["mallory"]},
        'jupyterhub.admins: "mallory" is not in jupyterhub.users',
    ),
    "unicode user": ({"jupyterhub.users": ["alice", "bøb"]}, "jupyterhub.users[1]: not a valid"),
    "CIDR /33": ({"network.allowed_cidrs": ["10.0.0.0/33"]}, "network.allowed_cidrs[0]: not a"),
    "CIDR word": ({"network.allowed_cidrs": ["anywhere"]}, "network.allowed_cidrs[0]: not a"),
    "CIDR empty": ({"network.allowed_cidrs": [""]}, "network.allowed_cidrs[0]: not a CIDR"),
    "CIDR v6 /129": ({"network.allowed_cidrs": ["2001:db8::/129"]}, "network.allowed_cidrs[0]"),
    "CIDR host bits": (
        {"network.allowed_cidrs": ["192.168.1.7/24"]},
        'network.allowed_cidrs[0]: host bits set in "192.168.1.7/24" (did you mean '
        '"192.168.1.0/24"?)',
    ),
    "CIDR as a number": (
        {"network.allowed_cidrs": [24]},
        "network.allowed_cidrs[0]: must be a string, got integer 24",
    ),
    "hub on Spark's master port": (
        {"jupyterhub.port": 7077},
        "jupyterhub.port: 7077 is used by the Spark master; pick another",
    ),
    "hub on Spark's UI port": (
        {"jupyterhub.port": 8080},
        "jupyterhub.port: 8080 is used by the Spark master web UI",
    ),
    "hub on the hub API port": ({"jupyterhub.port": 15001}, "jupyterhub.port: 15001 is used by"),
    "hub on SSH": ({"jupyterhub.port": 22}, "jupyterhub.port: 22 is used by SSH"),
    "key of a user this machine lacks": (
        {"ssh.private_key": "~no-such-user-here/id_ed25519"},
        'ssh.private_key: cannot expand "~no-such-user-here": no such user on this machine',
    ),
    "NUL in a key path": (
        {"ssh.private_key": "id\x00rsa"},
        r'ssh.private_key: must not contain control characters such as newlines or tabs, '
        r'got "id\u0000rsa"; remove the \u0000',
    ),
    "key path as a table": (
        {"ssh.private_key": {"path": "x"}},
        "ssh.private_key: must be a string (a file path), got table {...}",
    ),
    "unknown key with a newline": ({"workers.co\nunt": 3}, r'workers."co\nunt": unknown key'),
    "table as a value": ({"spark": "4.3.0"}, 'spark: must be a table, got string "4.3.0"'),
}


@pytest.mark.parametrize("case", list(NASTY))
def test_a_nasty_value_is_refused_naming_its_key(case, tmp_path):
    changes, expected = NASTY[case]
    lines = problem_lines(write(tmp_path / "inv.toml", changes))
    assert lines[0] == "inventory is not valid:"
    assert any(line.startswith(expected) or expected in line for line in lines[1:]), lines
    # one problem per line: nothing in a value or key can start a line of its own
    assert all(": " in line for line in lines[1:]), lines


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_the_whole_internet_is_allowed_and_known_as_such(cidr, tmp_path):
    inv = load_inventory(write(tmp_path / "inv.toml", {"network.allowed_cidrs": [cidr]}))
    assert inv.network.open_to_everyone() == [cidr]
    narrow = load_inventory(EXAMPLE)
    assert narrow.network.open_to_everyone() == []


# ------------------------------------------------------------------ files named by a key


def special_files(tmp_path: Path) -> dict[str, Path]:
    """Files no inventory key can use, made so that they are unusable even for root (who
    reads any file whatever its mode): a directory, a FIFO (reading it would block), a
    symlink loop, a dangling symlink, and a file whose read fails with EIO."""
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    (tmp_path / "dangling").symlink_to(tmp_path / "nothing-here")
    files = {name: tmp_path / name for name in ("dir", "fifo", "loop-a", "dangling")}
    if LINUX:
        files["eio"] = Path("/proc/self/mem")  # reading its offset 0 is always EIO
    return files


REASONS = {
    "dir": "is a directory",
    "fifo": "is not a regular file",
    "loop-a": "cannot be read (Too many levels of symbolic links)",
    "dangling": "not found",
    "eio": "cannot be read (Input/output error)",
}


def test_tls_files_that_cannot_be_read_are_refused_by_the_loader(tmp_path):
    for name, path in special_files(tmp_path).items():
        changes = {
            "jupyterhub.tls.mode": "files",
            "jupyterhub.tls.cert_file": str(path),
            "jupyterhub.tls.key_file": str(path),
        }
        lines = problem_lines(write(tmp_path / "inv.toml", changes))
        want = f"no such file: {path}" if name == "dangling" else f"{path} {REASONS[name]}"
        assert f"jupyterhub.tls.cert_file: {want}" in lines, (name, lines)
        assert f"jupyterhub.tls.key_file: {want}" in lines, (name, lines)


NOBODY = 65534  # Debian's and most distributions' unprivileged "nobody" user and group


def as_nobody(check, path: Path) -> str | None:
    """``check(path)`` in a child that dropped root for nobody, whose reads the mode bits
    govern; as anyone else, in this process. The answer comes back through a pipe."""
    if os.geteuid() != 0:
        return check(path)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_end, json.dumps(check(path)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        text = answer.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and text, "the unprivileged child failed"
    return json.loads(text)


def test_a_mode_000_key_is_refused_for_a_user_who_cannot_read_it():
    from provisioner.inventory.fields import unusable_file

    # A directory of its own that anyone may enter (pytest's tmp_path is root's 0700), so
    # only the key's own mode can refuse the read: its readable sibling proves it.
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        readable, key = Path(tmp) / "id.pub", Path(tmp) / "id"
        readable.write_text("public")
        key.write_text("secret")
        key.chmod(0)
        assert as_nobody(unusable_file, readable) is None
        assert as_nobody(unusable_file, key) == "cannot be read (Permission denied)"


@pytest.fixture
def scripted_cloud(tmp_path, monkeypatch):
    """`sparkstack up` in this process with the cloud edge scripted: no cloud at all."""
    from provisioner.commands import cluster
    from tests.unit.scripted_cloud import ScriptedProject

    def scripted(inv):
        return ScriptedProject(cluster=inv.cluster.name)

    monkeypatch.setattr(cluster, "cluster_cloud", scripted)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def with_private_key(tmp_path: Path, key: str) -> Path:
    text = pinned_example(tmp_path / "pinned.toml").read_text(encoding="utf-8")
    assert '\nprivate_key = ""\n' in text
    inv = tmp_path / "inv.toml"
    inv.write_text(text.replace('\nprivate_key = ""\n', f"\nprivate_key = '{key}'\n"))
    return inv


def test_a_private_key_that_cannot_be_read_fails_preflight_naming_the_key(
    tmp_path, scripted_cloud, capsys
):
    for name, path in special_files(tmp_path).items():
        assert main(["up", "-i", str(with_private_key(tmp_path, str(path))), "--dry-run"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"private key {path} (ssh.private_key) {REASONS[name]}" in err, (name, err)
        assert "Traceback" not in err


def test_up_warns_that_0_0_0_0_0_opens_ssh_and_the_hub_to_the_internet(
    tmp_path, scripted_cloud, capsys
):
    text = pinned_example(tmp_path / "pinned.toml").read_text(encoding="utf-8")
    inv = tmp_path / "inv.toml"
    inv.write_text(text.replace('["203.0.113.0/24"]', '["203.0.113.0/24", "0.0.0.0/0"]'))
    assert main(["up", "-i", str(inv), "--dry-run"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "WARNING: network.allowed_cidrs has 0.0.0.0/0: SSH (22) and the hub (port 443) are "
        "open to the whole internet" in err
    )
    assert main(["up", "-i", str(pinned_example(tmp_path / "narrow.toml")), "--dry-run"]) == 0
    assert "WARNING" not in capsys.readouterr().err


# --------------------------------------------------------------- through the real CLI


def nasty_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """(file, what the message must say) for whole files that are not inventories."""
    syntax = tmp_path / "syntax.toml"
    syntax.write_text('[cluster]\nname = "demo\n')
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)) * 8)
    big = tmp_path / "big.toml"
    big.write_text(EXAMPLE.read_text() + ("# " + "x" * 97 + "\n") * 100_000)  # 10 MB
    return {
        "syntax": (syntax, "invalid TOML at line 2, column"),
        "empty": (empty, "cluster: required key is missing"),
        "binary": (binary, "not UTF-8 text (invalid byte on line 2)"),
        "10 MB": (big, "larger than 1 MiB: not an inventory file"),
        "missing": (tmp_path / "nope.toml", "no such file"),
        "directory": (tmp_path, "is a directory"),
        "emoji name": (write(tmp_path / "emoji.toml", {"cluster.name": "🚀"}), 'got "🚀"'),
        "10^6 workers": (
            write(tmp_path / "million.toml", {"workers.count": 10**6}),
            "workers.count: must be <= 1000, got 1000000",
        ),
        "no such user": (
            write(tmp_path / "user.toml", {"ssh.private_key": "~no-such-user-here/k"}),
            'ssh.private_key: cannot expand "~no-such-user-here"',
        ),
        "admin not a user": (
            write(tmp_path / "admin.toml", {"jupyterhub.admins": ["mallory"]}),
            'jupyterhub.admins: "mallory" is not in jupyterhub.users',
        ),
    }


def run_all(argvs: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Each command in a process of its own, all at once (each is a second of imports)."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "provisioner.cli", *argv], cwd=ROOT, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]  # fmt: skip
    done = []
    for argv, proc in zip(argvs, procs, strict=True):
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return done


@pytest.fixture
def env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "SPARKSTACK_"))}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    return env


def test_nasty_files_through_the_cli_exit_2_without_a_traceback(tmp_path, env):
    cases = nasty_files(tmp_path)
    argvs = [["render", "-i", str(path), "--role", "master"] for path, _ in cases.values()]
    # up reads the inventory the same way: a few prove it (each process costs a second)
    argvs += [
        ["up", "-i", str(cases[c][0]), "--dry-run"] for c in ("syntax", "10 MB", "emoji name")
    ]
    for proc in run_all(argvs, env):
        path = Path(proc.args[2])
        expected = next(want for p, want in cases.values() if p == path)
        err = " ".join(proc.stderr.split())
        assert proc.returncode == 2, (proc.args, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        assert expected in err, (proc.args, proc.stderr)


FLAGS = [
    (["scale", "-w", "-1"], "Invalid value for '--workers' / '-w'"),
    (["scale", "-w", "abc"], "Invalid value for '--workers' / '-w'"),
    (["scale", "-w", "2.5"], "Invalid value for '--workers' / '-w'"),
    (["scale"], "Missing option '--workers'"),
    (["up", "--until", "bogus"], "'bogus' is not one of 'servers', 'ssh', 'all'"),
    (["up", "--until"], "Option '--until' requires an argument"),
    (["up", "--bogus"], "No such option: --bogus"),
]


@pytest.mark.parametrize(
    ("argv", "expected"), FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_bad_flags_exit_2_with_what_is_wrong(argv, expected, capsys):
    # parsing fails before the inventory is read, so the real main() in this process is
    # the whole story (the files above prove the process edge)
    assert main([*argv, "-i", str(EXAMPLE)] if argv[-1] != "--until" else argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert expected in " ".join(captured.err.split())
