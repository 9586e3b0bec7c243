"""The one executor: runs a plan's actions in the order the plan lists them.

A batch (neighbouring actions that share a `together` name, see provisioner.plan.actions)
runs at once: the prerequisites concurrently (the master port once its security group
exists); server creates concurrently (new workers in one multi-create POST) with the
floating IP attached meanwhile, until every watched server is ACTIVE; server deletes
concurrently with the release of the floating IP, master port, server group and keypair,
until the servers are gone; then the security group. Everything else runs one action at a
time. So what `--dry-run` prints is exactly what an apply does.

On Ctrl-C or an error nothing new is sent, but every request already on the wire is
waited for, so whatever exists is something the next `up` or `down` sees.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from provisioner import plan as P
from provisioner.keys import ensure_generated_key, generated_key_path, remove_generated_key
from provisioner.workflows.context import Run
from provisioner.workflows.converge import Converger, wait_gone

log = logging.getLogger(__name__)

T = TypeVar("T")


def execute(actions: Sequence[P.Action], run: Run) -> None:
    creates = any(isinstance(a, P.CreateServer) for a in actions)
    for batch in P.batches(actions):
        together = batch[0].together
        if together == P.CREATE_SERVERS:
            _create_servers(run, batch)
        elif together == P.DELETE_SERVERS:
            _delete_servers(run, batch, creates_follow=creates)
        else:  # prerequisites, clean-up, or a batch of one
            _at_once(run, batch)


def concurrently(fn: Callable[[T], None], items: Sequence[T]) -> None:
    """fn over items at once; every call ends before this returns or raises (the first
    error wins). One item runs in the calling thread."""
    if len(items) == 1:
        fn(items[0])
        return
    with cf.ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        cf.wait(futures)
    for f in futures:
        if f.exception() is not None:
            raise f.exception()  # type: ignore[misc]


def _at_once(run: Run, batch: Sequence[P.Action]) -> None:
    for action in batch:
        run.reporter.step(action.describe())

    def run_chain(chain: list[P.Action]) -> None:
        for action in chain:
            _STEPS[type(action)](run, action)

    concurrently(run_chain, _chains(batch))


# Kinds of action that must run one after the other when they share a batch, and why:
_IN_ORDER: tuple[tuple[type[P.Action], ...], ...] = (
    (P.CreateSecurityGroup, P.CreateMasterPort),  # the port is made in the group
    (P.DeletePort, P.DeleteSecurityGroup),  # Neutron refuses a group a port still uses
)


def _chains(batch: Sequence[P.Action]) -> list[list[P.Action]]:
    """The batch as sequences that run at once: each _IN_ORDER sequence, the rest alone."""
    rest = list(batch)
    chains: list[list[P.Action]] = []
    for kinds in _IN_ORDER:
        chain = [a for kind in kinds for a in rest if type(a) is kind]
        rest = [a for a in rest if a not in chain]
        chains += [chain] if chain else []
    return [[a] for a in rest] + chains


def converge(run: Run, creates: Sequence[P.CreateServer]) -> list[P.Node]:
    """Create `creates` (none: only check) and wait until every watched server is ACTIVE."""
    for role in dict.fromkeys(c.role for c in creates):
        run.user_data_for(role)  # render before the first POST, not inside the threads
    cloud, port, desired = run.cloud, run.master_port, run.desired

    def create(spec: P.CreateServer, *, name: str = "", count: int = 1) -> str:
        master = spec.role == P.MASTER
        made: str = cloud.create_server(
            name=name or spec.name,
            role=spec.role,
            index=spec.index,
            resolved=run.resolved,
            flavor=spec.flavor,
            key_name=desired.keypair_name,
            user_data=run.rendered[spec.role],
            port_id=port.id if master and port else "",
            security_group_id="" if master else run.security_group_id,
            server_group_id="" if master else run.server_group_id,
            count=count,
        )
        return made

    def create_workers(specs: Sequence[P.CreateServer]) -> str:
        return create(
            specs[0], name=P.workers_base_name(desired.cluster), count=len(specs)
        )

    together = P.one_request_workers(desired.cluster, creates)
    if together:
        run.reporter.step(
            f"creating {len(creates)} server(s): {len(together)} workers in one request"
            + (", the master beside them" if len(creates) > len(together) else "")
        )
    elif creates:
        run.reporter.step(
            f"creating {len(creates)} server(s), {run.settings.max_parallel} at a time"
        )
    else:
        run.reporter.step("checking that every server is ACTIVE")
    conv = Converger(
        cloud=cloud,
        reporter=run.reporter,
        settings=run.settings,
        create=create,
        create_many=create_workers,
        gone=run.gone,
    )
    nodes = conv.run(creates=creates, watch=run.watch, in_one_request=together)
    run.result.created += [f"server {n}" for n in conv.created]
    run.converged = True
    run.nodes = nodes
    return nodes


def _create_servers(run: Run, batch: Sequence[P.Action]) -> None:
    """The servers, and the floating IP put on the master's port while they boot."""
    creates = [a for a in batch if isinstance(a, P.CreateServer)]
    others = [a for a in batch if not isinstance(a, P.CreateServer)]
    if not creates:
        _at_once(run, others)
        return
    with cf.ThreadPoolExecutor(max_workers=1) as side:
        attached = side.submit(_at_once, run, others) if others else None
        converge(run, creates)
    if attached is not None:
        attached.result()


