"""What the workflows ask of the cloud edge, as Protocols.

The real edge (provisioner.cloud.ClusterCloud) and the scripted stand-in the unit tests use
both satisfy these; mypy checks each of them against them (see the TYPE_CHECKING blocks at
their definitions). This module imports no openstack: workflows that never talk to a cloud
must not load it, and a Protocol needs only the plan's types.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from provisioner import plan as P


class Servers(Protocol):
    """The servers alone: all the converger needs (it is given the create function), and
    what the executor creates and deletes them with."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether the failure may pass on a retry (a lost answer, a 5xx), not a 4xx."""
        ...

    def list_nodes(self) -> list[P.Node]:
        """Every server of the cluster, in one request."""
        ...

    def create_server(
        self,
        *,
        name: str,
        role: str,
        index: int,
        resolved: P.Resolved,
        flavor: str,
        key_name: str,
        user_data: str,
        port_id: str = "",
        security_group_id: str = "",
        server_group_id: str = "",
        count: int = 1,
    ) -> str:
        """One POST (count > 1: Nova's multi-create, named <name>-1 ...); the first id."""
        ...

    def delete_server(self, server_id: str, *, name: str = "") -> None: ...


class Cloud(Servers, Protocol):
    """One cluster's view of one project: everything up, scale, down, status and the SSH
    stage call on it."""

    # ------------------------------------------------------------------ reading

    def observe(self) -> P.Observed:
        """The whole cluster and what is named like it but is not its own."""
        ...

    def resolve(self, desired: P.Desired) -> tuple[P.Resolved | None, list[str]]:
        """The inventory's image, flavors and networks as ids, or every problem found."""
        ...

    def quotas(self) -> dict[str, P.Quota]: ...

    def find_keypair(self, name: str) -> bool: ...

    def console_output(self, server_id: str, *, name: str = "") -> str:
        """The server's console log ("" while the cloud has none yet)."""
        ...

    def nodes_at(self, addresses: list[str], *, role: str) -> list[P.Node]:
        """Servers with these addresses, in that order (clusters made by hand)."""
        ...

    # ------------------------------------------------------------------ writing

    def create_security_group(
        self,
        *,
        name: str,
        cidrs: Iterable[str],
        ports: Iterable[int],
        world_ports: Iterable[int] = (),
    ) -> str:
        """The cluster's group: `ports` open to `cidrs`, `world_ports` to everyone."""
        ...

    def update_security_group(
        self,
        group_id: str,
        *,
        name: str,
        add: Iterable[P.IngressRule] = (),
        remove: Iterable[str] = (),
    ) -> None:
        """Delete the rules with the ids in `remove`, then add `add`."""
        ...

    def create_keypair(self, *, name: str, public_key: str) -> None: ...

    def create_server_group(self, *, name: str, policy: str) -> str: ...

    def create_master_port(
        self, *, name: str, network_id: str, security_group_id: str
    ) -> P.Ref: ...

    def attach_floating_ip(self, *, address: str, port_id: str, external_network_id: str) -> str:
        """Put `address` (or a new one when it is "") on the port; the address."""
        ...

    def delete_floating_ip(self, fip_id: str, *, address: str = "") -> None: ...

    def delete_port(self, port_id: str, *, name: str = "") -> None: ...

    def delete_security_group(self, sg_id: str, *, name: str = "") -> None: ...

    def delete_server_group(self, group_id: str, *, name: str = "") -> None: ...

    def delete_keypair(self, name: str) -> None: ...

    def resize_stack(self, name: str, *, workers: int, timeout: float = 900) -> None:
        """Set the stack's worker_count (keeping the rest) and wait for the update."""

    def delete_stack(self, name: str, *, timeout: float = 600) -> None:
        """Delete the Heat stack that owns the cluster and wait until it is gone."""
