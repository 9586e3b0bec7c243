"""Compute driver for the test bed: the fake driver, with each server's real console.

Nova's FakeDriver boots nothing and answers `os-getConsoleOutput` with a canned text, so
the way a client learns a server's SSH host keys on a real cloud (cloud-init's key block
on the serial console) could not be exercised. The bed's hypervisor boots a namespace
host for each server and records that host's /dev/console in
`<console_dir>/<instance uuid>/console.log`; this driver serves that file, as libvirt
serves a VM's console log. Everything else is FakeDriver's.

Loaded only by the bed's nova-compute processes (see nova_compute.py next to it in the
plugin directory), never installed into the system's nova package.
"""

import os

from nova.virt import fake
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


def console_path(instance_uuid):
    return os.path.join(cfg.CONF.testbed.console_dir, instance_uuid, "console.log")


class ConsoleFakeDriver(fake.FakeDriver):
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
