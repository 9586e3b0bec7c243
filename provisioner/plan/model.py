"""What the inventory wants (Desired) and what the cloud has (Observed), as small frozen
records decoupled from pydantic and openstacksdk, so plans are tables in tests."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from provisioner.inventory.names import MASTER, WORKER, generated_keypair_name
from provisioner.keys import public_key_path
from provisioner.plan.rules import RuleRef


@dataclass(frozen=True)
class Desired:
    cluster: str
    workers: int
    master_flavor: str
    worker_flavor: str
    image: str = ""
    network: str = ""
    floating_ip_pool: str = ""
    floating_ip: str = ""  # an existing address to use; never released
    allowed_cidrs: tuple[str, ...] = ()
    open_ports: tuple[int, ...] = (22, 443)  # to allowed_cidrs only
    # To every address (0.0.0.0/0 and ::/0): 80 with ACME, whose CA validates from anywhere.
    world_ports: tuple[int, ...] = ()
    anti_affinity: str = "soft"  # soft | hard | none
    keypair: str = ""  # existing keypair name; empty: sparkstack-<cluster>, managed by us
    key_source: str = "generate"  # generate | import (public key of ssh.private_key)
    public_key_file: str = ""  # for import: the .pub beside ssh.private_key
    private_key_file: str = ""  # ssh.private_key: the SSH stage logs in with it
    # jupyterhub.limits as the inventory names them; None: "auto" (or no hub: image build)
    user_memory_mib: int | None = None
    user_cpu: float | None = None

    @property
    def keypair_managed(self) -> bool:
        return not self.keypair

    @property
    def keypair_name(self) -> str:
        return self.keypair or generated_keypair_name(self.cluster)

    def wanted(self) -> list[tuple[str, int]]:
        return [(MASTER, 0)] + [(WORKER, i) for i in range(1, self.workers + 1)]

    @property
    def server_group_policy(self) -> str:
        """Nova's name for the anti-affinity the inventory asks for ("" = no group)."""
        return {"soft": "soft-anti-affinity", "hard": "anti-affinity"}.get(self.anti_affinity, "")


def desired_from_inventory(inv: Any, *, workers: int | None = None) -> Desired:
    """Read the inventory model into a Desired; `workers` overrides the count (scale)."""
    ports = [22, int(inv.jupyterhub.port)]
    # HTTP-01 validation comes from the CA's servers, from anywhere on the internet
    # (RFC 8555 section 8.3, and Let's Encrypt validates from several places), so 80 cannot
    # be limited to allowed_cidrs; 22 and the hub's port stay limited.
    world = (80,) if inv.jupyterhub.tls.mode == "acme" else ()
    return Desired(
        cluster=inv.cluster.name,
        workers=inv.workers.count if workers is None else workers,
        master_flavor=inv.master.flavor,
        worker_flavor=inv.workers.flavor,
        image=inv.cluster.image,
        network=inv.network.name,
        floating_ip_pool=inv.network.floating_ip_pool,
        floating_ip=inv.network.floating_ip or "",
        allowed_cidrs=tuple(inv.network.allowed_cidrs),
        open_ports=tuple(sorted(set(ports))),
        world_ports=world,
        anti_affinity=inv.workers.anti_affinity,
        keypair=inv.ssh.keypair or "",
        key_source="import" if inv.ssh.private_key else "generate",
        public_key_file=str(public_key_path(inv.ssh.private_key)) if inv.ssh.private_key else "",
        private_key_file=str(inv.ssh.private_key or ""),
        user_memory_mib=inv.jupyterhub.limits.memory_limit_mib(),
        user_cpu=inv.jupyterhub.limits.cpu_limit(),
    )


@dataclass(frozen=True)
class Node:
    """One server of the cluster, as observed."""

    name: str
    role: str
    index: int
    id: str
    status: str
    fixed_ip: str = ""
    floating_ip: str = ""
    flavor: str = ""
    created: str = ""
    fault: str = ""
    stack: str = ""  # the Heat stack that made it (`render --heat`), if any

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Ref:
    """A non-server resource the cluster owns (security group, port, floating IP, ...)."""

    id: str
    name: str = ""
    detail: str = ""  # the address of a floating IP / port, the policy of a server group


@dataclass(frozen=True)
class Observed:
    cluster: str
    nodes: tuple[Node, ...] = ()
    security_group: Ref | None = None
    # The group's ingress rules that `up` compares with the wanted ones (ours, and by hand
    # ones of the same shape), and how every rule someone else added reads: left alone.
    security_group_rules: tuple[RuleRef, ...] = ()
    foreign_rules: tuple[str, ...] = ()
    server_group: Ref | None = None
    master_port: Ref | None = None
    floating_ip: Ref | None = None  # a floating IP we allocated (carries our identity)
    attached_ip: str = ""  # whatever floating address is on the master port now
    keypair: Ref | None = None  # sparkstack-<cluster>, if it exists (detail: its public key)
    # Resources with the cluster's names but not its identity: never used, changed or
    # deleted; `up` refuses while they exist, `down` says it left them.
    lookalikes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.nodes
            or self.security_group
            or self.server_group
            or self.master_port
            or self.floating_ip
            or self.keypair
        )

    def master(self) -> Node | None:
        return next((n for n in self.nodes if n.role == MASTER), None)

    def workers(self) -> list[Node]:
        return sorted((n for n in self.nodes if n.role == WORKER), key=lambda n: n.index)

    @property
    def stack(self) -> str:
        """The Heat stack the cluster's servers belong to ("" for an `up`-made cluster)."""
        return next((n.stack for n in self.nodes if n.stack), "")


@dataclass(frozen=True)
class Flavor:
    name: str
    vcpus: int
    ram: int  # MiB
    disk: int  # GiB


@dataclass(frozen=True)
class Image:
    name: str
    status: str
    min_disk: int = 0
    min_ram: int = 0
    # Glance's custom properties: a baked image says what it holds (see `image build`).
    properties: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Quota:
    limit: int  # -1: unlimited
    used: int

    @property
    def left(self) -> int | None:
        return None if self.limit < 0 else max(self.limit - self.used, 0)


@dataclass(frozen=True)
class Resolved:
    """Image, flavors and networks resolved once per run to ids (never by name again)."""

    image_id: str
    image: Image
    flavors: dict[str, Flavor]  # by the name or id the inventory used
    flavor_ids: dict[str, str]
    network_id: str
    external_network_id: str
