"""Compute driver for the test bed: the fake driver, with each server's real console and
real snapshots.

Nova's FakeDriver boots nothing and answers `os-getConsoleOutput` with a canned text, so
the way a client learns a server's SSH host keys on a real cloud (cloud-init's key block
on the serial console) could not be exercised. The bed's hypervisor boots a namespace
host for each server and records that host's /dev/console in
`<console_dir>/<instance uuid>/console.log`; this driver serves that file, as libvirt
serves a VM's console log.

FakeDriver's snapshot uploads nothing, so an image made with createImage could not boot
what the server wrote. Here `snapshot` uploads the host's disk: the overlay upper dir
`<console_dir>/<instance uuid>/upper` as an uncompressed tar (whiteouts and overlay
xattrs kept), which the hypervisor stacks on the base tree when a server boots from the
image (tests/testbed/hosts/snapshots.py). Everything else is FakeDriver's.

Loaded only by the bed's nova-compute processes (see nova_compute.py next to it in the
plugin directory), never installed into the system's nova package.
"""

import os
import shutil
import tempfile

from nova import exception
from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova.virt import fake
from oslo_concurrency import processutils
from oslo_config import cfg
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

# libvirt's cap on console output (MAX_CONSOLE_BYTES): a long-running host's console
# grows without bound, the API answer must not.
MAX_CONSOLE_BYTES = 100 * 1024

opts = [
    cfg.StrOpt(
        "console_dir",
        help="Directory with one subdirectory per instance uuid holding console.log, "
        "the console of the host the bed's hypervisor booted for that instance.",
    ),
]
cfg.CONF.register_opts(opts, group="testbed")


# What the bed writes into each host's upper dir at every boot (tests/testbed/hosts/
# hosts.py BED_WRITTEN; this module cannot import it, nova-compute runs another python):
# the NoCloud seed of the old instance, the bed's init scripts and cloud.cfg. Left out of
# a snapshot: a host booted from it gets its own, and must not see the old seed.
BED_WRITTEN = (
    "var/lib/cloud/seed/nocloud",
    "usr/local/sbin/testbed-init",
    "usr/local/sbin/testbed-boot",
    "etc/cloud/cloud.cfg",
    "etc/cloud/cloud.cfg.d/90-testbed.cfg",
)
# Must match tests/testbed/hosts/snapshots.py, which extracts the layer: whiteouts are
# char devices, opaque dirs are trusted.overlay.* xattrs, security.* holds capabilities.
TAR_XATTRS = ("--xattrs", "--xattrs-include=trusted.*", "--xattrs-include=security.*",
              "--xattrs-include=user.*", "--numeric-owner")
# See snapshots.LOWER_IMAGES_PROPERTY: the layers under a snapshot's own, nearest first.
LOWER_IMAGES_PROPERTY = "sparkstack_testbed_lower_images"


class HostDiskNotFound(exception.NovaException):
    msg_fmt = ("Instance %(instance_id)s has no disk on the test bed (no overlay upper dir "
               "%(path)s): the hypervisor never booted it, or its host was removed.")


class SnapshotChainBroken(exception.NovaException):
    msg_fmt = ("Instance %(instance_id)s booted from snapshot image %(image_id)s, which is "
               "gone: its lower layers cannot be named, so no snapshot of it can boot.")


def console_path(instance_uuid):
    return os.path.join(cfg.CONF.testbed.console_dir, instance_uuid, "console.log")


def upper_path(instance_uuid):
    return os.path.join(cfg.CONF.testbed.console_dir, instance_uuid, "upper")


class ConsoleFakeDriver(fake.FakeDriver):
    _image_api = None

    @property
    def image_api(self):
        if self._image_api is None:
            from nova.image import glance

            ConsoleFakeDriver._image_api = glance.API()
        return self._image_api

    def _lower_images(self, context, instance):
        """The layers below this server's disk when it booted from a snapshot: that image,
        then the layers under it (None when it booted from a base image)."""
        if instance.system_metadata.get("image_image_type") != "snapshot":
            return None
        try:
            parent = self.image_api.get(context, instance.image_ref)
        except exception.ImageNotFound as exc:
            raise SnapshotChainBroken(
                instance_id=instance.uuid, image_id=instance.image_ref) from exc
        below = parent.get("properties", {}).get(LOWER_IMAGES_PROPERTY) or ""
        return ",".join([instance.image_ref, *[i for i in below.split(",") if i]])

    def snapshot(self, context, instance, image_id, update_task_state):
        upper = upper_path(instance.uuid)
        if not os.path.isdir(upper):
            raise HostDiskNotFound(instance_id=instance.uuid, path=upper)
        image_meta = instance.image_meta
        # Nova created the image without formats (a driver may convert); the layer is
        # stored as the base image was, e.g. raw/bare. Properties Nova put on the image
        # (inherited ones such as the base tree's name, image_type, base_image_ref) stay:
        # this update only adds.
        metadata = {
            "disk_format": (image_meta.disk_format
                            if image_meta.obj_attr_is_set("disk_format") else "raw"),
            "container_format": (image_meta.container_format
                                 if image_meta.obj_attr_is_set("container_format")
                                 else "bare"),
            "properties": {},
        }
        lower = self._lower_images(context, instance)
        if lower:
            metadata["properties"][LOWER_IMAGES_PROPERTY] = lower

        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        workdir = tempfile.mkdtemp(prefix="snapshot-", dir=cfg.CONF.instances_path)
        try:
            tarball = os.path.join(workdir, "layer.tar")
            excludes = [f"--exclude=./{rel}" for rel in BED_WRITTEN]
            LOG.info("packing %s into a snapshot layer", upper, instance=instance)
            # processutils waits for tar in a green way: a tar of hundreds of MB does not
            # hold up the other RPCs of this nova-compute. Root, for trusted.* xattrs.
            processutils.execute(
                "tar", "--create", "--file", tarball, "--directory", upper,
                "--anchored", "--no-wildcards", *excludes, *TAR_XATTRS, ".",
                # 1: a file changed while read (a running server), as a live snapshot.
                check_exit_code=[0, 1])
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            with open(tarball, "rb") as data, compute_utils.disk_ops_semaphore:
                self.image_api.update(context, image_id, metadata, data, purge_props=False)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        LOG.info("snapshot image %s uploaded", image_id, instance=instance)

    def get_console_output(self, context, instance):
        path = console_path(instance.uuid)
        try:
            with open(path, "rb") as console:
                console.seek(0, os.SEEK_END)
                console.seek(max(0, console.tell() - MAX_CONSOLE_BYTES))
                return console.read()
        except FileNotFoundError:
            # The hypervisor has not booted the host yet (or it is gone). libvirt answers
            # an empty console when a VM's console file is not there yet; so does this.
            LOG.info("console log %s does not exist (yet?)", path, instance=instance)
            return b""
