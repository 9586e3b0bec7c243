#!/bin/sh
# Bring the test bed's OpenStack control plane up (install, configure, start, provision).
# Idempotent: a second run reuses what is up. Run as root. State: $SPARKSTACK_TESTBED_DIR
# (default /var/lib/sparkstack-testbed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s)
"$here/install.sh"
echo "[testbed] packages: $(( $(date +%s) - t0 ))s"
exec /usr/bin/python3 "$here/ctl.py" up
