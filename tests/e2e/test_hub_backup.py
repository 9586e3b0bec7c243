"""The hub users' homes saved and put back on a real host: the functions `down` and
`up --restore` use, with the host's own getent, find, GNU tar and runuser.

One namespace host (tests/e2e/test_hub.py's `hub_host`) gets the hub for alice and bob;
what their homes hold is made as each user, backed up, changed, and restored.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioner.errors import RemoteError, UserInputError
from provisioner.hub import backup as B
from provisioner.workflows.backup import check_archive, restore, take_backup
from tests.testbed.hosts import hosts

from .test_hub import HostShell, _inventory, _run, hub_host  # noqa: F401

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

USERS = ("alice", "bob")


class HostStream:
    """The host's root shell plus what a backup needs of SSH: stdout streamed to a sink."""

    def __init__(self, shell: HostShell) -> None:
        self.shell = shell
        self.run, self.put, self.read = shell.run, shell.put, shell.read

    def stream(
        self,
        command: str,
        sink: Callable[[bytes], object],
        *,
        input: bytes = b"",
        timeout: float | None = None,
    ) -> tuple[int, str]:
        argv = hosts.enter_argv(self.shell.host_record, "/bin/sh", "-c", command)
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(input)
        proc.stdin.close()
        while chunk := proc.stdout.read(65536):
            sink(chunk)
        proc.wait(timeout=timeout or 300)
        return proc.returncode, proc.stderr.read().decode(errors="replace")


def as_user(shell: HostShell, user: str, script: str) -> str:
    _, out, _ = shell.run(f"runuser -u {user} -- sh -c 'cd && umask 077 && {script}'")
    return out


def listing(shell: HostShell, home: str) -> dict[str, str]:
    """Every path under a home: its owner, group and mode."""
    _, out, _ = shell.run(f"cd {home} && find . -mindepth 1 -printf '%P %u:%g %m\\n'")
    return dict(line.split(" ", 1) for line in out.splitlines())


def crafted(path: Path, *members: tuple[str, bytes, str]) -> Path:
    """An archive with our manifest and hand-made members (name, type, link target)."""
    with tarfile.open(path, "w:gz") as tar:
        data = json.dumps(
            {"format": B.FORMAT, "version": B.VERSION, "users": {"alice": {}}}
        ).encode()
        head = tarfile.TarInfo(B.MANIFEST)
        head.size = len(data)
        tar.addfile(head, io.BytesIO(data))
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, link, 0o644
            body = b"owned\n" if kind == tarfile.REGTYPE else b""
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body else None)
    return path


def test_homes_are_backed_up_and_restored_with_their_owners_and_nothing_escapes(
    hub_host,  # noqa: F811
    tmp_path,
):
    host, shell = hub_host
    _run(shell, _inventory(list(USERS), ["alice"]), host.fixed_ip)
    shell.run(
        "rm -rf /home/alice/work /home/alice/*.txt /home/alice/escape /home/alice/big.bin"
        " /home/bob/bob.ipynb /etc/sparkstack-evil*"
    )
    as_user(
        shell,
        "alice",
        "mkdir -p work/.ipynb_checkpoints && echo v1 > work/a.ipynb && "
        "echo cp > work/.ipynb_checkpoints/a-checkpoint.ipynb && echo old > notes.txt && "
        "echo keep > kept.txt && head -c 2048 /dev/zero > big.bin && ln -s /etc escape",
    )
    as_user(shell, "bob", "echo bob > bob.ipynb")

    # --- the backup `down` takes ---
    saved = take_backup(
        HostStream(shell),
        cluster="e2e",
        # "nohome": a hub user no hub test on this (shared) host has made an account for
        users=["alice", "bob", "nohome"],
        dest=tmp_path / "backups",
        policy=B.Policy(max_file=1024),
    )
    assert saved.path is not None
    assert stat.S_IMODE(saved.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.path.parent.stat().st_mode) == 0o700
    assert os.listdir(saved.path.parent) == [saved.path.name]
    with tarfile.open(saved.path) as tar:
        names = set(tar.getnames())
    assert {"homes/alice/work/a.ipynb", "homes/alice/notes.txt", "homes/bob/bob.ipynb"} <= names
    assert not {n for n in names if "big.bin" in n or "escape" in n or "checkpoint" in n}
    skipped = {(s["user"], s["path"]): s["reason"] for s in saved.skipped}
    assert skipped[("alice", "big.bin")] == "larger than 1 KiB"
    assert skipped[("alice", "escape")] == "symbolic link"
    assert skipped[("alice", "work/.ipynb_checkpoints")] == "cache"
    assert saved.manifest["no_home"] == ["nohome"]

    # --- the node changes: a lost notebook, a newer note, an older copy, bob's gone ---
    shell.run("rm -rf /home/alice/work /home/bob/bob.ipynb")
    as_user(
        shell,
        "alice",
        "echo newer > notes.txt && echo stale > kept.txt && touch -d 2001-01-01 kept.txt",
    )
    shell.run("chmod 0755 /home/alice")

    # --- `up --restore` for an inventory without bob ---
    done = restore(shell, saved.path, users=["alice"])
    assert done.not_in_inventory == ["bob"] and list(done.users) == ["alice"]
    # notes.txt is newer on the node; the unchanged files (.bashrc...) are as new
    assert "notes.txt" in done.kept["alice"] and "kept.txt" not in done.kept["alice"]
    _, notes, _ = shell.run(
        "cat /home/alice/notes.txt /home/alice/kept.txt /home/alice/work/a.ipynb"
    )
    assert notes.split() == ["newer", "keep", "v1"]
    tree = listing(shell, "/home/alice")
    assert tree["work"] == "alice:alice 700" and tree["work/a.ipynb"] == "alice:alice 600"
    assert all(v.startswith("alice:alice ") for v in tree.values()), tree
    _, mode, _ = shell.run("stat -c '%U %a' /home/alice")
    assert mode.split() == ["alice", "700"]
    assert shell.run("test -e /home/bob/bob.ipynb", check=False)[0] != 0  # bob not restored

    # --- archives that are not ours, or leave the home, are refused before any change ---
    for i, members in enumerate(
        [
            [("homes/alice/../../../etc/sparkstack-evil", tarfile.REGTYPE, "")],
            [("/etc/sparkstack-evil", tarfile.REGTYPE, "")],
            [
                ("homes/alice/out", tarfile.SYMTYPE, "/etc"),
                ("homes/alice/out/sparkstack-evil", tarfile.REGTYPE, ""),
            ],
        ]
    ):
        with pytest.raises(UserInputError):
            restore(shell, crafted(tmp_path / f"bad{i}.tar.gz", *members), users=["alice"])
    with pytest.raises(UserInputError, match="does not start with"):
        restore(shell, Path(plain_archive(tmp_path)), users=["alice"])
    # One of ours, through a link alice left in her home: tar runs as alice, so it cannot
    # write where she cannot (the restore fails, /etc stays as it was).
    good = crafted(
        tmp_path / "through-link.tar.gz",
        ("homes/alice/escape/sparkstack-evil", tarfile.REGTYPE, ""),
    )
    with pytest.raises(RemoteError, match="restoring alice's home failed"):
        restore(shell, good, users=["alice"])
    assert shell.run("ls /etc/sparkstack-evil*", check=False)[0] != 0
    assert check_archive(saved.path).users == ["alice", "bob"]


def plain_archive(tmp_path: Path) -> Path:
    """A gzip'd tar of a home with no manifest: somebody's own archive."""
    path = tmp_path / "plain.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("homes/alice/x.ipynb")
        tar.addfile(info, io.BytesIO(b""))
    return path
