"""A PyPI mirror for nodes booted from a stock image: exactly the wheels the lock names.

Nodes of the bed have no route out, so a stock-image node installs JupyterHub & co. from
this index, with `pip install --require-hashes -r requirements.txt` as anywhere else. It
holds the files whose sha256 image/requirements.txt lists that CPython 3.11, 3.12 and 3.13
on manylinux x86_64 need (Debian 12, Debian 13 and one step ahead), as a PEP 503 "simple"
index. A second, tampered copy substitutes the bytes of one wheel (same file name, its
link carrying the new hash), as a compromised mirror would: pip must refuse it.

Downloads are cached under a name carrying a hash of the lock, so an unchanged lock reuses
them; the served tree (mirror.mirror_root()/pypi, /pypi-tampered) links to that cache.

    python -m tests.testbed.hosts.pypi_mirror     # build or reuse; prints the cache path
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import zipfile
from pathlib import Path

from .rootfs import remove_older_caches

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
REQUIREMENTS = REPO / "image" / "requirements.txt"
CACHE_DIR = Path("/var/cache/sparkstack-testbed")
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
# Every glibc from manylinux2014 (2.17) to Debian 12's 2.36: what pip on the nodes accepts.
PLATFORMS = ("manylinux2014_x86_64",
             *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)))
# A small pure-Python wheel the master installs: the one the tampered index substitutes.
TAMPERED_PACKAGE = "jupyterhub-idle-culler"
# This machine's pip config (constraints, find-links, extra indexes) must not shape the
# download: --isolated ignores it; the CA bundle is kept for a TLS-inspecting proxy.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Bump when the layout written here changes, so caches of the old layout are rebuilt.
_LAYOUT = "2"


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_hashes(requirements: Path = REQUIREMENTS) -> dict[str, set[str]]:
    """Normalized project name -> the sha256 hashes the lock allows for it."""
    text = requirements.read_text().replace("\\\n", " ")
    hashes: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*==", line)
        if match:
            # One project may have several lines, one per environment marker.
            hashes.setdefault(normalize(match.group(1)), set()).update(
                re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return hashes


def lock_key(requirements: Path = REQUIREMENTS) -> str:
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"{_LAYOUT} {PYTHON_VERSIONS} {PLATFORMS}".encode())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / f"pypi-{lock_key()}"


def requirements_for(python_version: str, requirements: Path, out_dir: Path) -> Path:
    """The lock's lines for one Python version, markers decided and dropped.

    pip download --python-version picks wheels for that version but decides environment
    markers (`soupsieve==4.1.3 ; python_version == "3.12"`) by the Python running pip: a
    lock with per-version pins would silently give every version this machine's set."""
    from packaging.markers import Marker

    env = {"python_version": python_version, "python_full_version": f"{python_version}.0",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
           "platform_machine": "x86_64"}  # fmt: skip
    out = []
    for line in requirements.read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pin, _, rest = line.partition(" --hash=")
        rest = "--hash=" + rest if rest else ""
        spec, _, marker = pin.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate(env):
            continue
        out.append(f"{spec.strip()} {rest}".strip())
    path = out_dir / f"requirements-{python_version}.txt"
    path.write_text("\n".join(out) + "\n")
    return path


