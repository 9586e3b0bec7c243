"""A static npm registry for nodes booted from a stock image: exactly what the lock names.

A stock-image node installs the npm CLI (image/npm/npm-cli.txt) and runs `npm ci` on
image/npm/package-lock.json against a registry URL; the bed's nodes have no route out, so
this module lays out, below mirror.mirror_root()/npm, every tarball the lock names at the
path it has below a real registry (`<name>/-/<basename>-<version>.tgz`), each checked
against the lock's integrity hash after download. The lock carries no `resolved` URLs, so
npm must ask the registry where each tarball is: a minimal packument per package (only the
locked versions) is written too, as `<name>/packument.json` holding a `{registry}`
placeholder that the bed's server (serve.py) fills in with the URL it was reached by, so
the same tree answers over HTTP and HTTPS.

Downloads come from the registry this machine's npm uses (`npm config get registry`) and
are cached under a name carrying a hash of the lock files.

    python -m tests.testbed.hosts.npm_mirror     # build or reuse; prints the cache path
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .rootfs import remove_older_caches

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
NPM_DIR = REPO / "image" / "npm"
CACHE_DIR = Path("/var/cache/sparkstack-testbed")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PACKUMENT = "packument.json"
REGISTRY_PLACEHOLDER = "{registry}"
_LAYOUT = "1"


def lock_key(npm_dir: Path = NPM_DIR) -> str:
    digest = hashlib.sha256(_LAYOUT.encode())
    for name in ("package.json", "package-lock.json", "npm-cli.txt"):
        digest.update(name.encode() + b"\0" + (npm_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / f"npm-{lock_key()}"


def cli_pin(npm_dir: Path = NPM_DIR) -> tuple[str, str]:
    """(NPM_CLI_PATH, NPM_CLI_INTEGRITY) from npm-cli.txt."""
    values = {}
    for line in (npm_dir / "npm-cli.txt").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip()
    return values["NPM_CLI_PATH"], values["NPM_CLI_INTEGRITY"]


def locked_tarballs(npm_dir: Path = NPM_DIR) -> list[tuple[str, str, str]]:
    """(name, version, integrity) of every package in package-lock.json."""
    lock = json.loads((npm_dir / "package-lock.json").read_text())
    out = []
    for key, entry in lock["packages"].items():
        if not key or entry.get("link"):
            continue
        name = entry.get("name") or key.rsplit("node_modules/", 1)[-1]
        out.append((name, entry["version"], entry["integrity"]))
    return sorted(set(out))


def tarball_path(name: str, version: str) -> str:
    """Where a registry keeps a tarball, relative to its root (scoped names keep the
    scope in the directory, not in the file name)."""
    return f"{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


def check_integrity(data: bytes, integrity: str) -> bool:
    """True if any of the SRI hashes (`sha512-<base64>`, space separated) matches."""
    for sri in integrity.split():
        algo, _, expected = sri.partition("-")
        if algo in ("sha512", "sha384", "sha256", "sha1"):
            actual = base64.b64encode(hashlib.new(algo, data).digest()).decode()
            if actual == expected:
                return True
    return False


def _registry() -> str:
    """This machine's npm registry; read, never written down in the repository."""
    out = subprocess.run(["npm", "config", "get", "registry"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return out.rstrip("/") + "/"


def _fetch(url: str) -> bytes:
    ctx = ssl.create_default_context(cafile=CA_BUNDLE if os.path.exists(CA_BUNDLE) else None)
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=60, context=ctx) as resp:
                return resp.read()
        except OSError:
            if attempt == 2:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


def _packument(name: str, versions: list[tuple[str, str, str]]) -> dict:
    """Just enough for npm to resolve `name@version` from a lock: each version's dist
    (tarball URL and integrity); the dependency tree itself comes from the lock."""
    return {
        "name": name,
        "dist-tags": {"latest": versions[-1][0]},
        "versions": {
            version: {"name": name, "version": version,
                      "dist": {"tarball": f"{REGISTRY_PLACEHOLDER}/{path}",
                               "integrity": integrity}}
            for version, path, integrity in versions
        },
    }


def build(*, cache_dir: Path = CACHE_DIR, npm_dir: Path = NPM_DIR) -> Path:
    """Download (or reuse) every locked tarball and the npm CLI; return the cache dir,
    whose npm/ is the registry root."""
    target = cache_dir / f"npm-{lock_key(npm_dir)}"
    if (target / "npm" / ".complete").exists():
        log.info("npm mirror cached: %s", target)
        return target
    start = time.monotonic()
    work = target.with_name(target.name + ".partial")
    root = work / "npm"
    root.mkdir(parents=True, exist_ok=True)
    registry = _registry()
    cli_path, cli_integrity = cli_pin(npm_dir)
    wanted = [(cli_path, cli_integrity)]
    by_name: dict[str, list[tuple[str, str, str]]] = {}
    for name, version, integrity in locked_tarballs(npm_dir):
        path = tarball_path(name, version)
        wanted.append((path, integrity))
        by_name.setdefault(name, []).append((version, path, integrity))
    # The CLI has a packument too: `npm install npm@<version>` then works against the bed.
    cli_name = cli_path.split("/-/", 1)[0]
    cli_version = cli_path.rsplit("-", 1)[-1].removesuffix(".tgz")
    by_name.setdefault(cli_name, []).append((cli_version, cli_path, cli_integrity))
    for rel, integrity in wanted:
        dest = root / rel
        if dest.exists() and check_integrity(dest.read_bytes(), integrity):
            continue  # a resumed build keeps what it had
        data = _fetch(registry + rel)  # HTTPError names the URL
        if not check_integrity(data, integrity):
            raise RuntimeError(f"{rel} from the registry does not match the lock's {integrity}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    for name, versions in by_name.items():
        (root / name / PACKUMENT).write_text(json.dumps(_packument(name, versions), indent=1))
    (root / ".complete").write_text(f"{len(wanted)} tarballs\n")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    remove_older_caches(cache_dir, "npm", target, "npm mirror")
    log.info("npm mirror built in %.0f s: %d tarballs, %s", time.monotonic() - start,
             len(wanted), target)
    return target


def publish(cache: Path, served_root: Path) -> None:
    """Point served_root/npm at the cache (a relative symlink the bed's server follows)."""
    served_root.mkdir(parents=True, exist_ok=True)
    tmp = served_root / ".npm.new"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(cache / "npm", served_root))
    os.replace(tmp, served_root / "npm")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.stdout.write(f"{build()}\n")


if __name__ == "__main__":
    main()
