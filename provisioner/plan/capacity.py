"""Quota arithmetic: what a plan consumes against what the project has left, and whether
the image fits the flavors. Pure: the cloud edge reads the numbers, this compares them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from provisioner.inventory.limits import NOTEBOOK_EXTRA_MIB
from provisioner.inventory.names import MASTER
from provisioner.plan.actions import (
    Action,
    AttachFloatingIP,
    CreateMasterPort,
    CreateSecurityGroup,
    CreateServer,
    CreateServerGroup,
    DeleteServer,
    UpdateSecurityGroup,
)
from provisioner.plan.limits import MASTER_CORE_MIB
from provisioner.plan.model import Desired, Flavor, Image, Observed, Quota


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
    rules = [a for a in actions if isinstance(a, (CreateSecurityGroup, UpdateSecurityGroup))]
    return Needs(
        instances=max(inst, 0),
        cores=max(cores, 0),
        ram=max(ram, 0),
        ports=max(ports, 0) + sum(isinstance(a, CreateMasterPort) for a in actions),
        floating_ips=sum(isinstance(a, AttachFloatingIP) and not a.address for a in actions),
        security_groups=len(sg),
        security_group_rules=sum(a.rule_count() for a in rules),
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




def worker_executor_mib(ram: int) -> int:
    """What a worker offers its executors, reckoned as the node's bootstrap does
    (templates/cloud-init/_bootstrap.sh.j2: a tenth of the RAM, at least 768 MiB, kept)."""
    return max(ram - max(ram // 10, 768), 512)


def memory_notes(
    *,
    master: Flavor | None,
    worker: Flavor | None,
    workers: int,
    users: int,
    driver_memory: tuple[str, int],
    executor_memory: tuple[str, int],
) -> list[str]:
    """What the flavors cannot hold, with the numbers: executors bigger than a worker
    offers (none would ever start) and the hub's users' notebooks, all at once, on the
    master. Said, not refused: how many users work at once is the team's to know. Sizes
    come as the inventory writes them and in MiB."""
    (driver_text, driver_mib), (executor_text, executor_mib) = driver_memory, executor_memory
    notes: list[str] = []
    if worker is not None and workers:
        offer = worker_executor_mib(worker.ram)
        if executor_mib > offer:
            notes.append(
                f"spark.limits.executor_memory {executor_text} does not fit in workers.flavor "
                f"{worker.name}: of its {worker.ram} MiB of RAM a worker offers executors "
                f"about {offer} MiB, so no executor would start and jobs would wait for ever; "
                "lower executor_memory or pick a bigger flavor"
            )
    if master is not None and users:
        each = driver_mib + NOTEBOOK_EXTRA_MIB
        need = MASTER_CORE_MIB + users * each
        if need > master.ram:
            fit = max(0, (master.ram - MASTER_CORE_MIB) // each)
            notes.append(
                f"master.flavor {master.name} has {master.ram} MiB of RAM; all {users} hub "
                f"users running a notebook at once would need about {need} MiB "
                f"({MASTER_CORE_MIB} for the hub, its proxy and the Spark master, and {each} "
                f"for each notebook: spark.limits.driver_memory {driver_text} plus "
                f"{NOTEBOOK_EXTRA_MIB} for its JVM, server and kernel), so about {fit} can "
                "work at once; a bigger master.flavor or a smaller driver_memory makes room"
            )
    return notes
