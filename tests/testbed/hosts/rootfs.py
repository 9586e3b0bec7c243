"""The namespace hosts' root file system, built once per recipe and cached.

The recipe is image/ (package lists + provision.sh + build-rootfs.sh), shared with
anyone pre-baking a cloud image. The cache directory's name carries a hash of every
file in image/, so editing the recipe builds a fresh tree and an unchanged recipe
reuses the old one.

    python -m tests.testbed.hosts.rootfs      # build or reuse; prints the path
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
IMAGE_DIR = REPO / "image"
CACHE_DIR = Path("/var/cache/sparkstack-testbed")


def recipe_hash(image_dir: Path = IMAGE_DIR) -> str:
    """Hash names and contents of the recipe files, so any edit means a new rootfs."""
    digest = hashlib.sha256()
    for path in sorted(p for p in image_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(image_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def rootfs_path(cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / f"rootfs-{recipe_hash()}"


def ensure_rootfs(cache_dir: Path = CACHE_DIR) -> Path:
    """Return the rootfs for the current recipe, building it first if it is missing.

    Trees of older recipes are removed: each is ~1.5 GB and never used again.
    """
    target = rootfs_path(cache_dir)
    if (target / "etc" / "os-release").exists():
        log.info("rootfs cached: %s", target)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    subprocess.run(["sh", str(IMAGE_DIR / "build-rootfs.sh"), str(target)], check=True)
    log.info("rootfs built in %.0f s: %s", time.monotonic() - start, target)
    for old in cache_dir.glob("rootfs-*"):
        if old != target and old.is_dir():
            log.info("removing rootfs of an older recipe: %s", old)
            shutil.rmtree(old, ignore_errors=True)
    return target


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    start = time.monotonic()
    path = ensure_rootfs()
    log.info("rootfs ready after %.1f s", time.monotonic() - start)
    sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
