"""nova-compute for the test bed, able to load the bed's own compute driver.

Nova imports `compute_driver` relative to its own package ("nova.virt.<name>"), so a
module on PYTHONPATH is not enough. This starts nova-compute as /usr/bin/nova-compute
does, with the directory of this file added to nova.virt's search path: the driver
module beside it (sparkstack_console.py) loads as nova.virt.sparkstack_console, and
nothing is written into the system's nova package.
"""

import os
import sys

# nova.cmd first (the sort order keeps it first): importing it applies eventlet's monkey
# patching, which must precede every other import of nova.
import nova.cmd.compute
import nova.virt

nova.virt.__path__.append(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    sys.exit(nova.cmd.compute.main())
