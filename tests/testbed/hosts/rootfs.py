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

And one overlay layer: `systemd-<hash>` on top of a tree, with systemd as its init in
place of the daemonless systemctl, for hosts booted with `init="systemd"` (hosts.py), where
resource limits on units are enforced by cgroups for real.

The cache directory's name carries a hash of the recipe, so editing it builds a fresh tree
and an unchanged recipe reuses the old one.

    python -m tests.testbed.hosts.rootfs                 # pre-baked; prints the path
    python -m tests.testbed.hosts.rootfs stock bookworm  # stock Debian 12
    python -m tests.testbed.hosts.rootfs systemd         # systemd layer of the pre-baked tree
"""

from __future__ import annotations

import hashlib
import logging
import os
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


SYSTEMD_PACKAGES = ("systemd", "systemd-sysv", "dbus")
# Units a namespace host has no use for: they wait for ttys it does not have, would touch
# the kernel it shares with the machine (sysctl, binfmt, modules, debugfs), or only run
# maintenance at random times.
SYSTEMD_MASKED = (
    "getty@.service", "serial-getty@.service", "console-getty.service",
    "systemd-sysctl.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "systemd-modules-load.service", "kmod-static-nodes.service",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
    "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "dpkg-db-backup.timer",
    "apt-daily.timer", "apt-daily-upgrade.timer",
)
# What a Debian cloud image enables and the tree's daemonless build did not.
SYSTEMD_ENABLED = (
    "cloud-init-local.service", "cloud-init.service", "cloud-config.service",
    "cloud-final.service", "ssh.service",
)
# Runs in a mount namespace of its own, so every mount goes with it, even on failure.
# $1 base tree, $2 build dir (upper/, work/, root/ in it); the upper dir is the layer.
SYSTEMD_LAYER_SCRIPT = """\
set -eu
base=$1 r=$2/root
mount -t overlay overlay -o "lowerdir=$base,upperdir=$2/upper,workdir=$2/work" "$r"
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount -t tmpfs tmpfs "$r/run"
mount -t tmpfs tmpfs "$r/tmp"
cat /etc/resolv.conf > "$r/etc/resolv.conf"
# Package scripts must not start daemons on the build machine.
printf '#!/bin/sh\\nexit 101\\n' > "$r/usr/sbin/policy-rc.d"
chmod +x "$r/usr/sbin/policy-rc.d"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \\
    DEBIAN_FRONTEND=noninteractive chroot "$r" /bin/sh -eu -c '
apt-get update -q
apt-get install -y -q --no-install-recommends PACKAGES
apt-get clean
find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock -delete
systemctl enable ENABLED
systemctl mask MASKED
# Empty: each host gets a machine id of its own at its first boot (D-Bus uses the same).
: > /etc/machine-id
ln -sf /etc/machine-id /var/lib/dbus/machine-id
'
rm -f "$r/usr/sbin/policy-rc.d"
: > "$r/etc/resolv.conf"
"""


def _systemd_layer_script() -> str:
    return (SYSTEMD_LAYER_SCRIPT.replace("PACKAGES", " ".join(SYSTEMD_PACKAGES))
            .replace("ENABLED", " ".join(SYSTEMD_ENABLED))
            .replace("MASKED", " ".join(SYSTEMD_MASKED)))


def systemd_layer_path(base: Path, cache_dir: Path = CACHE_DIR) -> Path:
    """The systemd layer for `base`: its name (which carries base's recipe hash) and the
    layer's own recipe make the key."""
    digest = hashlib.sha256(f"{base.name}\0{_systemd_layer_script()}".encode())
    return cache_dir / f"systemd-{digest.hexdigest()[:16]}"


def ensure_systemd_layer(base: Path, cache_dir: Path = CACHE_DIR) -> Path:
    """Return the systemd layer for `base` (an overlay lower dir to stack on top of it,
    `[layer, base]`), building it first if it is missing; layers of other bases or older
    recipes are removed.

    The layer is the upper dir of an overlay on `base` in which apt installed systemd: its
    whiteouts and opaque dirs keep their meaning when it is a lower dir again.
    """
    target = systemd_layer_path(base, cache_dir)
    if target.is_dir():
        log.info("systemd layer cached: %s", target)
        return target
    if not (base / "etc" / "os-release").exists():
        raise FileNotFoundError(f"no tree at {base} to build a systemd layer on")
    start = time.monotonic()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # `.partial` at the end: no clean-up of older caches takes a build under way.
    build = Path(tempfile.mkdtemp(prefix=f"{target.name}.", suffix=".partial", dir=cache_dir))
    try:
        for sub in ("upper", "work", "root"):
            (build / sub).mkdir()
        subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             _systemd_layer_script(), "sh", str(base), str(build)],
            check=True)
        try:
            os.rename(build / "upper", target)
        except OSError:
            if not target.is_dir():  # else a concurrent build finished first: same layer
                raise
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log.info("systemd layer built in %.0f s: %s", time.monotonic() - start, target)
    for old in cache_dir.glob("systemd-*"):
        if old != target and old.is_dir() and not old.name.endswith(".partial"):
            log.info("removing the systemd layer of another base or recipe: %s", old)
            shutil.rmtree(old, ignore_errors=True)
    return target


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    start = time.monotonic()
    if sys.argv[1:2] == ["stock"]:
        path = ensure_stock_rootfs(sys.argv[2] if len(sys.argv) > 2 else "bookworm")
    elif sys.argv[1:2] == ["systemd"]:
        path = ensure_systemd_layer(ensure_rootfs())
    else:
        path = ensure_rootfs()
    log.info("rootfs ready after %.1f s", time.monotonic() - start)
    sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
