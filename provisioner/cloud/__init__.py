"""The OpenStack edge: the only package that imports openstack.

Commands import it only when they talk to a cloud, so `render`, `--help` and `--version`
never load openstacksdk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provisioner.cloud.connection import connect, is_transient
from provisioner.cloud.read import CloudReader
from provisioner.cloud.stacks import StackWriter
from provisioner.cloud.write import CloudWriter
from provisioner.plan.model import Resolved


class ClusterCloud(CloudReader, CloudWriter, StackWriter):
    """One cluster's view of one OpenStack project: read (resolve, quotas, observe) and
    write (create with identity, delete by id) over one connection."""


if TYPE_CHECKING:
    from provisioner.workflows.ports import Cloud

    def _is_a_cloud(edge: ClusterCloud) -> Cloud:
        """Never run: mypy checks here that the edge has every call the workflows make,
        with their signatures, and names any that differ (the scripted test cloud is
        checked the same way)."""
        return edge


__all__ = ["ClusterCloud", "Resolved", "connect", "is_transient"]
