"""Hub users' homes saved by `down` before any server goes, put back by `up --restore`.

The backup is one archive on this machine (see provisioner/hub/backup.py for what goes in
it): GNU tar runs on the master as root, through the same sudo the hub steps use, and its
output comes over the SSH connection straight into a temporary file beside the archive,
renamed only once complete. Ctrl-C or a failure leaves no partial archive, and `down`
deletes nothing then.

A restore never runs tar as root on what the archive holds: each user's files, checked on
this machine first, are extracted by tar running as that user in that user's home, so a
link the user left there cannot lead the extraction anywhere the user could not write.

paramiko is imported only when a master is reached (ssh_stage), as for `status`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from provisioner import plan as P
from provisioner.errors import RemoteError, SparkstackError, UserInputError
from provisioner.hub import backup as B
from provisioner.hub.accounts import recorded_users, sso_members
from provisioner.hub.config import HubPaths
from provisioner.hub.shell import MASTER, Shell, Sudo, q
from provisioner.inventory.names import SSO_GROUP
from provisioner.workflows.context import Reporter

log = logging.getLogger(__name__)

NO_BACKUP_HINT = "pass --no-backup to delete the cluster without saving the hub users' homes"

# As root in the user's home: tar as the user, the newer file of the two kept (an existing
# one newer than, or as old as, the archive's copy stays: it is the user's later work),
# then the home made private again.
RESTORE_SCRIPT = (
    'set -u\nname=$1\nhome=$(getent passwd "$name" | cut -d: -f6)\n'
    'if [ -z "$home" ] || [ "$home" = / ] || [ ! -d "$home" ] || [ -L "$home" ] ||'
    ' [ "$(stat -c %U -- "$home")" != "$name" ]; then'
    ' echo "no home of its own for $name" >&2; exit 3; fi\n'
    'cd -- "$home" || exit 3\n'
    'runuser -u "$name" -- tar --extract --file=- --keep-newer-files --no-same-owner'
    " --same-permissions\n"
    "status=$?\n"
    'chmod 0700 -- "$home"\n'
    "exit $status"
)
_KEPT = "is newer or same age"


class Streams(Shell, Protocol):
    """A root shell that can also send a command's stdout somewhere as it comes."""

    def stream(
        self,
        command: str,
        sink: Callable[[bytes], object],
        *,
        input: bytes = b"",
        timeout: float | None = None,
    ) -> tuple[int, str]: ...


class SudoStream(Sudo):
    """remote.Session as a root :class:`Streams`: the hub's Sudo, plus streaming."""

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self._streaming = session

    def stream(
        self,
        command: str,
        sink: Callable[[bytes], object],
        *,
        input: bytes = b"",
        timeout: float | None = None,
    ) -> tuple[int, str]:
        status, err = self._streaming.stream(
            command, sink, input=input, sudo=True, timeout=timeout or 3600.0
        )
        return int(status), str(err)


@dataclass
class Saved:
    """What a backup made: the archive (None: no home to save) and what it left out."""

    path: Path | None
    manifest: dict[str, Any] = field(default_factory=dict)
    policy: B.Policy = field(default_factory=B.Policy)

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("skipped", []))

    def lines(self) -> list[str]:
        if self.path is None:
            no_home = self.manifest.get("no_home") or []
            who = f" ({', '.join(no_home)} have none)" if no_home else ""
            return [f"no hub user has a home on the master{who}: nothing to back up"]
        users = self.manifest.get("users", {})
        files = sum(u["files"] for u in users.values())
        total = sum(u["bytes"] for u in users.values())
        out = [f"hub users' homes ({', '.join(sorted(users))}: {files} file(s), "
               f"{B.size(total)}) saved to {self.path}"]  # fmt: skip
        listed = [s for s in self.skipped if s["reason"] != "cache"]
        if listed:
            out.append(f"not copied ({self.policy.describe()}), listed in its manifest:")
            out += [f"  {s['user']}: {s['path']} ({B.size(s['bytes'])}): {s['reason']}"
                    for s in listed]  # fmt: skip
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "archive": str(self.path) if self.path else None,
            "users": self.manifest.get("users", {}),
            "skipped": self.skipped,
        }


def hub_users(shell: Shell, wanted: Sequence[str]) -> list[str]:
    """The inventory's users, every former one the master's record still names (their
    homes stay on the node; see ensure_users), and every account single sign-on made."""
    former = recorded_users(shell, HubPaths().users_record)
    return list(dict.fromkeys([*wanted, *sorted(former), *sorted(sso_members(shell))]))


