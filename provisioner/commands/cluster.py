"""`sparkstack up|scale|down|status`: parse, call a workflow, print the outcome."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from provisioner import plan as P
from provisioner import workflows
from provisioner.commands.common import (
    DryRunOpt,
    InventoryOpt,
    JsonOpt,
    YesOpt,
    cluster_cloud,
    confirm,
    load,
    session,
    user_data_renderer,
)
from provisioner.commands.output import (
    emit_json,
    nodes_table,
    print_plan,
    progress,
    result_json,
    show_dry_run,
)

log = logging.getLogger(__name__)


class Until(str, Enum):
    servers = "servers"
    all = "all"


def register(app: typer.Typer) -> None:
    """Add the cluster lifecycle commands to the app."""

    @app.command()
    def up(
        inventory: InventoryOpt = Path("inventory.toml"),
        dry_run: DryRunOpt = False,
        as_json: JsonOpt = False,
        until: Annotated[
            Until,
            typer.Option(
                help="Stop after this stage: 'servers' = every server ACTIVE and the "
                "floating IP attached (no SSH stage).",
                envvar="SPARKSTACK_UNTIL",
            ),
        ] = Until.all,
        no_ssh: Annotated[bool, typer.Option("--no-ssh", help="Same as --until servers.")] = False,
    ) -> None:
        """Create the cluster, or complete a partial one. A second run creates nothing."""
        inv = load(inventory)
        out, err = Console(), Console(stderr=True)
        name = inv.cluster.name
        with session(name):
            cloud = cluster_cloud(inv)
            render = user_data_renderer(inv)
            stop = "servers" if no_ssh else until.value
            if dry_run:
                res = workflows.up(inv, cloud=cloud, user_data=render, dry_run=True)
                show_dry_run(out, name, res, as_json=as_json)
                return
            with progress(err, f"up {name}", quiet=as_json) as reporter:
                res = workflows.up(
                    inv, cloud=cloud, user_data=render, reporter=reporter, until=stop
                )
            if as_json:
                emit_json(result_json(name, res, dry_run=False))
                return
            if not res.actions:
                out.print(f"cluster {name} is complete; nothing to create")
            for line in res.created:
                out.print(f"created {escape(line)}", highlight=False)
            for line in res.notes:
                out.print(escape(line), highlight=False)
            if res.observed:
                out.print(nodes_table(res.observed))

    @app.command()
    def scale(
        workers: Annotated[
            int, typer.Option("--workers", "-w", help="Number of workers wanted.", min=0)
        ],
        inventory: InventoryOpt = Path("inventory.toml"),
        dry_run: DryRunOpt = False,
        as_json: JsonOpt = False,
        yes: YesOpt = False,
    ) -> None:
        """Add workers, or remove the highest-numbered ones (after a graceful decommission)."""
        inv = load(inventory)
        out, err = Console(), Console(stderr=True)
        name = inv.cluster.name
        with session(name):
            cloud = cluster_cloud(inv)
            user_data = user_data_renderer(inv)
            # The preview serves only the dry run and the question: with --yes the real
            # run alone observes and checks the cloud, once.
            if dry_run or not yes:
                preview = workflows.scale(
                    inv, workers=workers, cloud=cloud, user_data=user_data, dry_run=True
                )
                if dry_run:
                    show_dry_run(out, name, preview, as_json=as_json)
                    return
                removing = [a for a in preview.actions if isinstance(a, P.Decommission)]
                if removing:
                    confirm(f"Remove {', '.join(removing[0].names)}?")
            with progress(err, f"scale {name}", quiet=as_json) as reporter:
                res = workflows.scale(
                    inv, workers=workers, cloud=cloud, user_data=user_data, reporter=reporter
                )
            if as_json:
                emit_json(result_json(name, res, dry_run=False))
                return
            if not res.actions:
                out.print(f"cluster {name} already has {workers} worker(s)")
            for line in res.created:
                out.print(f"created {escape(line)}", highlight=False)
            for line in res.deleted:
                out.print(f"deleted {escape(line)}", highlight=False)

    @app.command()
    def down(
        inventory: InventoryOpt = Path("inventory.toml"),
        yes: YesOpt = False,
        dry_run: DryRunOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Delete every resource that carries the cluster's identity. Idempotent."""
        inv = load(inventory)
        out, err = Console(), Console(stderr=True)
        name = inv.cluster.name
        with session(name):
            cloud = cluster_cloud(inv)
            # As in scale: with --yes the real run alone observes the cloud.
            if dry_run or not yes:
                preview = workflows.down(inv, cloud=cloud, dry_run=True)
                if dry_run or not preview.actions:
                    if as_json:
                        emit_json(result_json(name, preview, dry_run=dry_run))
                    elif not preview.actions:
                        out.print(f"nothing left of cluster {name}")
                    else:
                        print_plan(out, preview)
                    return
                out.print(escape(P.describe(preview.actions)), highlight=False, soft_wrap=True)
                confirm(f"Delete cluster {name}?")
            with progress(err, f"down {name}", quiet=as_json) as reporter:
                res = workflows.down(inv, cloud=cloud, reporter=reporter)
            if as_json:
                emit_json(result_json(name, res, dry_run=False))
                return
            if not res.actions:
                out.print(f"nothing left of cluster {name}")
            for line in res.deleted:
                out.print(f"deleted {escape(line)}", highlight=False)

    @app.command()
    def status(
        inventory: InventoryOpt = Path("inventory.toml"),
        as_json: JsonOpt = False,
    ) -> None:
        """The cluster's nodes: name, role, state, IPs, flavor, age."""
        inv = load(inventory)
        name = inv.cluster.name
        with session(name):
            observed = workflows.status(cluster_cloud(inv))
        if as_json:
            emit_json(
                {
                    "cluster": name,
                    "nodes": [n.to_json() for n in observed.nodes],
                    "floating_ip": observed.attached_ip,
                    "exists": not observed.empty,
                }
            )
            return
        out = Console()
        if observed.empty:
            out.print(f"cluster {name} does not exist")
            return
        out.print(nodes_table(observed))
