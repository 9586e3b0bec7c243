"""The hub users' homes across `down`: what the policy copies and lists, an archive made
by the real find and GNU tar from a directory tree here, a restore's refusal of archives
that are not ours or leave the home, and `down` deleting nothing when the backup fails."""

from __future__ import annotations

import getpass
import io
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provisioner import plan as P
from provisioner import workflows
from provisioner.errors import Interrupted, RemoteError, UserInputError
from provisioner.hub import backup as B
from provisioner.workflows.backup import DownBackup, check_archive, restore, take_backup
from tests.unit.scripted_cloud import ScriptedProject
from tests.unit.test_verbs_runs import FAST, ROOT, stack_cluster

MiB = B.MiB
NOW = datetime(2026, 12, 7, 3, 40, 5, tzinfo=UTC)


# --- The policy -------------------------------------------------------------------------


def E(path: str, kind: str = "f", size: int = 10, user: str = "alice") -> B.Entry:
    return B.Entry(user, path, kind, size)


def reasons(sel: B.Selection) -> dict[str, str]:
    return {f"{s.user}:{s.path}": s.reason for s in sel.skipped}


def test_the_policy_copies_notebooks_lists_big_files_and_links_and_skips_caches():
    sel = B.select(
        [
            E("work", "d"),
            E("work/a.ipynb", size=2000),
            E("work/.ipynb_checkpoints", "d"),
            E("work/.ipynb_checkpoints/a-checkpoint.ipynb", size=2000),
            E(".cache", "d"),
            E(".cache/pip/x.whl", size=5 * MiB),
            E(".local/share/jupyter/runtime/kernel-1.json", size=300),
            E(".local/share/jupyter/lab", "d"),
            E("data.parquet", size=10 * MiB + 1),
            E("exact.bin", size=10 * MiB),
            E("link", "l", 0),
            E("fifo", "p", 0),
        ],
        B.Policy(),
    )
    assert sorted(e.path for e in sel.copy) == [
        ".local/share/jupyter/lab",
        "exact.bin",
        "work",
        "work/a.ipynb",
    ]
    assert reasons(sel) == {
        "alice:data.parquet": "larger than 10 MiB",
        "alice:link": "symbolic link",
        "alice:fifo": "not a regular file",
        "alice:work/.ipynb_checkpoints": "cache",
        "alice:.cache": "cache",
        "alice:.local/share/jupyter/runtime": "cache",
    }
    # a cache is listed once, with what it holds
    assert next(s for s in sel.skipped if s.path == ".cache").size == 5 * MiB


def test_the_total_cap_keeps_the_smallest_files_of_every_user_and_lists_the_rest():
    policy = B.Policy(max_file=100, max_total=250)
    sel = B.select(
        [
            E("big", size=100),
            E("nb.ipynb", size=50),
            E("b.ipynb", size=60, user="bob"),
            E("mid", size=90, user="bob"),
        ],
        policy,
    )
    assert sorted((e.user, e.path) for e in sel.copy) == [
        ("alice", "nb.ipynb"),
        ("bob", "b.ipynb"),
        ("bob", "mid"),
    ]
    assert reasons(sel) == {"alice:big": "past the 250 B total"}
    assert sel.bytes == 200


def test_the_listing_is_parsed_record_by_record():
    fields = [
        "H",
        "alice",
        "/home/alice",
        "E",
        "d",
        "4096",
        "work",
        "E",
        "f",
        "12",
        "work/a b.ipynb",
        "M",
        "carol",
        "",
    ]
    text = "\0".join(fields)
    listing = B.parse_listing(text)
    assert listing.homes == {"alice": "/home/alice"}
    assert listing.no_home == ["carol"]
    assert listing.entries == [E("work", "d", 4096), E("work/a b.ipynb", "f", 12)]


def test_archive_names_and_the_data_directory():
    assert B.archive_name(NOW) == "20261207T034005Z.tar.gz"
    assert B.backups_dir("c1", {"XDG_DATA_HOME": "/d"}) == Path("/d/sparkstack/c1/backups")
    assert B.backups_dir("c1", {"HOME": "/h"}) == Path("/h/.local/share/sparkstack/c1/backups")