def take_backup(shell: Streams, *, cluster: str, users: Sequence[str], dest: Path,
                policy: B.Policy | None = None, now: datetime | None = None) -> Saved:  # fmt: skip
    """Every home of `users` on the master into dest/<UTC time>.tar.gz (dir 0700, file
    0600), or nothing when none of them has a home."""
    policy = policy or B.Policy()
    now = now or datetime.now(UTC)
    _, out, _ = shell.run(f"sh -c {q(B.LISTING_SCRIPT)} list " + " ".join(q(u) for u in users),
                          timeout=600)  # fmt: skip
    listing = B.parse_listing(out)
    selection = B.select(listing.entries, policy)
    if not listing.homes:
        return Saved(None, {"no_home": listing.no_home}, policy)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest.chmod(0o700)
    final = dest / B.archive_name(now)
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(_private_temp(dest, ".remote"))
        status, err = shell.stream(B.TAR_COMMAND, raw.write,
                                   input=B.tar_paths(selection, listing.homes))  # fmt: skip
        if status not in B.TAR_OK:
            raise RemoteError(f"tar of the hub users' homes failed on the master (exit {status})",
                              resource=MASTER, step="backup",
                              log_tail=err.strip()[-2000:] or None)  # fmt: skip
        raw.flush()
        raw.seek(0)
        part = stack.enter_context(_private_temp(dest, ".part"))
        wanted = {(e.user, e.path): e for e in selection.copy}

        def build(present: set[tuple[str, str]]) -> dict[str, Any]:
            missing = [e for k, e in wanted.items() if k not in present]
            return B.manifest(cluster=cluster, created=now, policy=policy, listing=listing,
                              selection=selection, missing=missing)  # fmt: skip

        data = B.assemble(raw, part, homes=listing.homes, build_manifest=build)
        part.flush()
        os.fsync(part.fileno())
        os.replace(part.name, final)
    log.info("backup: %s", final)
    return Saved(final, data, policy)


@contextlib.contextmanager
def _private_temp(directory: Path, suffix: str) -> Any:
    """A 0600 file beside the archive, removed on the way out unless renamed."""
    # delete=False: the finished one is renamed, and a rename must not be undone.
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed below, in finally)
        dir=directory, prefix=".backup-", suffix=suffix, delete=False
    )
    try:
        os.chmod(handle.name, 0o600)
        yield handle
    finally:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.name)


class DownBackup:
    """The hook `down` runs before it deletes anything: the master reached over SSH (as
    `status` does) and its hub users' homes saved, or an error that stops `down`."""

    def __init__(self, inv: Any, cloud: Any, reporter: Reporter | None = None, *,
                 dest: Path | None = None, policy: B.Policy | None = None) -> None:  # fmt: skip
        self.inv, self.cloud = inv, cloud
        self.reporter = reporter or Reporter()
        self.dest = dest or B.backups_dir(inv.cluster.name)
        self.policy = policy or B.Policy()
        self.saved: Saved | None = None

    def preview(self, observed: P.Observed) -> str:
        if observed.master() is None:
            return "no master server: no home to back up"
        return (f"the hub users' homes would be saved first under {self.dest} "
                f"({self.policy.describe()}); --no-backup skips it")  # fmt: skip

    def __call__(self, observed: P.Observed) -> list[str]:
        master = observed.master()
        if master is None:
            return ["no master server: no home to back up"]
        if master.status == "BUILD":
            return [f"master {master.name} never finished building: no home to back up"]
        if master.status != "ACTIVE":
            raise RemoteError(
                f"master {master.name} is {master.status}: the hub users' homes on it cannot "
                "be saved, so nothing was deleted", resource=master.name, step="backup",
                hint=f"start it and run `sparkstack down` again, or {NO_BACKUP_HINT}",
            )  # fmt: skip
        self.reporter.step(f"saving the hub users' homes from {master.name}")
        nodes = self._reach(observed, master.name)
        try:
            shell = SudoStream(nodes.master)
            users = hub_users(shell, list(self.inv.jupyterhub.users))
            self.saved = take_backup(shell, cluster=self.inv.cluster.name, users=users,
                                     dest=self.dest, policy=self.policy)  # fmt: skip
        except OSError as exc:  # this machine's side: a full disk, a directory not ours
            raise UserInputError(
                f"cannot write the backup under {self.dest}, nothing was deleted: {exc}",
                step="backup",
                hint=f"free space or fix the directory and run `sparkstack down` again, or "
                f"{NO_BACKUP_HINT}",
            ) from exc
        except SparkstackError as exc:
            exc.message = (
                f"backup of the hub users' homes failed, nothing was deleted: {exc.message}"
            )
            exc.hint = f"{exc.hint}; " if exc.hint else ""
            exc.hint += f"run `sparkstack down` again, or {NO_BACKUP_HINT}"
            raise
        finally:
            nodes.close()
        lines = self.saved.lines()
        for line in lines[:1]:
            self.reporter.step(line)
        return lines

    def _reach(self, observed: P.Observed, name: str) -> Any:
        from provisioner.workflows.ssh_stage import Access, bring_up

        try:
            access = Access.from_inventory(self.inv)
            return bring_up(observed, cloud=self.cloud, access=access, reporter=self.reporter,
                            timeout=60, workers=[])  # fmt: skip
        except SparkstackError as exc:
            raise RemoteError(
                f"cannot reach master {name} to save the hub users' homes, so nothing was "
                f"deleted: {exc.message}", resource=name, step="backup",
                hint=f"check it with `sparkstack status`; {NO_BACKUP_HINT}",
            ) from exc  # fmt: skip


# --- Restore ---------------------------------------------------------------------------


