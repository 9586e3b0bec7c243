"""The hub's own services: who they act as, what they may do, and how the hub starts them.

Pure, like hub/config.py, which writes them into jupyterhub_config.py.
"""

from __future__ import annotations

from provisioner.inventory.names import (
    CLUSTER_UI_PORT,
    SMOKE_USER,
    SPARK_MASTER_UI_PORT,
)
from provisioner.render import VENV

# The scopes jupyterhub-idle-culler documents for running as a role, not as an admin.
CULLER_SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")

# `sparkstack smoke` acts as this service, on its own account only (the filter): create
# and delete it, start and stop its server, and talk to that server's kernels.
SMOKE_SERVICE = "sparkstack-smoke"
SMOKE_SCOPES = tuple(
    f"{scope}!user={SMOKE_USER}" for scope in ("admin:users", "admin:servers", "access:servers")
)

# kernels/sparkui/sparkstack_clusterui.py: its name is its URL, /services/spark/.
CLUSTER_UI_SERVICE = "spark"
CLUSTER_UI_MODULE = "sparkstack_clusterui"


def culler_service(timeout: int) -> dict[str, object] | None:
    """The idle-culler hub service, or None when server culling is off (timeout 0)."""
    if timeout == 0:
        return None
    # Check a few times per timeout, at most every 10 minutes (the culler's default).
    every = max(60, min(600, timeout // 3))
    return {
        "name": "idle-culler",
        "command": [
            f"{VENV}/bin/python",
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={timeout}",
            f"--cull-every={every}",
        ],
    }


def cluster_ui_service(*, master_ip: str, python_path: str) -> dict[str, object]:
    """The Spark master's and workers' UIs behind the hub's login. Admins hold
    access:services (JupyterHub's admin role has every scope); no other role grants it,
    so the hub's OAuth turns everyone else away before the service sees them."""
    return {
        "name": CLUSTER_UI_SERVICE,
        "url": f"http://127.0.0.1:{CLUSTER_UI_PORT}",
        "command": [f"{VENV}/bin/python", "-m", CLUSTER_UI_MODULE],
        # It only reads the cluster's network: no account of its own, no files.
        "user": "nobody",
        "cwd": "/",
        "environment": {
            "PYTHONPATH": python_path,
            "SPARKSTACK_MASTER_UI": f"http://{master_ip}:{SPARK_MASTER_UI_PORT}",
        },
        "oauth_no_confirm": True,
        "display": True,
    }
