"""The bed's mirrors on the bridge address, for namespace hosts that cannot reach out.

One static root (mirror_root()) served by serve.py over HTTP on :8800 and HTTPS on :8443
(a certificate from the bed's CA, tls.py): the Spark tarball (built here), and, linked in
from their own caches, the PyPI index (pypi_mirror.py) and npm registry (npm_mirror.py)
that stock-image nodes install from. The apt proxy is aptcache.py. The *_url functions
below are what tests put into an inventory's mirror settings.

The Spark tarball:

Apache publishes spark-<v>/spark-<v>-bin-hadoop3.tgz with a .sha512 beside it. No such
tarball can be fetched here, but the `pyspark` source package on PyPI carries the same
jars, bin/ scripts, python/ libs and sbin/spark-daemon.sh; this module rearranges it
into Apache's layout, adds the sbin launchers it lacks (sbin/ beside this file), and
serves the result over HTTP on the bridge address, so the templates' real download and
checksum steps run unchanged.

Apache publishes no hash for a tarball built here, so the bed's inventory pins it
(spark.sha512): the build is reproducible (fixed times and owners, no gzip time stamp), and
a build whose hash differs from that pin stops with the line to change.

    python -m tests.testbed.hosts.mirror build [--version 4.3.0]
    python -m tests.testbed.hosts.mirror start | stop     # both listeners
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import logging
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import tomllib

from . import aptcache, tls
from .hosts import _pid_alive, _pid_start, default_state_dir

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path("/var/cache/sparkstack-testbed")
DEFAULT_VERSION = "4.3.0"
BIND = "10.77.0.1"
PORT = 8800
HTTPS_PORT = 8443
LAUNCHERS = HERE / "sbin"
BED_INVENTORY = HERE.parent / "inventory.testbed.toml"
# The time stamp of every file this builder adds: any fixed value keeps the tarball the same.
_MTIME = 1_700_000_000


def mirror_url(*, bind: str = BIND, port: int = PORT) -> str:
    """What an inventory's spark.mirror must be to use this mirror."""
    return f"http://{bind}:{port}"


def mirror_root(cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / "spark-mirror"


def _base(https: bool) -> str:
    return f"https://{BIND}:{HTTPS_PORT}" if https else mirror_url()


def pypi_url(*, tampered: bool = False, https: bool = False) -> str:
    """A pip --index-url holding exactly the lock's wheels; `tampered`: the copy in which
    one wheel (pypi_mirror.TAMPERED_PACKAGE) has other bytes, which pip must refuse."""
    return f"{_base(https)}/{'pypi-tampered' if tampered else 'pypi'}/simple/"


def npm_url(*, https: bool = False) -> str:
    """An npm --registry holding exactly package-lock.json's tarballs and the npm CLI."""
    return f"{_base(https)}/npm/"


def apt_proxy_url() -> str:
    """What a node's Acquire::http::Proxy must be: the bed's apt-cacher-ng."""
    return aptcache.proxy_url()


def ca_cert_path() -> Path:
    """The CA the HTTPS listener's certificate chains to (a node's mirrors.ca_bundle)."""
    return tls.ca_cert_path()


def tarball_path(version: str, cache_dir: Path = CACHE_DIR) -> Path:
    return mirror_root(cache_dir) / f"spark-{version}" / f"spark-{version}-bin-hadoop3.tgz"


def _builder_hash() -> str:
    """Changes when this builder or its launchers change, so a stale tarball is rebuilt."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(LAUNCHERS.glob("*.sh")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _download_sdist(version: str, dest: Path) -> Path:
    """The pyspark source package (~450 MB), kept in the cache: it never changes."""
    dest.mkdir(parents=True, exist_ok=True)
    cached = dest / f"pyspark-{version}.tar.gz"
    if cached.exists():
        return cached
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--dest", str(dest), f"pyspark=={version}"],
        check=True,
    )
    (sdist,) = dest.glob(f"pyspark-{version}.tar.gz")
    return sdist


def _layout(member: str, version: str) -> str | None:
    """Map a path of the pyspark sdist to its place in Apache's binary tarball."""
    prefix = f"pyspark-{version}/"
    if not member.startswith(prefix):
        return None
    rel = member[len(prefix):]
    for src, dst in (("deps/bin/", "bin/"), ("deps/sbin/", "sbin/"), ("deps/jars/", "jars/"),
                     ("deps/data/", "data/"), ("deps/examples/", "examples/src/main/python/"),
                     ("deps/licenses/", "licenses/"), ("lib/", "python/lib/"),
                     ("pyspark/", "python/pyspark/")):
        if rel.startswith(src):
            return dst + rel[len(src):]
    if rel in ("LICENSE", "NOTICE", "README.md"):
        return rel
    return None


def build_tarball(*, version: str = DEFAULT_VERSION, cache_dir: Path = CACHE_DIR) -> Path:
    """Build (or reuse) the tarball and its .sha512; return the tarball's path."""
    tgz = tarball_path(version, cache_dir)
    stamp = tgz.with_name(tgz.name + ".builder")
    sha = tgz.with_name(tgz.name + ".sha512")
    if tgz.exists() and sha.exists() and stamp.exists() and stamp.read_text() == _builder_hash():
        log.info("spark tarball cached: %s", tgz)
        check_pin(version, sha)
        return tgz
    start = time.monotonic()
    tgz.parent.mkdir(parents=True, exist_ok=True)
    top = f"spark-{version}-bin-hadoop3"
    sdist = _download_sdist(version, cache_dir / "sdist")
    partial = tgz.with_name(tgz.name + ".partial")
    # compresslevel 1: the tarball is built once per run and read over a local
    # bridge; fast compression saves most of the build time. mtime 0 and no file name in
    # the gzip header: the same input gives the same bytes.
    with tarfile.open(sdist) as src, partial.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as out:
        for member in src:
            name = _layout(member.name, version)
            if name is None:
                continue
            member.name = f"{top}/{name}"
            out.addfile(member, src.extractfile(member) if member.isfile() else None)
        added = {f"sbin/{p.name}": (p.read_bytes(), 0o755) for p in sorted(LAUNCHERS.glob("*.sh"))}
        added.update({
            "RELEASE": (f"Spark {version} built for Hadoop 3 (repacked from pyspark)\n".encode(),
                        0o644),
            "conf/spark-env.sh.template": (b"#!/usr/bin/env bash\n", 0o644),
            "conf/spark-defaults.conf.template": (b"# spark.master  spark://master:7077\n", 0o644),
        })  # fmt: skip
        for name, (data, mode) in added.items():
            # Not the checkout's times and owners: they differ from one clone to the next.
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), mode, _MTIME
            out.addfile(info, io.BytesIO(data))
    os.replace(partial, tgz)
    write_sha512(tgz)
    stamp.write_text(_builder_hash())
    check_pin(version, sha)
    log.info("spark tarball built in %.0f s: %s", time.monotonic() - start, tgz)
    return tgz