@dataclass
class Restored:
    archive: Path
    users: dict[str, int] = field(default_factory=dict)  # files in the archive, per user
    # files the node had as new or newer than the archive's copy, kept as they were
    kept: dict[str, list[str]] = field(default_factory=dict)
    not_in_inventory: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for user, n in self.users.items():
            kept = len(self.kept.get(user, []))
            extra = f"; {kept} kept as the node had them (as new or newer)" if kept else ""
            out.append(f"restored {user}'s home from {self.archive.name}: {n} file(s){extra}")
        if self.not_in_inventory:
            out.append(f"not restored (no longer hub users): {', '.join(self.not_in_inventory)}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"archive": str(self.archive), "users": self.users, "kept_newer": self.kept,
                "skipped_users": self.not_in_inventory}  # fmt: skip


def check_archive(path: Path) -> B.Backup:
    """The archive, checked before anything is created: a user error when it is not one
    of ours or a member would leave its home."""
    try:
        return B.read_backup(path)
    except B.NotOurs as e:
        raise UserInputError(str(e), step="restore",
                             hint="`up --restore` takes an archive `sparkstack down` made; it "
                             "refuses links, absolute paths and paths with ..") from e  # fmt: skip


def restore(shell: Shell, archive: Path | B.Backup, *, users: Sequence[str],
            path: Path | None = None) -> Restored:  # fmt: skip
    """Each of `users` the archive has, put back into their home (files theirs, home
    0700); the archive's other users are named, not restored. Rule for a file that exists
    on both sides: the newer one stays (same age: the node's)."""
    backup = archive if isinstance(archive, B.Backup) else check_archive(archive)
    where = path or (archive if isinstance(archive, Path) else Path("archive"))
    done = Restored(where, not_in_inventory=[u for u in backup.users if u not in users])
    for user in backup.users:
        if user not in users or user not in backup.tars:
            continue
        status, _, err = shell.run(f"sh -c {q(RESTORE_SCRIPT)} restore {q(user)}",
                                   input=backup.tars[user], check=False, timeout=1800)  # fmt: skip
        kept = [_kept_name(line) for line in err.splitlines() if _KEPT in line]
        other = [line for line in err.splitlines() if _KEPT not in line and line.strip()]
        if status != 0:
            raise RemoteError(f"restoring {user}'s home failed on the master (exit {status})",
                              resource=MASTER, step="restore",
                              log_tail="\n".join(other[-20:]) or None)  # fmt: skip
        done.users[user] = backup.counts.get(user, 0)
        if kept:
            done.kept[user] = kept
    return done


def _kept_name(line: str) -> str:
    """The path in tar's "Current 'PATH' is newer or same age" (quotes vary by locale)."""
    start = line.find("Current ") + len("Current ")
    return line[start + 1 : line.rfind(" " + _KEPT) - 1]


# The archive's users for whom single sign-on made an account: made again (the add-user
# script refuses a name that is an account or a group already), then kept only if the
# account is one the SSO group holds. Prints those names. $1: the script; then the names.
_SSO_ACCOUNTS = f"""\
add=$1; shift
for name in "$@"; do
  getent passwd "$name" >/dev/null || "$add" "$name" >/dev/null 2>&1 || continue
  if id -nG "$name" | tr ' ' '\\n' | grep -qx {SSO_GROUP}; then echo "$name"; fi
done
"""


def sso_accounts(shell: Shell, names: Sequence[str]) -> list[str]:
    """Of `names` (an archive's users that are not the inventory's), those whose account
    single sign-on made, made again on a new master as their first login would: their
    homes are restored before they come back. Never an account sparkstack did not make."""
    if not names:
        return []
    _, out, _ = shell.run(f"sh -c {q(_SSO_ACCOUNTS)} sso {q(HubPaths().sso_add_user)} "
                          + " ".join(q(n) for n in names), timeout=120)  # fmt: skip
    return out.split()


def restore_hub_users(shell: Shell, backup: B.Backup, *, inv: Any, path: Path) -> Restored:
    """The archive's homes of the inventory's users, and with single sign-on of the people
    it made accounts for, put back on the master."""
    users = list(inv.jupyterhub.users)
    if inv.jupyterhub.authenticator == "oidc":
        users += sso_accounts(shell, [u for u in backup.users if u not in users])
    return restore(shell, backup, users=users, path=path)


def restore_on_master(inv: Any, *, cloud: Any, backup: B.Backup, path: Path,
                      reporter: Reporter) -> Restored:  # fmt: skip
    """`up --restore`, once the hub stage made the users: one more login to the master."""
    from provisioner.hub.shell import Sudo
    from provisioner.workflows.ssh_stage import Access, bring_up

    observed = cloud.observe()
    reporter.step(f"restoring hub users' homes from {path}")
    nodes = bring_up(observed, cloud=cloud, access=Access.from_inventory(inv),
                     reporter=reporter, workers=[])  # fmt: skip
    try:
        done = restore_hub_users(Sudo(nodes.master), backup, inv=inv, path=path)
    finally:
        nodes.close()
    for line in done.lines():
        reporter.step(line)
    return done
