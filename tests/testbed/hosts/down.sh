#!/bin/sh
# Stops the host half of the test bed: every host, the hypervisor, the mirror server,
# the bridge. Caches (rootfs, Spark tarball) are kept for the next up.sh.
set -eu
cd "$(dirname "$0")/../../.."
exec "${PYTHON:-python3}" -m tests.testbed.hosts.hostbed down