def write_sha512(tgz: Path) -> Path:
    """Write `<hex>  <name>` beside the tarball, the format `sha512sum -c` checks."""
    digest = hashlib.sha512()
    with tgz.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    sha = tgz.with_name(tgz.name + ".sha512")
    sha.write_text(f"{digest.hexdigest()}  {tgz.name}\n")
    return sha


def pinned_sha512(inventory: Path = BED_INVENTORY) -> tuple[str, str | None]:
    """The Spark version and the spark.sha512 the bed's inventory pins."""
    spark = tomllib.loads(inventory.read_text())["spark"]
    return spark["version"], spark.get("sha512") or None


def check_pin(version: str, sha: Path) -> None:
    """Refuse a tarball the bed's nodes would refuse: its hash must be the pinned one."""
    pinned_version, pinned = pinned_sha512()
    built = sha.read_text().split()[0]
    if version == pinned_version and built != pinned:
        raise RuntimeError(
            f"the bed's Spark {version} tarball hashes to {built}, but "
            f"{BED_INVENTORY.name} pins spark.sha512 = {pinned!r}: the builder or its "
            f'launchers changed; set sha512 = "{built}" there'
        )


def _pid_file(state_dir: Path | None, https: bool = False) -> Path:
    return (state_dir or default_state_dir()) / f"spark-mirror{'-https' if https else ''}.pid"


def _running_pid(state_dir: Path | None, https: bool = False) -> int | None:
    try:
        fields = _pid_file(state_dir, https).read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return None
    if len(fields) > 1:
        return pid if _pid_alive(pid, fields[1]) else None
    # An older bed wrote no start time: check the command line instead, so a recycled pid
    # is never taken for ours.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"http.server" in cmdline else None


def start_server(*, root: Path | None = None, bind: str = BIND, port: int = PORT,
                 state_dir: Path | None = None, https: bool = False) -> int:
    """Serve the mirror in the background (pid file in state_dir); idempotent. `https`:
    the TLS listener (port HTTPS_PORT unless given), with the bed CA's certificate."""
    pid = _running_pid(state_dir, https)
    if pid is not None:
        if len(_pid_file(state_dir, https).read_text().split()) > 1:
            return pid
        # An older bed's plain http.server: it cannot answer npm's packument requests.
        stop_server(state_dir=state_dir, https=https)
    root = root or mirror_root()
    root.mkdir(parents=True, exist_ok=True)
    state_dir = state_dir or default_state_dir()
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tests.testbed.hosts.serve", "--root", str(root),
           "--bind", bind]
    if https:
        port = HTTPS_PORT if port == PORT else port
        cert, key = tls.ensure_server_cert(bind)
        cmd += ["--cert", str(cert), "--key", str(key)]
    cmd += ["--port", str(port)]
    name = "spark-mirror-https" if https else "spark-mirror"
    with (state_dir / f"{name}.log").open("ab") as logf:
        proc = subprocess.Popen(
            cmd, cwd=HERE.parents[2], stdout=logf, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    _pid_file(state_dir, https).write_text(f"{proc.pid} {_pid_start(proc.pid)}\n")
    _wait_listening(bind, port, proc)
    log.info("mirror serving %s on %s://%s:%d", root, "https" if https else "http", bind, port)
    return proc.pid


def _wait_listening(bind: str, port: int, proc: subprocess.Popen) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mirror server exited with {proc.returncode}; see its log")
        try:
            with socket.create_connection((bind, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"mirror server not listening on {bind}:{port} after 15 s")


def stop_server(*, state_dir: Path | None = None, https: bool = False) -> None:
    pid = _running_pid(state_dir, https)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5  # the port is free once it has exited
        while _running_pid(state_dir, https) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    _pid_file(state_dir, https).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m tests.testbed.hosts.mirror")
    parser.add_argument("action", choices=["build", "start", "stop"])
    parser.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    if args.action == "build":
        sys.stdout.write(f"{build_tarball(version=args.version)}\n")
    elif args.action == "start":
        start_server()
        start_server(https=True)
    else:
        stop_server(https=True)
        stop_server()


if __name__ == "__main__":
    main()
