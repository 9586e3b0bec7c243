"""Pure planning: what the inventory wants + what the cloud has -> an ordered list of actions.

Nothing here talks to a cloud. The cloud edge turns resources into the observed records of
provisioner.plan.model, the executor runs the actions in the order listed, and `--dry-run`
only prints them: so the exact same list is what a user reviews and what gets executed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from provisioner.inventory.names import (
    MASTER,
    WORKER,
    generated_keypair_name,
    master_port_name,
    security_group_name,
    server_group_name,
    server_name,
    worker_server_name,
)
from provisioner.plan.actions import (
    Action,
    AttachFloatingIP,
    CreateKeypair,
    CreateMasterPort,
    CreateSecurityGroup,
    CreateServer,
    CreateServerGroup,
    Decommission,
    DeleteFloatingIP,
    DeleteKeypair,
    DeletePort,
    DeleteSecurityGroup,
    DeleteServer,
    DeleteServerGroup,
    UpdateSecurityGroup,
)
from provisioner.plan.model import Desired, Node, Observed
from provisioner.plan.rules import rule_changes, security_group_rules


def rank(node: Node) -> tuple[int, str]:
    """Which of several servers with one name to keep: ACTIVE first, then the oldest."""
    return (0 if node.status == "ACTIVE" else 1 if node.status != "ERROR" else 2, node.created)


def keep_one(servers: Iterable[Node]) -> tuple[Node, list[Node]]:
    """Of servers sharing one name (a create retried after a lost answer), the one to keep
    and the extras to delete. The planner and the converger both decide with this."""
    ordered = sorted(servers, key=rank)
    return ordered[0], ordered[1:]


def _duplicates(observed: Observed) -> tuple[dict[str, Node], list[DeleteServer]]:
    """One server per name; the extras go."""
    by_name: dict[str, list[Node]] = {}
    for node in observed.nodes:
        by_name.setdefault(node.name, []).append(node)
    keep: dict[str, Node] = {}
    extra: list[DeleteServer] = []
    for name, nodes in sorted(by_name.items()):
        keep[name], extras = keep_one(nodes)
        extra += [DeleteServer(name=name, id=n.id, reason="duplicate") for n in extras]
    return keep, extra


def _server_actions(
    desired: Desired, observed: Observed, indices: Iterable[tuple[str, int]]
) -> tuple[list[DeleteServer], list[CreateServer]]:
    keep, deletes = _duplicates(observed)
    creates: list[CreateServer] = []
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
                world_ports=desired.world_ports,
            )
        )
    else:
        actions += _rule_updates(desired, observed)
    if desired.keypair_managed and observed.keypair is None:
        actions.append(CreateKeypair(name=generated_keypair_name(c), source=desired.key_source))
    if desired.server_group_policy and observed.server_group is None and desired.workers:
        policy = desired.server_group_policy
        actions.append(CreateServerGroup(name=server_group_name(c), policy=policy))
    if observed.master_port is None:
        actions.append(CreateMasterPort(name=master_port_name(c), network=desired.network))
    deletes, creates = _server_actions(desired, observed, desired.wanted())
    # Duplicates and ERROR servers go first, so the floating IP (which Neutron puts on a
    # port whether or not a server uses it yet) stands next to the creates and is attached
    # while they boot.
    actions = deletes + actions
    if not observed.attached_ip:
        actions.append(AttachFloatingIP(address=desired.floating_ip, pool=desired.floating_ip_pool))
    return actions + creates


def _rule_updates(desired: Desired, observed: Observed) -> list[Action]:
    """The existing group brought to the inventory's rules (allowed_cidrs, the hub's port,
    ACME's port 80 may all have changed since the group was made)."""
    sg = observed.security_group
    assert sg is not None
    wanted = security_group_rules(desired.allowed_cidrs, desired.open_ports, desired.world_ports)
    add, remove = rule_changes(wanted, observed.security_group_rules)
    if not (add or remove):
        return []
    return [UpdateSecurityGroup(name=sg.name, id=sg.id, add=tuple(add), remove=tuple(remove))]


def one_request_workers(cluster: str, creates: Sequence[CreateServer]) -> list[CreateServer]:
    """The workers of `creates` that one multi-create POST can make: all of worker-1 ...
    worker-k (k >= 2) with one flavor, as in a new cluster, since Nova names them
    <base>-1 ... <base>-k. Anything else (scale-up from worker-4, a replacement) goes by
    explicit name."""
    workers = sorted((c for c in creates if c.role == WORKER), key=lambda c: c.index)
    wanted = [worker_server_name(cluster, i) for i in range(1, len(workers) + 1)]
    if len(workers) < 2 or [w.name for w in workers] != wanted:
        return []
    if len({w.flavor for w in workers}) != 1:
        return []
    return workers


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
    if desired.workers and desired.server_group_policy and observed.server_group is None:
        actions.append(
            CreateServerGroup(
                name=server_group_name(desired.cluster), policy=desired.server_group_policy
            )
        )
    if removing:
        actions.append(Decommission(names=tuple(n.name for n in removing)))
        actions += [DeleteServer(name=n.name, id=n.id, reason="scale down") for n in removing]
    deletes, creates = _server_actions(desired, observed, wanted)
    # duplicates of removed servers are deleted too; don't list them twice
    removed_ids = {n.id for n in removing}
    actions += [d for d in deletes if d.id not in removed_ids]
    actions += creates
    return actions


def plan_down(desired: Desired, observed: Observed) -> list[Action]:
    """Everything carrying the cluster's identity: the servers and what may go while they
    still exist at once, the security group once they are gone (their ports use it). An
    inventory-named floating IP is never released."""
    actions: list[Action] = []
    order = sorted(observed.nodes, key=lambda n: (n.role == MASTER, -n.index, n.id))
    actions += [DeleteServer(name=n.name, id=n.id) for n in order]
    fip = observed.floating_ip
    if fip is not None and fip.detail != desired.floating_ip:
        actions.append(DeleteFloatingIP(address=fip.detail, id=fip.id))
    if observed.master_port is not None:
        actions.append(DeletePort(name=observed.master_port.name, id=observed.master_port.id))
    if observed.server_group is not None:
        actions.append(
            DeleteServerGroup(name=observed.server_group.name, id=observed.server_group.id)
        )
    if desired.keypair_managed and observed.keypair is not None:
        actions.append(DeleteKeypair(name=observed.keypair.name))
    if observed.security_group is not None:  # last: Neutron keeps it while a port uses it
        sg = observed.security_group
        actions.append(DeleteSecurityGroup(name=sg.name, id=sg.id))
    return actions


def batches(actions: Sequence[Action]) -> list[list[Action]]:
    """The plan cut into what runs at once: neighbours sharing a `together` name form one
    batch, every other action is a batch of its own. Order is the plan's."""
    out: list[list[Action]] = []
    for action in actions:
        if out and action.together and out[-1][0].together == action.together:
            out[-1].append(action)
        else:
            out.append([action])
    return out


def describe(actions: Sequence[Action]) -> str:
    if not actions:
        return "nothing to do"
    return "\n".join(f"{i:>3}. {a.describe()}" for i, a in enumerate(actions, 1))


def to_json(actions: Sequence[Action]) -> list[dict[str, Any]]:
    return [a.to_json() for a in actions]
