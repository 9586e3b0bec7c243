"""Pure planning: what the inventory wants + what the cloud has -> an ordered list of actions.

Nothing here talks to a cloud. The cloud edge (cloud.py) turns resources into the small
observed records below, the workflows apply the actions, and `--dry-run` only prints them:
so the exact same list is what a user reviews and what gets executed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from provisioner import inventory

log = logging.getLogger(__name__)

MASTER = "master"
WORKER = "worker"

# Tags and metadata keys that say "this belongs to cluster X" (the cluster tag itself is
# inventory.cluster_tag). Neutron filters ports, security groups and floating IPs by tag;
# Nova filters servers by tag (microversion >= 2.26); server groups have no tags.
TAG = "sparkstack"
META_CLUSTER = "sparkstack-cluster"
META_ROLE = "sparkstack-role"
META_INDEX = "sparkstack-index"


def cluster_tag(cluster: str) -> str:
    return inventory.cluster_tag(cluster)


def identity_tags(cluster: str) -> list[str]:
    return [TAG, cluster_tag(cluster)]


def identity_description(cluster: str) -> str:
    """Set in the same POST as the resource, so identity never lags behind creation."""
    return f"sparkstack cluster {cluster}"


def server_name(cluster: str, role: str, index: int) -> str:
    if role == MASTER:
        return inventory.master_server_name(cluster)
    return inventory.worker_server_name(cluster, index)


def keypair_name(cluster: str) -> str:
    return inventory.generated_keypair_name(cluster)


def security_group_name(cluster: str) -> str:
    return inventory.security_group_name(cluster)


def server_group_name(cluster: str) -> str:
    # Nova server groups carry no tags: this exact name is their identity.
    return inventory.server_group_name(cluster)


def master_port_name(cluster: str) -> str:
    return f"{cluster}-master-port"


# ---------------------------------------------------------------------------------------
# What the inventory wants (decoupled from the pydantic model so plans are easy to test)


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
    open_ports: tuple[int, ...] = (22, 443)
    anti_affinity: str = "soft"  # soft | hard | none
    keypair: str = ""  # existing keypair name; empty: sparkstack-<cluster>, managed by us
    key_source: str = "generate"  # generate | import (public key of ssh.private_key)

    @property
    def keypair_managed(self) -> bool:
        return not self.keypair

    @property
    def keypair_name(self) -> str:
        return self.keypair or keypair_name(self.cluster)

    def wanted(self) -> list[tuple[str, int]]:
        return [(MASTER, 0)] + [(WORKER, i) for i in range(1, self.workers + 1)]


def desired_from_inventory(inv: Any, *, workers: int | None = None) -> Desired:
    """Read the inventory model into a Desired; `workers` overrides the count (scale)."""
    ports = [22, int(inv.jupyterhub.port)]
    if inv.jupyterhub.tls.mode == "acme":
        ports.append(80)
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
        anti_affinity=inv.workers.anti_affinity,
        keypair=inv.ssh.keypair or "",
        key_source="import" if inv.ssh.private_key else "generate",
    )


# ---------------------------------------------------------------------------------------
# What the cloud has


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
    server_group: Ref | None = None
    master_port: Ref | None = None
    floating_ip: Ref | None = None  # a floating IP we allocated (carries our identity)
    attached_ip: str = ""  # whatever floating address is on the master port now
    keypair: Ref | None = None  # the managed keypair sparkstack-<cluster>, if it exists

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


# ---------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class Action:
    kind: ClassVar[str] = "action"

    def describe(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["description"] = self.describe()
        return out


@dataclass(frozen=True)
class CreateSecurityGroup(Action):
    kind: ClassVar[str] = "create_security_group"
    name: str
    allowed_cidrs: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()

    def rule_count(self) -> int:
        # all traffic from the group itself (IPv4 + IPv6), one rule per port and CIDR
        return 2 + len(self.allowed_cidrs) * len(self.ports)

    def describe(self) -> str:
        outside = (
            f"tcp {','.join(map(str, self.ports))} from {', '.join(self.allowed_cidrs)}"
            if self.allowed_cidrs
            else "nothing from outside"
        )
        return f"create security group {self.name}: all traffic between nodes, {outside}"


@dataclass(frozen=True)
class CreateKeypair(Action):
    kind: ClassVar[str] = "create_keypair"
    name: str
    source: str  # generate | import

    def describe(self) -> str:
        how = (
            "from a key generated for this cluster"
            if self.source == "generate"
            else ("from the public key of ssh.private_key")
        )
        return f"create keypair {self.name} {how}"


@dataclass(frozen=True)
class CreateServerGroup(Action):
    kind: ClassVar[str] = "create_server_group"
    name: str
    policy: str

    def describe(self) -> str:
        return f"create server group {self.name} ({self.policy})"


@dataclass(frozen=True)
class CreateMasterPort(Action):
    kind: ClassVar[str] = "create_master_port"
    name: str
    network: str

    def describe(self) -> str:
        return f"create port {self.name} on network {self.network} (fixes the master's IP)"


@dataclass(frozen=True)
class CreateServer(Action):
    kind: ClassVar[str] = "create_server"
    name: str
    role: str
    index: int
    flavor: str

    def describe(self) -> str:
        return f"create server {self.name} ({self.role}, {self.flavor})"


@dataclass(frozen=True)
class Decommission(Action):
    kind: ClassVar[str] = "decommission"
    names: tuple[str, ...]

    def describe(self) -> str:
        return f"decommission {', '.join(self.names)} gracefully"


@dataclass(frozen=True)
class DeleteServer(Action):
    kind: ClassVar[str] = "delete_server"
    name: str
    id: str
    reason: str = ""

    def describe(self) -> str:
        return f"delete server {self.name}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class AttachFloatingIP(Action):
    kind: ClassVar[str] = "attach_floating_ip"
    address: str  # "" = allocate a new one from the pool
    pool: str

    def describe(self) -> str:
        if self.address:
            return f"attach existing floating IP {self.address} to the master"
        return f"allocate a floating IP from {self.pool} and attach it to the master"


@dataclass(frozen=True)
class DeleteFloatingIP(Action):
    kind: ClassVar[str] = "delete_floating_ip"
    address: str
    id: str

    def describe(self) -> str:
        return f"release floating IP {self.address}"


@dataclass(frozen=True)
class _DeleteNamed(Action):
    """Deleting one named resource found by its id: only the noun differs between kinds."""

    noun: ClassVar[str] = ""
    name: str
    id: str

    def describe(self) -> str:
        return f"delete {self.noun} {self.name}"


@dataclass(frozen=True)
class DeletePort(_DeleteNamed):
    kind: ClassVar[str] = "delete_port"
    noun: ClassVar[str] = "port"


@dataclass(frozen=True)
class DeleteSecurityGroup(_DeleteNamed):
    kind: ClassVar[str] = "delete_security_group"
    noun: ClassVar[str] = "security group"


@dataclass(frozen=True)
class DeleteServerGroup(_DeleteNamed):
    kind: ClassVar[str] = "delete_server_group"
    noun: ClassVar[str] = "server group"


@dataclass(frozen=True)
class DeleteKeypair(Action):
    kind: ClassVar[str] = "delete_keypair"
    name: str

    def describe(self) -> str:
        return f"delete keypair {self.name}"


# ---------------------------------------------------------------------------------------
# Planning


def rank(node: Node) -> tuple[int, str]:
    """Which of several servers with one name to keep: ACTIVE first, then the oldest."""
    return (0 if node.status == "ACTIVE" else 1 if node.status != "ERROR" else 2, node.created)


def _duplicates(observed: Observed) -> tuple[dict[str, Node], list[DeleteServer]]:
    """One server per name; extras (e.g. a create retried after a lost answer) go."""
    by_name: dict[str, list[Node]] = {}
    for node in observed.nodes:
        by_name.setdefault(node.name, []).append(node)
    keep: dict[str, Node] = {}
    extra: list[DeleteServer] = []
    for name, nodes in sorted(by_name.items()):
        ordered = sorted(nodes, key=rank)
        keep[name] = ordered[0]
        extra += [DeleteServer(name=name, id=n.id, reason="duplicate") for n in ordered[1:]]
    return keep, extra


def _server_actions(desired: Desired, observed: Observed, indices: Iterable[tuple[str, int]]):
    keep, actions = _duplicates(observed)
    deletes: list[Action] = list(actions)
    creates: list[Action] = []
    for role, index in indices:
        name = server_name(desired.cluster, role, index)
        flavor = desired.master_flavor if role == MASTER else desired.worker_flavor
        node = keep.get(name)
        if node is not None and node.status == "ERROR":
            reason = f"ERROR: {node.fault}" if node.fault else "ERROR"
            deletes.append(DeleteServer(name=name, id=node.id, reason=reason))
            node = None
        if node is None:
            creates.append(CreateServer(name=name, role=role, index=index, flavor=flavor))
    return deletes, creates


def plan_up(desired: Desired, observed: Observed) -> list[Action]:
    """Everything still missing for the cluster the inventory describes, in apply order.

    Workers above the inventory's count are left alone: only `scale` removes servers.
    """
    c = desired.cluster
    actions: list[Action] = []
    if observed.security_group is None:
        actions.append(
            CreateSecurityGroup(
                name=security_group_name(c),
                allowed_cidrs=desired.allowed_cidrs,
                ports=desired.open_ports,
            )
        )
    if desired.keypair_managed and observed.keypair is None:
        actions.append(CreateKeypair(name=keypair_name(c), source=desired.key_source))
    if desired.anti_affinity != "none" and observed.server_group is None and desired.workers:
        policy = "soft-anti-affinity" if desired.anti_affinity == "soft" else "anti-affinity"
        actions.append(CreateServerGroup(name=server_group_name(c), policy=policy))
    if observed.master_port is None:
        actions.append(CreateMasterPort(name=master_port_name(c), network=desired.network))
    deletes, creates = _server_actions(desired, observed, desired.wanted())
    actions += deletes + creates
    if not observed.attached_ip:
        actions.append(AttachFloatingIP(address=desired.floating_ip, pool=desired.floating_ip_pool))
    return actions


def plan_scale(desired: Desired, observed: Observed) -> list[Action]:
    """Add workers up to desired.workers, or remove the highest-index ones (decommissioned
    first). The master and shared resources must already exist: `up` makes them."""
    wanted = [(WORKER, i) for i in range(1, desired.workers + 1)]
    keep, _ = _duplicates(observed)
    removing = [
        n for n in observed.workers() if n.index > desired.workers and keep.get(n.name) is n
    ]
    removing.sort(key=lambda n: n.index, reverse=True)
    actions: list[Action] = []
    if desired.workers and desired.anti_affinity != "none" and observed.server_group is None:
        policy = "soft-anti-affinity" if desired.anti_affinity == "soft" else "anti-affinity"
        actions.append(CreateServerGroup(name=server_group_name(desired.cluster), policy=policy))
    if removing:
        actions.append(Decommission(names=tuple(n.name for n in removing)))
        actions += [DeleteServer(name=n.name, id=n.id, reason="scale down") for n in removing]
    deletes, creates = _server_actions(desired, observed, wanted)
    # duplicates of removed servers are deleted too; don't list them twice
    removed_ids = {n.id for n in removing}
    actions += [d for d in deletes if getattr(d, "id", None) not in removed_ids] + creates
    return actions


def plan_down(desired: Desired, observed: Observed) -> list[Action]:
    """Everything carrying the cluster's identity, servers first (ports and groups are in
    use until their servers are gone). An inventory-named floating IP is never released."""
    actions: list[Action] = []
    order = sorted(observed.nodes, key=lambda n: (n.role == MASTER, -n.index, n.id))
    actions += [DeleteServer(name=n.name, id=n.id) for n in order]
    fip = observed.floating_ip
    if fip is not None and fip.detail != desired.floating_ip:
        actions.append(DeleteFloatingIP(address=fip.detail, id=fip.id))
    if observed.master_port is not None:
        actions.append(DeletePort(name=observed.master_port.name, id=observed.master_port.id))
    if observed.security_group is not None:
        sg = observed.security_group
        actions.append(DeleteSecurityGroup(name=sg.name, id=sg.id))
    if observed.server_group is not None:
        actions.append(
            DeleteServerGroup(name=observed.server_group.name, id=observed.server_group.id)
        )
    if desired.keypair_managed and observed.keypair is not None:
        actions.append(DeleteKeypair(name=observed.keypair.name))
    return actions


def describe(actions: Sequence[Action]) -> str:
    if not actions:
        return "nothing to do"
    return "\n".join(f"{i:>3}. {a.describe()}" for i, a in enumerate(actions, 1))


def to_json(actions: Sequence[Action]) -> list[dict[str, Any]]:
    return [a.to_json() for a in actions]


# ---------------------------------------------------------------------------------------
# Preflight: what the plan needs against what the project has left


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


@dataclass(frozen=True)
class Quota:
    limit: int  # -1: unlimited
    used: int

    @property
    def left(self) -> int | None:
        return None if self.limit < 0 else max(self.limit - self.used, 0)


@dataclass(frozen=True)
class Needs:
    instances: int = 0
    cores: int = 0
    ram: int = 0
    ports: int = 0
    floating_ips: int = 0
    security_groups: int = 0
    security_group_rules: int = 0
    server_groups: int = 0
    server_group_members: int = 0  # largest group size after the plan

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def needs(
    actions: Sequence[Action],
    *,
    flavors: Mapping[str, Flavor],
    observed: Observed,
    desired: Desired,
) -> Needs:
    """Quota the plan consumes. Servers deleted by the plan (ERROR replacements, scale
    down) are netted out: they are gone before their replacements are created."""
    by_id = {n.id: n for n in observed.nodes}
    inst = cores = ram = ports = 0
    for a in actions:
        if isinstance(a, CreateServer):
            f = flavors.get(a.flavor)
            inst += 1
            ports += 0 if a.role == MASTER else 1  # the master uses the port made for it
            if f:
                cores += f.vcpus
                ram += f.ram
        elif isinstance(a, DeleteServer) and a.id in by_id:
            node = by_id[a.id]
            f = flavors.get(desired.master_flavor if node.role == MASTER else desired.worker_flavor)
            inst -= 1
            ports -= 0 if node.role == MASTER else 1
            if f:
                cores -= f.vcpus
                ram -= f.ram
    sg = [a for a in actions if isinstance(a, CreateSecurityGroup)]
    return Needs(
        instances=max(inst, 0),
        cores=max(cores, 0),
        ram=max(ram, 0),
        ports=max(ports, 0) + sum(isinstance(a, CreateMasterPort) for a in actions),
        floating_ips=sum(isinstance(a, AttachFloatingIP) and not a.address for a in actions),
        security_groups=len(sg),
        security_group_rules=sum(a.rule_count() for a in sg),
        server_groups=sum(isinstance(a, CreateServerGroup) for a in actions),
        server_group_members=desired.workers if desired.anti_affinity != "none" else 0,
    )


_QUOTA_WORDS = {
    "instances": "instances",
    "cores": "cores (vCPUs)",
    "ram": "RAM (MiB)",
    "ports": "ports",
    "floating_ips": "floating IPs",
    "security_groups": "security groups",
    "security_group_rules": "security group rules",
    "server_groups": "server groups",
}


def quota_shortfalls(need: Needs, quotas: Mapping[str, Quota]) -> list[str]:
    """One line per quota the plan would exceed (quotas missing from the map are unknown
    and not checked)."""
    out: list[str] = []
    for key, words in _QUOTA_WORDS.items():
        want = getattr(need, key)
        q = quotas.get(key)
        if not want or q is None or q.left is None or want <= q.left:
            continue
        out.append(
            f"{words}: the plan needs {want}, the project has {q.left} left "
            f"(limit {q.limit}, used {q.used})"
        )
    members = quotas.get("server_group_members")
    if (
        need.server_group_members
        and members is not None
        and 0 <= members.limit < need.server_group_members
    ):
        out.append(
            f"server group members: {need.server_group_members} workers in one group, "
            f"the limit is {members.limit}"
        )
    return out


def image_flavor_shortfalls(image: Image, flavors: Iterable[Flavor]) -> list[str]:
    out: list[str] = []
    if image.status != "active":
        out.append(f"image {image.name} is {image.status}, not active")
    for f in flavors:
        if f.disk and image.min_disk and f.disk < image.min_disk:
            out.append(
                f"flavor {f.name} has a {f.disk} GB disk, image {image.name} needs "
                f"{image.min_disk} GB"
            )
        if image.min_ram and f.ram < image.min_ram:
            out.append(
                f"flavor {f.name} has {f.ram} MB of RAM, image {image.name} needs "
                f"{image.min_ram} MB"
            )
    return out
