"""A local Spark mirror for the namespace hosts, which cannot reach the internet.

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
    python -m tests.testbed.hosts.mirror start | stop
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

from .hosts import default_state_dir

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path("/var/cache/sparkstack-testbed")
DEFAULT_VERSION = "4.3.0"
BIND = "10.77.0.1"
PORT = 8800
LAUNCHERS = HERE / "sbin"
BED_INVENTORY = HERE.parent / "inventory.testbed.toml"
# The time stamp of every file this builder adds: any fixed value keeps the tarball the same.
_MTIME = 1_700_000_000


def mirror_url(*, bind: str = BIND, port: int = PORT) -> str:
    """What an inventory's spark.mirror must be to use this mirror."""
    return f"http://{bind}:{port}"


def mirror_root(cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / "spark-mirror"


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


def _pid_file(state_dir: Path | None) -> Path:
    return (state_dir or default_state_dir()) / "spark-mirror.pid"


def _running_pid(state_dir: Path | None) -> int | None:
    pid_file = _pid_file(state_dir)
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # The pid may have been recycled: only ours serves the mirror root.
    return pid if b"http.server" in cmdline else None


def start_server(*, root: Path | None = None, bind: str = BIND, port: int = PORT,
                 state_dir: Path | None = None) -> int:
    """Serve the mirror in the background (pid file in state_dir); idempotent."""
    pid = _running_pid(state_dir)
    if pid is not None:
        return pid
    root = root or mirror_root()
    state_dir = state_dir or default_state_dir()
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "spark-mirror.log").open("ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", bind, "--directory", str(root),
             str(port)],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _pid_file(state_dir).write_text(f"{proc.pid}\n")
    _wait_listening(bind, port, proc)
    log.info("spark mirror serving %s on %s", root, mirror_url(bind=bind, port=port))
    return proc.pid


def _wait_listening(bind: str, port: int, proc: subprocess.Popen) -> None:
    import socket

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"spark mirror exited with {proc.returncode}; see its log")
        try:
            with socket.create_connection((bind, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"spark mirror not listening on {bind}:{port} after 15 s")


def stop_server(*, state_dir: Path | None = None) -> None:
    pid = _running_pid(state_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
    _pid_file(state_dir).unlink(missing_ok=True)


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
    else:
        stop_server()


if __name__ == "__main__":
    main()
