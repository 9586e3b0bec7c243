#!/bin/sh
# Starts the host half of the test bed (namespace hosts for Nova's servers): builds or
# reuses the rootfs and the Spark mirror, creates the bridge, starts the mirror server
# and the hypervisor. Run as root after tests/testbed/controlplane/up.sh.
set -eu
cd "$(dirname "$0")/../../.."
exec "${PYTHON:-python3}" -m tests.testbed.hosts.hostbed up
