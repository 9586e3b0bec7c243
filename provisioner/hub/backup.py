"""Hub users' homes kept across `down`, put back by `up --restore`: the pure part.

What is copied (the policy), what the archive holds (its manifest and member names), and
whether an archive handed to `up --restore` is one of ours and stays inside the homes. The
archive comes from a node its users could write to, so nothing in it is trusted: only
regular files and directories under ``homes/<user>/`` pass, and a restore extracts them as
that user (see provisioner/workflows/backup.py), never as root.

Layout of an archive (a gzip'd tar)::

    sparkstack-backup.json        the manifest, first
    homes/alice/work.ipynb        each user's files, relative to the home
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import posixpath
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

FORMAT = "sparkstack-backup"
VERSION = 1
MANIFEST = "sparkstack-backup.json"
HOMES = "homes"
MiB = 1024 * 1024
# A manifest is a few KiB per skipped file; anything far larger is not one of ours.
_MANIFEST_MAX = 64 * MiB

# Record kinds of the listing script: a user's home, a user without one, an entry.
_HOME, _NO_HOME, _ENTRY = "H", "M", "E"

# One NUL-separated record per home and per thing in it (find's %y type letter, size in
# bytes, path relative to the home). A home counts only when it is a directory its user
# owns (as the hub's homes step checks), so a system account's / is never archived.
LISTING_SCRIPT = (
    'for name in "$@"; do\n'
    '  home=$(getent passwd "$name" | cut -d: -f6)\n'
    '  if [ -z "$home" ] || [ "$home" = / ] || [ ! -d "$home" ] || [ -L "$home" ] ||'
    ' [ "$(stat -c %U -- "$home")" != "$name" ]; then printf "M\\0%s\\0" "$name"; continue; fi\n'
    '  printf "H\\0%s\\0%s\\0" "$name" "$home"\n'
    "  find \"$home\" -xdev -mindepth 1 -printf 'E\\0%y\\0%s\\0%P\\0'\n"
    "done"
)

# GNU tar on the master, as root: the selected paths (relative to /, NUL-separated, on
# stdin, read whole before tar writes anything, so a long list cannot stall against the
# archive in the connection's window), each without recursion (directories are listed
# themselves). A file that vanished or changed since the listing is a warning, not a
# failure; exit 1 means "some files differ", which a live home always may.
TAR_COMMAND = (
    'list=$(mktemp) || exit 2; trap \'rm -f -- "$list"\' EXIT; cat >"$list" || exit 2; '
    'tar --create --gzip --file=- --directory=/ --no-recursion --null --files-from="$list"'
    " --ignore-failed-read --warning=no-file-changed --warning=no-file-removed"
)
TAR_OK = (0, 1)


@dataclass(frozen=True)
class Policy:
    """What a backup copies: files up to `max_file` bytes each, `max_total` in all
    (smallest first, so one huge data set does not push out every notebook), nothing
    under a cache directory. Everything left out is listed, never silently dropped."""

    max_file: int = 10 * MiB
    max_total: int = 500 * MiB
    # A name anywhere in a path, or a path from the home's root when it has a slash.
    caches: tuple[str, ...] = (
        ".cache",
        ".ipynb_checkpoints",
        "__pycache__",
        ".local/share/jupyter/runtime",
        ".local/share/Trash",
    )

    def describe(self) -> str:
        return (
            f"files up to {size(self.max_file)} each and {size(self.max_total)} in all; "
            f"larger ones listed, not copied; caches ({', '.join(self.caches)}) skipped"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "max_file_bytes": self.max_file,
            "max_total_bytes": self.max_total,
            "caches": list(self.caches),
        }

    def cache_root(self, path: str) -> str | None:
        """The cache directory `path` is (or is under), or None."""
        parts = path.split("/")
        for cache in self.caches:
            if "/" in cache:
                if path == cache or path.startswith(cache + "/"):
                    return cache
            elif cache in parts:
                return "/".join(parts[: parts.index(cache) + 1])
        return None


@dataclass(frozen=True)
class Entry:
    """One thing in a user's home as the master listed it."""

    user: str
    path: str  # relative to the home
    kind: str  # find's %y: f file, d directory, l symlink, others
    size: int


