"""up / scale / down / status: observe -> plan -> preflight -> (dry run stops) -> execute.

Collaborators come in as arguments (the cloud, a progress reporter, a user_data renderer,
hooks for the SSH stage) so the same functions run from the CLI, from tests and from
benchmarks. Nothing here imports openstack: the cloud is handed in.
"""

from __future__ import annotations

from provisioner import plan as P
from provisioner.workflows.context import Hooks, Reporter, Result, Settings, UserData
from provisioner.workflows.down import down
from provisioner.workflows.ports import Cloud
from provisioner.workflows.preflight import refusal
from provisioner.workflows.scale import scale
from provisioner.workflows.up import up


def status(cloud: Cloud) -> P.Observed:
    """The cluster as the cloud has it now (one observation)."""
    return cloud.observe()


__all__ = [
    "Hooks",
    "Reporter",
    "Result",
    "Settings",
    "UserData",
    "down",
    "refusal",
    "scale",
    "status",
    "up",
]
