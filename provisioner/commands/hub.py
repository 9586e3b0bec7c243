"""`sparkstack hub [--master-ip IP]`: the SSH stage, the hub and Spark authentication for a
master someone launched from Horizon with `render`'s documents, so that path ends in the
same cluster `up` makes. Workers already registered with the Spark master (a second run)
are found there; a worker gets no secret and starts no daemon before this command, so a
new one is named with --worker-ip."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from provisioner import plan as P
from provisioner.commands.common import (
    DEFAULT_INVENTORY,
    InventoryOpt,
    JsonOpt,
    cluster_cloud,
    load,
    session,
)
from provisioner.commands.output import emit_json, hub_json, print_hub, progress
from provisioner.errors import UserInputError

if TYPE_CHECKING:  # imported where used: commands that need neither start faster
    from provisioner.cloud import ClusterCloud

MasterIpOpt = Annotated[
    str | None,
    typer.Option(
        "--master-ip",
        help="The master's floating or private IP address. Without it the cluster is "
        "found by name, as `up` and Heat stacks (`render --heat`) tag it; servers "
        "launched one by one from Horizon carry no tags: name the master here.",
    ),
]
WorkerIpOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--worker-ip",
        help="A worker's private IP (repeat for each). Workers already registered "
        "with the Spark master are found there; a new worker waits for the "
        "cluster's secret before it starts, so it cannot register: name it here.",
    ),
]


def register(app: typer.Typer) -> None:
    app.command()(hub)


def hub(
    master_ip: MasterIpOpt = None,
    worker_ip: WorkerIpOpt = None,
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    as_json: JsonOpt = False,
) -> None:
    """Install or reconcile JupyterHub and Spark authentication on a master launched
    from Horizon (and on the workers registered with it)."""
    from provisioner.workflows.hub_stage import install_hub
    from provisioner.workflows.node_stage import spark_stage
    from provisioner.workflows.spark_auth import master_status, waiting_for_secret
    from provisioner.workflows.ssh_stage import Access, bring_up

    inv = load(inventory)
    out, err = Console(emoji=False), Console(stderr=True, emoji=False)
    name = inv.cluster.name
    with session(name) as current:
        cloud = cluster_cloud(inv)
        access = Access.from_inventory(inv)
        master, tagged = _master_and_workers(cloud, name, master_ip)
        current.state = (
            f"while setting up cluster {name}'s nodes: its servers are unchanged; run "
            "`sparkstack hub` again to finish"
        )
        with progress(err, f"hub {name}", quiet=as_json) as reporter:
            alone = P.Observed(cluster=name, nodes=(master,))
            first = bring_up(alone, cloud=cloud, access=access, reporter=reporter)
            try:
                # A master fresh from boot has no secret and no daemon yet: nothing
                # can have registered with it.
                fresh = waiting_for_secret(first.master)
                status = {} if fresh else master_status(first, master.fixed_ip)
            finally:
                first.close()
            registered = {w["host"] for w in status.get("workers", [])}
            named = set(worker_ip or []) | tagged
            workers = cloud.nodes_at(sorted(registered | named), role=P.WORKER)
            missing = named - {w.fixed_ip for w in workers} - {w.floating_ip for w in workers}
            if missing:
                raise UserInputError(
                    f"no server with the address {', '.join(sorted(missing))} in this "
                    "project (--worker-ip)",
                )
            reporter.step(
                f"{len(workers)} worker(s): {len(registered)} registered with the Spark "
                f"master, {len(named - registered)} more "
                + ("found by name" if master_ip is None else "named with --worker-ip")
                + (
                    " (a new master: a worker not named stays stopped, without the secret)"
                    if fresh
                    else ""
                )
            )
            observed = P.Observed(cluster=name, nodes=(master, *workers))
            nodes = bring_up(observed, cloud=cloud, access=access, reporter=reporter)
            try:
                outcome = install_hub(nodes, inv=inv, observed=observed, reporter=reporter)
                spark_stage(nodes, observed, inv=inv, reporter=reporter)
            finally:
                nodes.close()
        current.state = f"after hub had finished: the hub of cluster {name} is running"
        if as_json:
            emit_json({"cluster": name, **hub_json(outcome),
                       "nodes": [n.to_json() for n in observed.nodes]})  # fmt: skip
            return
        print_hub(out, inv, outcome)


def _master_and_workers(
    cloud: ClusterCloud, name: str, master_ip: str | None
) -> tuple[P.Node, set[str]]:
    """The master, and the private addresses of the workers known without asking it: by
    the address given, or by the cluster's tags (then every tagged worker)."""
    if master_ip is not None:
        found = cloud.nodes_at([master_ip], role=P.MASTER)
        if not found:
            raise UserInputError(
                f"no server with the address {master_ip} in this project",
                hint="pass the master's floating or private IP as Horizon shows it",
            )
        return found[0], set()
    # the servers alone (one tagged list), not the whole cluster's resources
    observed = P.Observed(cluster=name, nodes=tuple(cloud.list_nodes()))
    master = observed.master()
    if master is None:
        raise UserInputError(
            f"no master of cluster {name} found by its name and tags in this project",
            hint="for servers launched one by one from Horizon, pass --master-ip (and "
            "--worker-ip for each new worker)",
        )
    return master, {w.fixed_ip for w in observed.workers() if w.fixed_ip}