def pip_download_args(python_version: str, dest: Path, *, index_url: str | None = None,
                      requirements: Path = REQUIREMENTS) -> list[str]:
    """The pip command that fetches one Python version's wheels of the lock (no deps: the
    lock is complete), shared with the tests that check the served index. Writes that
    version's requirements (see requirements_for) beside ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    requirements = requirements_for(python_version, requirements, dest.parent)
    cmd = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check",
           "download", "--cert", CA_BUNDLE, "--only-binary=:all:", "--require-hashes",
           "--no-deps", "--python-version", python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    if index_url:
        cmd += ["--index-url", index_url]
        if index_url.startswith("http://"):
            # pip ignores a plain-HTTP index unless its host is trusted (nodes must too).
            cmd += ["--trusted-host", urllib.parse.urlsplit(index_url).hostname or ""]
    return [*cmd, "-d", str(dest), "-r", str(requirements)]


def pip_env() -> dict[str, str]:
    """This environment minus the CA-bundle variables that requests lets override pip's
    --cert (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE): with them, --cert <bed CA> is ignored."""
    return {k: v for k, v in os.environ.items()
            if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _project(filename: str) -> str:
    """The normalized project name of a wheel file name (name-version-...whl)."""
    return normalize(filename.split("-", 1)[0])


def _write_index(root: Path, files: dict[str, str]) -> None:
    """A PEP 503 index at root/simple for root/files: {file name: sha256}."""
    by_project: dict[str, list[str]] = {}
    for name in sorted(files):
        by_project.setdefault(_project(name), []).append(name)
    simple = root / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    links = "".join(f'<a href="{p}/">{p}</a>\n' for p in sorted(by_project))
    (simple / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    for project, names in by_project.items():
        (simple / project).mkdir(exist_ok=True)
        links = "".join(
            f'<a href="../../files/{html.escape(n)}#sha256={files[n]}">{html.escape(n)}</a>\n'
            for n in names)
        (simple / project / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")


def _tamper(wheel: Path, dest: Path) -> None:
    """Same file name, different bytes: a valid wheel with one module added."""
    shutil.copyfile(wheel, dest)
    with zipfile.ZipFile(dest, "a") as zf:
        zf.writestr("sparkstack_substituted.py", "# not what the lock pinned\n")


def build(*, cache_dir: Path = CACHE_DIR, requirements: Path = REQUIREMENTS) -> Path:
    """Download (or reuse) the lock's wheels and write both indexes; return the cache dir.

    Every file is checked against the lock: a file whose hash the lock does not list
    stops the build (pip --require-hashes already refuses those; this keeps it so)."""
    target = cache_dir / f"pypi-{lock_key(requirements)}"
    if (target / "pypi-tampered" / "simple" / "index.html").exists():
        log.info("pypi mirror cached: %s", target)
        return target
    start = time.monotonic()
    work = target.with_name(target.name + ".partial")
    files_dir = work / "pypi" / "files"
    files_dir.mkdir(parents=True, exist_ok=True)  # a partial download is resumed
    for version in PYTHON_VERSIONS:
        subprocess.run(pip_download_args(version, files_dir, requirements=requirements),
                       check=True, stdout=subprocess.DEVNULL, env=pip_env())
    allowed = lock_hashes(requirements)
    files: dict[str, str] = {}
    for path in sorted(files_dir.iterdir()):
        sha = _sha256(path)
        if sha not in allowed.get(_project(path.name), set()):
            raise RuntimeError(f"{path.name} hashes to {sha}, which the lock does not list")
        files[path.name] = sha
    _write_index(work / "pypi", files)
    tampered = [n for n in files if _project(n) == TAMPERED_PACKAGE]
    if len(tampered) != 1:
        raise RuntimeError(f"expected one {TAMPERED_PACKAGE} wheel, found {tampered}")
    bad_files = work / "pypi-tampered" / "files"
    shutil.rmtree(work / "pypi-tampered", ignore_errors=True)
    bad_files.mkdir(parents=True)
    bad = dict(files)
    for name in files:
        if name == tampered[0]:
            _tamper(files_dir / name, bad_files / name)
            bad[name] = _sha256(bad_files / name)
        else:
            os.link(files_dir / name, bad_files / name)  # same bytes, no second copy
    _write_index(work / "pypi-tampered", bad)
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    remove_older_caches(cache_dir, "pypi", target, "pypi mirror")
    log.info("pypi mirror built in %.0f s: %d files, %s", time.monotonic() - start,
             len(files), target)
    return target


def publish(cache: Path, served_root: Path) -> None:
    """Point served_root/pypi and /pypi-tampered at the cache (relative symlinks, which the
    bed's static server follows)."""
    served_root.mkdir(parents=True, exist_ok=True)
    for name in ("pypi", "pypi-tampered"):
        link = served_root / name
        tmp = served_root / f".{name}.new"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(cache / name, served_root))
        os.replace(tmp, link)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.stdout.write(f"{build()}\n")


if __name__ == "__main__":
    main()
