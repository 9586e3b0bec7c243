"""The OpenStack edge: the only package that imports openstack.

Commands import it only when they talk to a cloud, so `render`, `--help` and `--version`
never load openstacksdk.
"""

from __future__ import annotations

from provisioner.cloud.connection import connect, is_transient
from provisioner.cloud.read import CloudReader
from provisioner.cloud.write import CloudWriter
from provisioner.plan.model import Resolved


class ClusterCloud(CloudReader, CloudWriter):
    """One cluster's view of one OpenStack project: read (resolve, quotas, observe) and
    write (create with identity, delete by id) over one connection."""


__all__ = ["ClusterCloud", "Resolved", "connect", "is_transient"]
