#!/bin/sh
# Stop the test bed: only the processes up.sh started, by their recorded pid and start time.
# Data stays in the state directory, so the next up.sh is a warm start.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$here/ctl.py" down