def _delete_servers(run: Run, batch: Sequence[P.Action], *, creates_follow: bool) -> None:
    servers = [a for a in batch if isinstance(a, P.DeleteServer)]
    others = [a for a in batch if not isinstance(a, P.DeleteServer)]
    for a in batch:
        run.reporter.step(a.describe())

    def delete(chain: list[P.Action]) -> None:
        for a in chain:
            if isinstance(a, P.DeleteServer):
                run.cloud.delete_server(a.id, name=a.name)
            else:  # goes beside the servers: see the together of its action
                _STEPS[type(a)](run, a)

    # the rest first: with more servers than threads, it must not queue behind them
    chains = _chains(others) + [[a] for a in servers]
    with cf.ThreadPoolExecutor(max_workers=max(1, run.settings.max_parallel)) as pool:
        futures = [pool.submit(delete, chain) for chain in chains]
    for f in futures:
        f.result()
    ids = {a.id for a in servers}
    run.gone |= ids
    # wait: their ports use the security group, and quota stays taken, until they are gone
    wait_gone(
        run.cloud,
        ids,
        settings=run.settings,
        reporter=run.reporter,
        deleted_is_gone=not creates_follow,  # a server listed DELETED has no port left
    )
    run.result.deleted += [f"server {a.name}" for a in servers]


def _security_group(run: Run, a: P.CreateSecurityGroup) -> None:
    run.security_group_id = run.cloud.create_security_group(
        name=a.name, cidrs=a.allowed_cidrs, ports=a.ports, world_ports=a.world_ports
    )
    run.result.created.append(f"security group {a.name}")


def _update_security_group(run: Run, a: P.UpdateSecurityGroup) -> None:
    run.cloud.update_security_group(
        a.id, name=a.name, add=a.add, remove=[r.id for r in a.remove]
    )
    run.result.changed.append(a.describe().removeprefix("update "))


def _keypair(run: Run, a: P.CreateKeypair) -> None:
    if a.source == "generate":
        public = ensure_generated_key(run.key_dir)
        run.result.notes.append(f"private key: {generated_key_path(run.key_dir)}")
    else:
        public = Path(run.desired.public_key_file).read_text().strip()
    run.cloud.create_keypair(name=a.name, public_key=public)
    run.keypair_made, run.keypair_public = a.name, public
    run.result.created.append(f"keypair {a.name}")


def _server_group(run: Run, a: P.CreateServerGroup) -> None:
    run.server_group_id = run.cloud.create_server_group(name=a.name, policy=a.policy)
    run.result.created.append(f"server group {a.name}")


def _master_port(run: Run, a: P.CreateMasterPort) -> None:
    run.master_port = run.cloud.create_master_port(
        name=a.name, network_id=run.resolved.network_id, security_group_id=run.security_group_id
    )
    run.result.created.append(f"port {a.name} ({run.master_port.detail})")


def _decommission(run: Run, a: P.Decommission) -> None:
    by_name = {n.name: n for n in run.observed.nodes}
    run.hooks.decommission(run.observed, [by_name[n] for n in a.names if n in by_name])


def _floating_ip(run: Run, a: P.AttachFloatingIP) -> None:
    assert run.master_port is not None, "the plan creates the master port first"
    address = run.cloud.attach_floating_ip(
        address=a.address,
        port_id=run.master_port.id,
        external_network_id=run.resolved.external_network_id,
    )
    run.attached_ip = address
    run.reporter.step(f"floating IP {address} is on the master")
    run.result.notes.append(f"floating IP: {address}")
    if not a.address:
        run.result.created.append(f"floating IP {address}")


class _Removal(NamedTuple):
    noun: str
    delete: Callable[[Any, Any], None]  # (the cloud writer, the action)
    label: str = "name"  # the action's field the result lists after the noun


_REMOVALS: dict[type[P.Action], _Removal] = {
    P.DeleteFloatingIP: _Removal(
        "floating IP",
        lambda cloud, a: cloud.delete_floating_ip(a.id, address=a.address),
        label="address",
    ),
    P.DeletePort: _Removal("port", lambda cloud, a: cloud.delete_port(a.id, name=a.name)),
    P.DeleteSecurityGroup: _Removal(
        "security group", lambda cloud, a: cloud.delete_security_group(a.id, name=a.name)
    ),
    P.DeleteServerGroup: _Removal(
        "server group", lambda cloud, a: cloud.delete_server_group(a.id, name=a.name)
    ),
    P.DeleteKeypair: _Removal("keypair", lambda cloud, a: cloud.delete_keypair(a.name)),
}


def _remove(run: Run, a: P.Action) -> None:
    how = _REMOVALS[type(a)]
    how.delete(run.cloud, a)
    run.result.deleted.append(f"{how.noun} {getattr(a, how.label)}")
    if isinstance(a, P.DeleteKeypair):
        removed = remove_generated_key(run.key_dir)  # useless once its keypair is gone
        if removed:
            run.result.deleted.append(f"private key {removed}")


# Each step takes the one action type it is listed under.
_STEPS: dict[type[P.Action], Callable[[Run, Any], None]] = {
    P.CreateSecurityGroup: _security_group,
    P.UpdateSecurityGroup: _update_security_group,
    P.CreateKeypair: _keypair,
    P.CreateServerGroup: _server_group,
    P.CreateMasterPort: _master_port,
    P.Decommission: _decommission,
    P.AttachFloatingIP: _floating_ip,
    **dict.fromkeys(_REMOVALS, _remove),
}
