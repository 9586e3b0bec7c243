"""The namespace hosts' root file system, built once per recipe and cached.

Two kinds of tree:

* pre-baked (`rootfs-<hash>`): image/ (package lists + provision.sh + build-rootfs.sh)
  running the node boot script's install steps, rendered for the bed's inventory
  (TREE_INVENTORY) by `sparkstack render --role image --tree`; everything a node needs but
  Spark is installed (the bed's nodes fetch Spark from its mirror).
* stock (`stock-<suite>-<hash>`): build-stock-rootfs.sh beside this file, what Debian's
  genericcloud image holds and nothing more, so the product's install-at-boot path (through
  the bed's mirrors) runs for real. Glance images name theirs with the property
  IMAGE_PROPERTY (see tests/testbed/bed.py).

The cache directory's name carries a hash of the recipe, so editing it builds a fresh tree
and an unchanged recipe reuses the old one.

    python -m tests.testbed.hosts.rootfs                 # pre-baked; prints the path
    python -m tests.testbed.hosts.rootfs stock bookworm  # stock Debian 12
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
IMAGE_DIR = REPO / "image"
CACHE_DIR = Path("/var/cache/sparkstack-testbed")
STOCK_SCRIPT = Path(__file__).resolve().parent / "build-stock-rootfs.sh"
# Debian suites the stock recipe is known to build and boot here.
STOCK_SUITES = ("bookworm", "trixie")
# The Glance image property naming the rootfs a server boots from (`stock-<suite>`); an
# image without it boots the pre-baked tree.
IMAGE_PROPERTY = "sparkstack_testbed_rootfs"
# The inventory the pre-baked tree's boot script files are rendered for.
TREE_INVENTORY = REPO / "tests" / "testbed" / "inventory.testbed.toml"


def image_document() -> str:
    """The image role's cloud-config for the bed's inventory: its files are the recipe."""
    from provisioner.inventory import load_inventory
    from provisioner.render import IMAGE_ROLE, SparkHash, render_cloud_init

    inv = load_inventory(TREE_INVENTORY)
    return render_cloud_init(inv, role=IMAGE_ROLE, spark_hash=SparkHash.of_inventory(inv.spark))


def _not_recipe(path: Path, image_dir: Path) -> bool:
    rel = path.relative_to(image_dir)
    return rel.name == "__init__.py" or "__pycache__" in rel.parts


def remove_older_caches(cache_dir: Path, prefix: str, keep: Path, what: str) -> None:
    """Drop the caches of older locks (``<prefix>-<key>``) now that ``keep`` is built; a
    ``.partial`` one may be another build under way and is left."""
    for old in cache_dir.glob(f"{prefix}-*"):
        if old != keep and old.is_dir() and not old.name.endswith(".partial"):
            log.info("removing the %s of an older lock: %s", what, old)
            shutil.rmtree(old, ignore_errors=True)


def recipe_hash(image_dir: Path = IMAGE_DIR) -> str:
    """Hash names and contents of the recipe files, so any edit means a new rootfs.

    The package marker (image/ ships its locks inside sparkstack) and Python's bytecode
    caches are not part of the recipe: importing the package must not mean a new rootfs.
    """
    digest = hashlib.sha256()
    files = (p for p in image_dir.rglob("*") if p.is_file() and not _not_recipe(p, image_dir))
    for path in sorted(files):
        digest.update(str(path.relative_to(image_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    # The boot script and its settings are the steps provision.sh runs.
    digest.update(image_document().encode())
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
    from provisioner.commands.render import write_tree

    with tempfile.TemporaryDirectory(prefix="sparkstack-image-tree-") as tree:
        write_tree(image_document(), Path(tree))
        subprocess.run(["sh", str(IMAGE_DIR / "build-rootfs.sh"), str(target), tree], check=True)
    log.info("rootfs built in %.0f s: %s", time.monotonic() - start, target)
    for old in cache_dir.glob("rootfs-*"):
        if old != target and old.is_dir():
            log.info("removing rootfs of an older recipe: %s", old)
            shutil.rmtree(old, ignore_errors=True)
    return target


def stock_rootfs_path(suite: str = "bookworm", cache_dir: Path = CACHE_DIR) -> Path:
    digest = hashlib.sha256(STOCK_SCRIPT.read_bytes()).hexdigest()[:16]
    return cache_dir / f"stock-{suite}-{digest}"


def ensure_stock_rootfs(suite: str = "bookworm", cache_dir: Path = CACHE_DIR) -> Path:
    """Return the stock tree of `suite`, building it (about a minute) if missing; trees of
    older recipes for the same suite are removed."""
    if suite not in STOCK_SUITES:
        raise ValueError(f"no stock rootfs for {suite!r}; known: {', '.join(STOCK_SUITES)}")
    target = stock_rootfs_path(suite, cache_dir)
    if (target / "etc" / "os-release").exists():
        log.info("stock %s rootfs cached: %s", suite, target)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    subprocess.run(["sh", str(STOCK_SCRIPT), str(target), suite], check=True)
    log.info("stock %s rootfs built in %.0f s: %s", suite, time.monotonic() - start, target)
    for old in cache_dir.glob(f"stock-{suite}-*"):
        if old != target and old.is_dir():
            log.info("removing a stock rootfs of an older recipe: %s", old)
            shutil.rmtree(old, ignore_errors=True)
    return target


def rootfs_for(name: str | None, cache_dir: Path = CACHE_DIR) -> Path:
    """The tree an image's IMAGE_PROPERTY value names (None: the pre-baked one), without
    building it: the hypervisor must not spend a minute in debootstrap mid-poll."""
    if not name:
        return rootfs_path(cache_dir)
    kind, _, suite = name.partition("-")
    if kind != "stock" or suite not in STOCK_SUITES:
        raise ValueError(f"unknown rootfs {name!r} (expected stock-<{'|'.join(STOCK_SUITES)}>)")
    return stock_rootfs_path(suite, cache_dir)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    start = time.monotonic()
    if sys.argv[1:2] == ["stock"]:
        path = ensure_stock_rootfs(sys.argv[2] if len(sys.argv) > 2 else "bookworm")
    else:
        path = ensure_rootfs()
    log.info("rootfs ready after %.1f s", time.monotonic() - start)
    sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
