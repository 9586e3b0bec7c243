"""The lock files of the node image (image/), as shipped inside the package.

A master on a stock image installs its venv from requirements.txt (exact versions, sha256
of every wheel) and configurable-http-proxy from the npm lock (integrity of every
tarball); both travel in the user_data `up` sends (compressed), or over SSH with
`sparkstack hub`, so this sparkstack's pins reach the node whatever image it boots.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files

# "# CPython 3.11, 3.12, 3.13 on x86_64 Linux ..." in the header image/lock-requirements writes.
_PYTHONS_RE = re.compile(r"^# CPython ((?:3\.\d+(?:, )?)+) on", re.MULTILINE)


def _read(*parts: str) -> bytes:
    return files("provisioner.image").joinpath(*parts).read_bytes()


@dataclass(frozen=True)
class LockFile:
    """One lock file as a node gets it: its path there and its bytes."""

    path: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class NpmCli:
    """The npm CLI tarball that runs `npm ci` on nodes whose distribution has no npm."""

    path: str  # below the registry URL
    integrity: str  # "sha512-<base64>"


@dataclass(frozen=True)
class Locks:
    requirements: LockFile
    npm_package: LockFile
    npm_lock: LockFile
    npm_cli: NpmCli
    # CPython versions the requirements lock holds wheels for, e.g. ("3.11", "3.12").
    pythons: tuple[str, ...]


LOCK_DIR = "/etc/sparkstack/locks"


@functools.lru_cache(maxsize=1)
def locks() -> Locks:
    requirements = _read("requirements.txt")
    match = _PYTHONS_RE.search(requirements.decode())
    if match is None:
        raise RuntimeError("image/requirements.txt has no '# CPython X.Y, ... on' header line")
    lock = _read("npm", "package-lock.json")
    cli = dict(
        line.split("=", 1)
        for line in _read("npm", "npm-cli.txt").decode().splitlines()
        if line and not line.startswith("#")
    )
    return Locks(
        requirements=LockFile(f"{LOCK_DIR}/requirements.txt", requirements),
        npm_package=LockFile(f"{LOCK_DIR}/npm/package.json", _read("npm", "package.json")),
        npm_lock=LockFile(f"{LOCK_DIR}/npm/package-lock.json", lock),
        npm_cli=NpmCli(path=cli["NPM_CLI_PATH"], integrity=cli["NPM_CLI_INTEGRITY"]),
        pythons=tuple(match.group(1).split(", ")),
    )