# --- A backup made by the real find and tar, from a tree on this machine ----------------


class LocalShell:
    """A root shell on this machine (the test runs as root or as the homes' owner), with a
    `getent` that knows only the test's user and gives it a home under the test's dir."""

    def __init__(self, tmp: Path, homes: dict[str, Path]) -> None:
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        lines = "".join(f"{u}:x:0:0::{h}:/bin/sh\n" for u, h in homes.items())
        getent = bin_dir / "getent"
        getent.write_text(
            f'#!/bin/sh\n[ "$1" = passwd ] || exit 2\nshift\nfor n; do\n'
            f"  printf '%s' {lines!r} | grep \"^$n:\" || true\ndone\n"
        )
        getent.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def run(
        self,
        command: str,
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> tuple[int, str, str]:
        proc = subprocess.run(
            ["sh", "-c", command],
            input=input or b"",
            capture_output=True,
            env=self.env,
            timeout=timeout or 60,
        )
        assert not check or proc.returncode == 0, proc.stderr
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    def put(self, path: str, data: bytes, *, mode: int, owner: str, group: str) -> bool:
        raise NotImplementedError

    def read(self, path: str) -> bytes | None:
        return None

    def stream(
        self,
        command: str,
        sink: Callable[[bytes], object],
        *,
        input: bytes = b"",
        timeout: float | None = None,
    ) -> tuple[int, str]:
        proc = subprocess.Popen(
            ["sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(input)
        proc.stdin.close()
        try:
            while chunk := proc.stdout.read(4096):
                sink(chunk)
        finally:
            proc.stdout.close()
            proc.kill()
            proc.wait()
        return proc.returncode, proc.stderr.read().decode()


@pytest.fixture
def home(tmp_path) -> tuple[str, Path]:
    user = getpass.getuser()  # stat's owner of the tree, as the listing checks
    h = tmp_path / "homes" / user
    (h / "work" / ".ipynb_checkpoints").mkdir(parents=True)
    (h / "work" / "a.ipynb").write_text('{"cells": []}')
    (h / "work" / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_text("{}")
    (h / "big.bin").write_bytes(b"x" * 3000)
    (h / "escape").symlink_to("/etc")
    (h / "work" / "a.ipynb").chmod(0o640)
    return user, h


def test_a_backup_holds_the_homes_under_a_manifest_and_lists_what_it_left_out(tmp_path, home):
    user, h = home
    shell = LocalShell(tmp_path, {user: h})
    dest = tmp_path / "data" / "backups"
    saved = take_backup(
        shell,
        cluster="c1",
        users=[user, "carol"],
        dest=dest,
        policy=B.Policy(max_file=1000),
        now=NOW,
    )
    assert saved.path == dest / "20261207T034005Z.tar.gz"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert stat.S_IMODE(saved.path.stat().st_mode) == 0o600
    assert os.listdir(dest) == [saved.path.name]  # no temporary file left
    with tarfile.open(saved.path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.getmembers()[0].name == B.MANIFEST
        manifest = json.loads(tar.extractfile(B.MANIFEST).read())  # type: ignore[union-attr]
        notebook = tar.extractfile(f"homes/{user}/work/a.ipynb").read()  # type: ignore[union-attr]
    assert notebook == b'{"cells": []}'
    assert sorted(members) == sorted(
        [B.MANIFEST, f"homes/{user}/work", f"homes/{user}/work/a.ipynb"]
    )
    nb = members[f"homes/{user}/work/a.ipynb"]
    assert (nb.mode, nb.uid, nb.uname) == (0o640, 0, "")
    assert manifest["users"] == {user: {"home": str(h), "files": 1, "bytes": 13}}
    assert manifest["no_home"] == ["carol"]
    assert {(s["path"], s["reason"]) for s in manifest["skipped"]} == {
        ("big.bin", "larger than 1000 B"),
        ("escape", "symbolic link"),
        ("work/.ipynb_checkpoints", "cache"),
    }
    lines = saved.lines()
    assert str(saved.path) in lines[0] and "1 file(s)" in lines[0]
    assert any("big.bin" in line and "larger than" in line for line in lines)
    assert saved.to_json()["archive"] == str(saved.path)
    # what `up --restore` reads back: only the user's files, relative to the home
    backup = check_archive(saved.path)
    with tarfile.open(fileobj=io.BytesIO(backup.tars[user])) as tar:
        assert sorted(tar.getnames()) == ["work", "work/a.ipynb"]


def test_no_home_on_the_master_makes_no_archive(tmp_path):
    shell = LocalShell(tmp_path, {})
    saved = take_backup(shell, cluster="c1", users=["alice"], dest=tmp_path / "b", now=NOW)
    assert saved.path is None and not (tmp_path / "b").exists()
    assert saved.lines() == [
        "no hub user has a home on the master (alice have none): nothing to back up"
    ]


def test_an_interrupted_or_failed_backup_leaves_no_archive(tmp_path, home):
    user, h = home
    shell = LocalShell(tmp_path, {user: h})
    dest = tmp_path / "b"
    real = shell.stream

    def cut(command, sink, **kw):
        def first_chunk_then_ctrl_c(chunk: bytes) -> None:
            sink(chunk)
            raise KeyboardInterrupt

        return real(command, first_chunk_then_ctrl_c, **kw)

    shell.stream = cut  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        take_backup(shell, cluster="c1", users=[user], dest=dest, now=NOW)
    assert os.listdir(dest) == []

    shell.stream = real  # type: ignore[method-assign]
    broken = B.TAR_COMMAND.replace("tar --create", "tar --no-such-option --create")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(B, "TAR_COMMAND", broken)
        with pytest.raises(RemoteError, match="tar of the hub users' homes failed"):
            take_backup(shell, cluster="c1", users=[user], dest=dest, now=NOW)
    assert os.listdir(dest) == []


# --- Restore: refusing what is not ours -------------------------------------------------


def archive(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes]], *, manifest: dict | None = None
) -> Path:
    man = (
        manifest
        if manifest is not None
        else {"format": B.FORMAT, "version": B.VERSION, "users": {"alice": {}}}
    )
    with tarfile.open(path, "w:gz") as tar:
        data = json.dumps(man).encode()
        head = tarfile.TarInfo(B.MANIFEST)
        head.size = len(data)
        tar.addfile(head, io.BytesIO(data))
        for info, content in members:
            tar.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return path


def member(
    name: str, kind: bytes = tarfile.REGTYPE, content: bytes = b"hi", link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(content) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    info.mode = 0o4755
    return info, content


def test_a_good_archive_gives_each_user_a_tar_relative_to_the_home(tmp_path):
    path = archive(
        tmp_path / "a.tar.gz",
        [member("homes/alice/work", tarfile.DIRTYPE), member("homes/alice/work/a.ipynb")],
    )
    backup = check_archive(path)
    assert backup.users == ["alice"] and backup.counts == {"alice": 1}
    with tarfile.open(fileobj=io.BytesIO(backup.tars["alice"])) as tar:
        infos = {m.name: m for m in tar.getmembers()}
    assert sorted(infos) == ["work", "work/a.ipynb"]
    assert infos["work/a.ipynb"].mode == 0o755  # no setuid from the node


@pytest.mark.parametrize(
    ("members", "said"),
    [
        ([member("homes/alice/../../etc/passwd")], "would leave its home"),
        ([member("homes/alice/a/../../bob/x")], "would leave its home"),
        ([member("/etc/cron.d/x")], "is not under homes/<user>/"),
        ([member("homes/mallory/x")], "is not under homes/<user>/"),
        ([member("homes/alice")], "is not under homes/<user>/"),
        ([member("homes/alice/link", tarfile.SYMTYPE, link="/etc")], "not a regular file"),
        ([member("homes/alice/l", tarfile.SYMTYPE, link="../../x")], "not a regular file"),
        ([member("homes/alice/h", tarfile.LNKTYPE, link="etc/passwd")], "not a regular file"),
        ([member("homes/alice/dev", tarfile.CHRTYPE)], "not a regular file"),
    ],
    ids=[
        "dotdot",
        "dotdot-inside",
        "absolute",
        "other-user",
        "no-path",
        "symlink-out",
        "symlink-relative",
        "hardlink",
        "device",
    ],
)
def test_a_member_that_leaves_its_home_refuses_the_whole_archive(tmp_path, members, said):
    path = archive(tmp_path / "a.tar.gz", [member("homes/alice/ok.ipynb"), *members])
    with pytest.raises(UserInputError) as err:
        check_archive(path)
    assert said in err.value.message and err.value.exit_code == 2
    assert "refuses links" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("manifest", "said"),
    [
        ({"format": "other", "version": 1, "users": {}}, "is not a sparkstack backup"),
        ({"format": B.FORMAT, "version": 99, "users": {}}, "version 99"),
        ({"format": B.FORMAT, "version": 1, "users": {"../x": {}}}, "no valid users"),
    ],
)
def test_an_archive_with_a_manifest_not_ours_is_refused(tmp_path, manifest, said):
    path = archive(tmp_path / "a.tar.gz", [], manifest=manifest)
    with pytest.raises(UserInputError, match=said.replace(".", r"\.")):
        check_archive(path)


def test_an_archive_without_a_manifest_or_not_a_tar_is_refused(tmp_path):
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        info, data = member("homes/alice/x")
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UserInputError, match="does not start with"):
        check_archive(plain)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar at all")
    with pytest.raises(UserInputError, match="not a readable gzip'd tar"):
        check_archive(junk)


# --- `down`: the backup first, and nothing deleted when it fails ------------------------


@pytest.fixture
def inv(tmp_path, monkeypatch):
    from provisioner.inventory import load_inventory

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return load_inventory(ROOT / "tests" / "testbed" / "inventory.testbed.toml")


def cluster(inv, *, master: str | None = "ACTIVE") -> ScriptedProject:
    cloud = ScriptedProject(cluster=inv.cluster.name)
    if master:
        cloud.add(f"{inv.cluster.name}-master", P.MASTER, 0, status=master)
    cloud.add(f"{inv.cluster.name}-worker-1", P.WORKER, 1)
    return cloud


def changes(cloud: ScriptedProject) -> list[tuple]:
    return [c for c in cloud.calls if c[0] not in ("list_nodes",)]


def test_down_runs_the_backup_before_deleting_and_keeps_its_lines(inv):
    cloud = cluster(inv)
    seen: list[list[tuple]] = []

    def backup(observed: P.Observed) -> list[str]:
        seen.append(changes(cloud))
        return ["homes saved to X"]

    res = workflows.down(inv, cloud=cloud, settings=FAST, backup=backup)
    assert seen == [[]]  # nothing deleted yet when it ran
    assert "homes saved to X" in res.notes and cloud.list_nodes() == []


@pytest.mark.parametrize("failure", ["error", "ctrl-c"])
def test_a_failed_or_interrupted_backup_deletes_nothing(inv, failure):
    cloud = cluster(inv)

    def backup(observed: P.Observed) -> list[str]:
        if failure == "ctrl-c":
            raise KeyboardInterrupt
        raise RemoteError("backup of the hub users' homes failed, nothing was deleted")

    expected = Interrupted if failure == "ctrl-c" else RemoteError
    with pytest.raises(expected) as err:
        workflows.down(inv, cloud=cloud, settings=FAST, backup=backup)
    assert changes(cloud) == []
    assert len(cloud.list_nodes()) == 2
    assert err.value.exit_code == (130 if failure == "ctrl-c" else 4)
    assert "nothing was deleted" in err.value.message


def test_a_heat_stack_is_deleted_only_after_the_backup(inv):
    cloud = stack_cluster(inv)
    order: list[str] = []
    workflows.down(inv, cloud=cloud, backup=lambda o: order.append("backup") or [])
    assert order == ["backup"] and changes(cloud)[0] == ("delete_stack", "st")


def test_down_backup_of_a_master_it_cannot_reach_refuses_and_names_no_backup(inv):
    # An ACTIVE master, but no cluster key on this machine: it cannot be logged in to.
    cloud = cluster(inv)
    with pytest.raises(RemoteError) as err:
        workflows.down(inv, cloud=cloud, settings=FAST, backup=DownBackup(inv, cloud))
    assert err.value.exit_code == 4
    assert "nothing was deleted" in err.value.message
    assert "--no-backup" in (err.value.hint or "")
    assert changes(cloud) == []


def test_down_backup_of_a_stopped_master_refuses(inv):
    cloud = cluster(inv, master="SHUTOFF")
    with pytest.raises(RemoteError, match="is SHUTOFF") as err:
        workflows.down(inv, cloud=cloud, settings=FAST, backup=DownBackup(inv, cloud))
    assert "--no-backup" in (err.value.hint or "") and changes(cloud) == []


def test_down_without_a_master_or_with_a_master_never_built_has_nothing_to_back_up(inv):
    for cloud, said in [
        (cluster(inv, master=None), "no master server"),
        (cluster(inv, master="BUILD"), "never finished building"),
    ]:
        res = workflows.down(inv, cloud=cloud, settings=FAST, backup=DownBackup(inv, cloud))
        assert any(said in n for n in res.notes) and cloud.list_nodes() == []


def test_a_dry_run_down_says_a_backup_would_be_made_and_where(inv, tmp_path):
    cloud = cluster(inv)
    res = workflows.down(inv, cloud=cloud, dry_run=True, backup=DownBackup(inv, cloud))
    note = next(n for n in res.notes if "would be saved" in n)
    assert str(tmp_path / "data" / "sparkstack" / inv.cluster.name / "backups") in note
    assert "10 MiB" in note and "--no-backup" in note
    assert changes(cloud) == []


# --- Restore with the real tar and runuser, into a home owned by `nobody` ---------------


def test_a_restore_extracts_as_the_user_keeps_newer_files_and_makes_the_home_private(tmp_path):
    h = tmp_path / "homes" / "nobody"
    h.mkdir(parents=True)
    (h / "notes.txt").write_text("newer on the node")
    (h / "old.txt").write_text("stale")
    os.utime(h / "old.txt", (1_000_000_000, 1_000_000_000))
    for p in (h, h / "notes.txt", h / "old.txt"):
        os.chown(p, 65534, 65534)
    h.chmod(0o755)
    made = NOW.timestamp() - 3600

    def reg(name: str, body: bytes) -> tuple[tarfile.TarInfo, bytes]:
        info, _ = member(name, content=body)
        info.mode, info.mtime = 0o600, made
        return info, body

    path = archive(
        tmp_path / "a.tar.gz",
        [
            member("homes/nobody/work", tarfile.DIRTYPE),
            reg("homes/nobody/work/a.ipynb", b"{}"),
            reg("homes/nobody/notes.txt", b"from the archive"),
            reg("homes/nobody/old.txt", b"from the archive"),
            reg("homes/carol/c.ipynb", b"{}"),
        ],
        manifest={"format": B.FORMAT, "version": B.VERSION, "users": {"nobody": {}, "carol": {}}},
    )
    shell = LocalShell(tmp_path, {"nobody": h})
    done = restore(shell, path, users=["nobody"])
    assert done.not_in_inventory == ["carol"] and done.kept == {"nobody": ["notes.txt"]}
    assert (h / "notes.txt").read_text() == "newer on the node"
    assert (h / "old.txt").read_text() == "from the archive"
    nb = (h / "work" / "a.ipynb").stat()
    assert (nb.st_uid, stat.S_IMODE(nb.st_mode)) == (65534, 0o600)
    assert (h / "work").stat().st_uid == 65534
    assert stat.S_IMODE(h.stat().st_mode) == 0o700
    assert any("carol" in line for line in done.lines())