@dataclass(frozen=True)
class Skipped:
    user: str
    path: str
    size: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "path": self.path, "bytes": self.size, "reason": self.reason}

    def describe(self) -> str:
        return f"{self.user}: {self.path} ({size(self.size)}): {self.reason}"


@dataclass
class Listing:
    """The master's answer: each user's home, users without one, what is in the homes."""

    homes: dict[str, str] = field(default_factory=dict)
    no_home: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


@dataclass
class Selection:
    copy: list[Entry]
    skipped: list[Skipped]

    @property
    def bytes(self) -> int:
        return sum(e.size for e in self.copy if e.kind == "f")


def parse_listing(text: str) -> Listing:
    """LISTING_SCRIPT's output. A record cut short (a name with a NUL cannot exist) ends it."""
    fields = text.split("\0")
    listing, user, i = Listing(), "", 0
    while i < len(fields):
        kind = fields[i]
        if kind == _HOME and i + 2 < len(fields):
            user, home = fields[i + 1], fields[i + 2]
            listing.homes[user] = home
            i += 3
        elif kind == _NO_HOME and i + 1 < len(fields):
            listing.no_home.append(fields[i + 1])
            i += 2
        elif kind == _ENTRY and i + 3 < len(fields) and user:
            letter, size, path = fields[i + 1 : i + 4]
            listing.entries.append(Entry(user, path, letter, int(size) if size.isdigit() else 0))
            i += 4
        else:
            i += 1
    return listing


def select(entries: Iterable[Entry], policy: Policy) -> Selection:
    """What to copy and what to list instead, with the reason for each."""
    copy: list[Entry] = []
    skipped: list[Skipped] = []
    caches: dict[tuple[str, str], int] = {}
    files: list[Entry] = []
    for e in entries:
        root = policy.cache_root(e.path)
        if root is not None:
            key = (e.user, root)
            caches[key] = caches.get(key, 0) + (e.size if e.kind == "f" else 0)
        elif e.kind == "d":
            copy.append(e)
        elif e.kind == "f":
            if e.size > policy.max_file:
                skipped.append(Skipped(e.user, e.path, e.size,
                                       f"larger than {size(policy.max_file)}"))  # fmt: skip
            else:
                files.append(e)
        elif e.kind == "l":
            skipped.append(Skipped(e.user, e.path, 0, "symbolic link"))
        else:
            skipped.append(Skipped(e.user, e.path, 0, "not a regular file"))
    total = 0
    for e in sorted(files, key=lambda e: (e.size, e.user, e.path)):
        if total + e.size > policy.max_total:
            skipped.append(Skipped(e.user, e.path, e.size,
                                   f"past the {size(policy.max_total)} total"))  # fmt: skip
            continue
        total += e.size
        copy.append(e)
    skipped += [Skipped(u, p, n, "cache") for (u, p), n in sorted(caches.items())]
    return Selection(copy=copy, skipped=skipped)


def tar_paths(selection: Selection, homes: Mapping[str, str]) -> bytes:
    """TAR_COMMAND's stdin: each selected path from /, NUL-terminated."""
    paths = [posixpath.join(homes[e.user], e.path).lstrip("/") for e in selection.copy]
    return b"".join(p.encode() + b"\0" for p in paths)


def archive_name(now: datetime) -> str:
    """A UTC timestamp: archives sort by age and never collide within a second."""
    return now.strftime("%Y%m%dT%H%M%SZ") + ".tar.gz"


