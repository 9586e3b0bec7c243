"""Snapshot images as overlay layers: what the bed's compute driver uploads, booted.

A server snapshot (Nova's createImage, see controlplane/console_driver.py) is a plain tar
of the host's overlay upper dir: the files the server wrote, whiteouts (char devices 0/0)
for the files it deleted and `trusted.overlay.opaque` on the directories it replaced. A
host booted from one stacks the extracted layer on the base tree the image names
(inherited IMAGE_PROPERTY), as the original host had it; a snapshot of a server that
itself booted from a snapshot names the older images' layers in LOWER_IMAGES_PROPERTY,
nearest first.

Each image is downloaded and extracted once into `<cache>/snapshots/<image id>/layer`
(built in `<image id>.partial`, renamed when complete, so a crash never leaves a half
layer that looks whole), and removed once the image is gone from Glance and no host
record uses it; bed down removes them all.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .rootfs import CACHE_DIR

log = logging.getLogger(__name__)

# Set by the compute driver on a snapshot of a server booted from a snapshot: the ids of
# the layers below the image's own, nearest first, comma-separated.
LOWER_IMAGES_PROPERTY = "sparkstack_testbed_lower_images"
# Whiteouts are char devices, opaque dirs and copied-up metadata are trusted.overlay.*
# xattrs; security.* keeps file capabilities. Only root may write trusted.* and mknod.
TAR_XATTRS = ("--xattrs", "--xattrs-include=trusted.*", "--xattrs-include=security.*",
              "--xattrs-include=user.*", "--numeric-owner")


class SnapshotError(RuntimeError):
    """A snapshot image could not be turned into a layer; the message says why."""


def cache_dir(base: Path = CACHE_DIR) -> Path:
    return base / "snapshots"


def layer_path(image_id: str, base: Path = CACHE_DIR) -> Path:
    return cache_dir(base) / image_id / "layer"


def is_cached(image_id: str, base: Path = CACHE_DIR) -> bool:
    return layer_path(image_id, base).is_dir()


def lower_images(image: dict[str, Any]) -> list[str]:
    """The ids of the layers under a snapshot image's own, nearest first."""
    raw = image.get(LOWER_IMAGES_PROPERTY) or ""
    return [i for i in (s.strip() for s in raw.split(",")) if i]


def fetch(conn: Any, image_id: str, base: Path = CACHE_DIR) -> Path:
    """Download and extract a snapshot image once; returns its layer dir."""
    final = cache_dir(base) / image_id
    layer = final / "layer"
    if layer.is_dir():
        return layer
    partial = final.with_name(f"{image_id}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "layer").mkdir(parents=True)
    try:
        meta = conn.image.get(f"/images/{image_id}")
        if meta.status_code == 404:
            raise SnapshotError(f"image {image_id} is gone from Glance")
        meta.raise_for_status()
        info = meta.json()
        if info.get("status") != "active":
            raise SnapshotError(f"image {image_id} is {info.get('status')}, not active")
        tarball = partial / "image.tar"
        resp = conn.image.get(f"/images/{image_id}/file", stream=True)
        resp.raise_for_status()
        size = 0
        with tarball.open("wb") as out:
            for chunk in resp.iter_content(1 << 20):
                out.write(chunk)
                size += len(chunk)
        if info.get("size") is not None and size != info["size"]:
            raise SnapshotError(f"image {image_id}: got {size} bytes, Glance says "
                                f"{info['size']}")
        proc = subprocess.run(
            ["tar", "--extract", "--file", str(tarball), "--directory", str(partial / "layer"),
             *TAR_XATTRS, "--same-permissions", "--same-owner"],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise SnapshotError(f"image {image_id}: tar failed ({proc.returncode}): "
                                f"{proc.stderr.strip()[-2000:]}")
        tarball.unlink()
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("snapshot image %s extracted to %s (%d bytes)", image_id, layer, size)
    return layer


def prune(conn: Any, *, in_use: Iterable[str], base: Path = CACHE_DIR) -> list[str]:
    """Remove the layers of images gone from Glance that no host record boots from (a
    stopped server keeps its lower layers, as a VM keeps its disk when its image goes),
    and half-built ones; returns the ids removed. `in_use`: lower dirs of every host."""
    root = cache_dir(base)
    if not root.is_dir():
        return []
    used = {str(Path(p)) for p in in_use}
    removed = []
    for entry in sorted(root.iterdir()):
        if entry.name.endswith(".partial"):
            continue
        if str(entry / "layer") in used:
            continue
        resp = conn.image.get(f"/images/{entry.name}")
        if resp.status_code != 404:
            continue
        log.info("snapshot image %s is gone: removing its layer", entry.name)
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry.name)
    return removed


def remove_partials(base: Path = CACHE_DIR) -> None:
    """Half-built layers of an earlier hypervisor (killed mid-download)."""
    root = cache_dir(base)
    if root.is_dir():
        for entry in root.glob("*.partial"):
            shutil.rmtree(entry, ignore_errors=True)


def remove_all(base: Path = CACHE_DIR) -> None:
    """Bed down: every layer goes (a cache: the next boot from an image fetches it again)."""
    shutil.rmtree(cache_dir(base), ignore_errors=True)