def backups_dir(cluster: str, env: Mapping[str, str] | None = None) -> Path:
    """~/.local/share/sparkstack/<cluster>/backups (XDG_DATA_HOME): user data, not config,
    so it outlives the cluster's config directory, which `down` deletes."""
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local"
                                           / "share")  # fmt: skip
    return Path(base) / "sparkstack" / cluster / "backups"


def manifest(*, cluster: str, created: datetime, policy: Policy, listing: Listing,
             selection: Selection, missing: Iterable[Entry] = ()) -> dict[str, Any]:  # fmt: skip
    """What the archive holds and what it left out. `missing`: selected but absent from
    the master's tar (gone, or no longer a plain file, by the time tar got there)."""
    gone = set(missing)
    users: dict[str, dict[str, Any]] = {}
    for user, home in listing.homes.items():
        mine = [e for e in selection.copy if e.user == user and e.kind == "f" and e not in gone]
        users[user] = {"home": home, "files": len(mine), "bytes": sum(e.size for e in mine)}
    skipped = [
        *selection.skipped,
        *(Skipped(e.user, e.path, e.size, "changed during the backup") for e in gone),
    ]
    return {
        "format": FORMAT,
        "version": VERSION,
        "cluster": cluster,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "policy": policy.to_json(),
        "users": users,
        "no_home": sorted(listing.no_home),
        "skipped": [s.to_json() for s in skipped],
    }


def _clean(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    """A member with nothing of the node's: no owner (restore gives each user's), no
    special bits; a directory its user can always write into."""
    out = tarfile.TarInfo(name)
    out.type = info.type
    out.size = info.size if info.isfile() else 0
    out.mtime = info.mtime
    out.mode = (info.mode & 0o777) | (0o700 if info.isdir() else 0)
    return out


def assemble(raw: IO[bytes], out: IO[bytes], *, homes: Mapping[str, str],
             build_manifest: Any) -> dict[str, Any]:  # fmt: skip
    """The archive `out` from the master's tar `raw` (members named from /): the manifest
    first, then each regular file and directory as ``homes/<user>/<path>``; anything else
    the node put in its tar is dropped. `build_manifest(present)` gets the set of
    (user, path) found and returns the manifest, which is also returned."""
    prefixes = sorted(((h.strip("/") + "/", u) for u, h in homes.items()), reverse=True)

    def owner(name: str) -> tuple[str, str] | None:
        for prefix, user in prefixes:  # longest first: /home/al before /home/a
            if name.startswith(prefix) and len(name) > len(prefix):
                return user, name[len(prefix) :].rstrip("/")
        return None

    kept: list[tuple[tarfile.TarInfo, str, str]] = []
    with tarfile.open(fileobj=raw, mode="r:gz") as src:
        for info in src:
            found = owner(info.name)
            if found is not None and (info.isfile() or info.isdir()) and safe_relpath(found[1]):
                kept.append((info, *found))
        present = {(u, p) for _, u, p in kept}
        data = json.dumps(build_manifest(present), indent=1, sort_keys=True).encode()
        with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as dst:
            head = tarfile.TarInfo(MANIFEST)
            head.size, head.mode = len(data), 0o600
            head.mtime = int(datetime.now().timestamp())
            dst.addfile(head, io.BytesIO(data))
            for info, user, path in kept:
                member = _clean(info, f"{HOMES}/{user}/{path}")
                dst.addfile(member, src.extractfile(info) if info.isfile() else None)
    result: dict[str, Any] = json.loads(data)
    return result


# --- Restore: is the archive ours, and does every member stay in its home? -------------


class NotOurs(ValueError):
    """The archive is not a sparkstack backup, or a member would leave its home."""


def safe_relpath(path: str) -> bool:
    """A path that stays below the directory it is extracted in: relative, no `..`, no
    `.` or empty parts, no NUL or backslash games."""
    if not path or path.startswith("/") or "\0" in path or "\\" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


@dataclass
class Backup:
    """A checked archive: its manifest and each user's files as a tar of their own."""

    manifest: dict[str, Any]
    tars: dict[str, bytes]
    counts: dict[str, int]

    @property
    def users(self) -> list[str]:
        return sorted(self.manifest["users"])


def _check_manifest(src: tarfile.TarFile, first: tarfile.TarInfo | None,
                    where: Path) -> dict[str, Any]:  # fmt: skip
    if first is None or first.name != MANIFEST or not first.isfile():
        raise NotOurs(f"{where} is not a sparkstack backup: it does not start with {MANIFEST}")
    if first.size > _MANIFEST_MAX:
        raise NotOurs(f"{where}: its {MANIFEST} is too large to be a manifest")
    raw = src.extractfile(first)
    try:
        data = json.loads(raw.read() if raw else b"")
    except ValueError as e:
        raise NotOurs(f"{where}: its {MANIFEST} is not JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise NotOurs(f"{where} is not a sparkstack backup (no format {FORMAT!r} in {MANIFEST})")
    if data.get("version") != VERSION:
        raise NotOurs(f"{where} is a sparkstack backup of version {data.get('version')!r}; "
                      f"this sparkstack reads version {VERSION}")  # fmt: skip
    users = data.get("users")
    if not isinstance(users, dict) or not all(safe_relpath(u) and "/" not in u for u in users):
        raise NotOurs(f"{where}: its manifest names no valid users")
    return data


def _member(info: tarfile.TarInfo, manifest: dict[str, Any], path: Path) -> tuple[str, str]:
    """(user, path in the home) of a member that may be extracted, or NotOurs."""
    parts = info.name.split("/", 2)
    if not (info.isfile() or info.isdir()):
        raise NotOurs(f"{path}: member {info.name!r} is not a regular file or a directory "
                      "(links are never part of a backup)")  # fmt: skip
    if len(parts) < 3 or parts[0] != HOMES or parts[1] not in manifest["users"]:
        raise NotOurs(f"{path}: member {info.name!r} is not under {HOMES}/<user>/ of a user "
                      "its manifest names")  # fmt: skip
    rel = parts[2].rstrip("/") if info.isdir() else parts[2]
    if not safe_relpath(rel):
        raise NotOurs(f"{path}: member {info.name!r} would leave its home")
    return parts[1], rel


def read_backup(path: Path) -> Backup:
    """The archive checked member by member, or NotOurs naming the first that fails:
    nothing but regular files and directories, each under ``homes/<a user the manifest
    names>/`` with a path that stays there. Every member is checked before any is used."""
    tars: dict[str, io.BytesIO] = {}
    writers: dict[str, tarfile.TarFile] = {}
    counts: dict[str, int] = {}
    try:
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(tarfile.open(path, mode="r:gz"))
            data = _check_manifest(src, src.next(), path)
            # next(), not iteration: iterating starts again from the manifest.
            while (info := src.next()) is not None:
                user, rel = _member(info, data, path)
                if user not in writers:
                    tars[user] = io.BytesIO()
                    writers[user] = stack.enter_context(
                        tarfile.open(fileobj=tars[user], mode="w", format=tarfile.PAX_FORMAT)
                    )
                    counts[user] = 0
                fileobj = src.extractfile(info) if info.isfile() else None
                writers[user].addfile(_clean(info, rel), fileobj)
                counts[user] += info.isfile()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise NotOurs(f"{path} is not a readable gzip'd tar: {e}") from e
    return Backup(manifest=data, tars={u: b.getvalue() for u, b in tars.items()}, counts=counts)


def size(n: int) -> str:
    """Bytes as a person reads them (10 MiB, 3.2 KiB)."""
    for unit, name in ((MiB, "MiB"), (1024, "KiB")):
        if n >= unit:
            return f"{n // unit} {name}" if n % unit == 0 else f"{n / unit:.1f} {name}"
    return f"{n} B"
