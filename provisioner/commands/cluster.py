"""`sparkstack up|scale|down|status`: parse, call a workflow, print the outcome."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from provisioner import plan as P
from provisioner import workflows
from provisioner.commands.common import (
    DEFAULT_INVENTORY,
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
    fetch_sources,
    hub_json,
    nodes_table,
    print_done,
    print_hub,
    print_plan,
    progress,
    result_json,
    show_dry_run,
    spark_table,
)
from provisioner.workflows.node_stage import NodeStage

if TYPE_CHECKING:
    from provisioner.inventory import Inventory

log = logging.getLogger(__name__)


class Until(str, Enum):
    servers = "servers"
    ssh = "ssh"
    all = "all"


UntilOpt = Annotated[
    Until,
    typer.Option(
        help="Stop after this stage: 'servers' = every server ACTIVE and the "
        "floating IP attached (no SSH stage); 'ssh' = every node booted and "
        "reachable over SSH with pinned host keys; 'all' = and the hub running.",
        envvar="SPARKSTACK_UNTIL",
    ),
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", "-w", help="Number of workers wanted.", min=0)
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Remove workers even if their executors have not finished within "
        "workers.decommission_timeout, or if they cannot be reached.",
    ),
]
# --no-ssh leaves out something different in each command, and its help says what.
UpNoSshOpt = Annotated[bool, typer.Option("--no-ssh", help="Same as --until servers.")]
ScaleNoSshOpt = Annotated[
    bool,
    typer.Option(
        "--no-ssh",
        help="No SSH stage: new workers are not waited for, and removed ones are "
        "deleted at once, without a graceful decommission.",
    ),
]
NoBackupOpt = Annotated[
    bool,
    typer.Option(
        "--no-backup",
        help="Delete without first saving the hub users' homes from the master "
        "(by default they go to an archive under ~/.local/share/sparkstack/<cluster>/backups).",
        envvar="SPARKSTACK_NO_BACKUP",
    ),
]
RestoreOpt = Annotated[
    Optional[Path],  # noqa: UP045 (typer reads the annotation)
    typer.Option(
        "--restore",
        help="After the hub stage, put back the hub users' homes from an archive "
        "`sparkstack down` made (a file the node already has and that is newer stays).",
        exists=True, dir_okay=False, readable=True,
    ),
]
StatusNoSshOpt = Annotated[
    bool, typer.Option("--no-ssh", help="The cloud's view only (no Spark, no hub).")
]


def register(app: typer.Typer) -> None:
    """Add the cluster lifecycle commands to the app, in the order `--help` lists them."""
    for command in (up, scale, down, status):
        app.command()(command)


def up(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    until: UntilOpt = Until.all,
    no_ssh: UpNoSshOpt = False,
    restore: RestoreOpt = None,
) -> None:
    """Create the cluster, or complete a partial one. A second run creates nothing."""
    inv: Inventory = load(inventory)
    backup = _checked_archive(restore, no_ssh=no_ssh or until != Until.all)
    out, err = Console(emoji=False), Console(stderr=True, emoji=False)
    name = inv.cluster.name
    for cidr in inv.network.open_to_everyone():
        warn(err, f"network.allowed_cidrs has {cidr}: SSH (22) and the hub (port "
                  f"{inv.jupyterhub.port}) are open to the whole internet")  # fmt: skip
    with session(name) as current:
        cloud = cluster_cloud(inv)
        render = user_data_renderer(inv)
        stop = "servers" if no_ssh else until.value
        if dry_run:
            res = workflows.up(inv, cloud=cloud, user_data=render, dry_run=True)
            show_dry_run(out, name, res, as_json=as_json, sources=fetch_sources(inv))
            return
        with progress(err, f"up {name}", quiet=as_json) as reporter:
            stage = NodeStage(inv, cloud, reporter, hub=stop == "all")
            res = workflows.up(inv, cloud=cloud, user_data=render, reporter=reporter,
                               hooks=stage.hooks(), until=stop)  # fmt: skip
            current.state = f"after up had finished: cluster {name} is up ({stop})"
            restored = None
            if restore is not None and backup is not None:
                from provisioner.workflows.backup import restore_on_master

                restored = restore_on_master(inv, cloud=cloud, backup=backup, path=restore,
                                             reporter=reporter)  # fmt: skip
        if as_json:
            payload = result_json(name, res, dry_run=False)
            if stage.outcome is not None:
                payload["hub"] = hub_json(stage.outcome)
            if restored is not None:
                payload["restored"] = restored.to_json()
            emit_json(payload)
            return
        if not res.actions:
            out.print(f"cluster {name} is complete; nothing to create")
        print_done(out, "created", res.created)
        print_done(out, "changed", res.changed)
        for line in res.notes:
            out.print(escape(line), highlight=False)
        if res.observed:
            out.print(nodes_table(res.observed))
        if stage.outcome is not None:
            print_hub(out, inv, stage.outcome)
        for line in restored.lines() if restored is not None else []:
            out.print(escape(line), highlight=False, soft_wrap=True)


def _checked_archive(path: Path | None, *, no_ssh: bool) -> Any:
    """The --restore archive checked before anything is created (a user error otherwise)."""
    if path is None:
        return None
    from provisioner.errors import UserInputError
    from provisioner.workflows.backup import check_archive

    if no_ssh:
        raise UserInputError(
            "--restore needs the hub stage", step="restore",
            hint="drop --until/--no-ssh, or restore with a later `up`",
        )  # fmt: skip
    return check_archive(path)


def scale(
    workers: WorkersOpt,
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    yes: YesOpt = False,
    no_ssh: ScaleNoSshOpt = False,
    force: ForceOpt = False,
) -> None:
    """Add workers, or remove the highest-numbered ones after a graceful decommission:
    their executors finish their running tasks and leave before the servers go."""
    inv: Inventory = load(inventory)
    out, err = Console(emoji=False), Console(stderr=True, emoji=False)
    name = inv.cluster.name
    with session(name) as current:
        cloud = cluster_cloud(inv)
        user_data = user_data_renderer(inv)
        # The preview serves only the dry run and the question: with --yes the real
        # run alone observes and checks the cloud, once.
        if dry_run or not yes:
            preview = workflows.scale(
                inv, workers=workers, cloud=cloud, user_data=user_data, dry_run=True
            )
            if dry_run:
                show_dry_run(out, name, preview, as_json=as_json, sources=fetch_sources(inv))
                return
            removing = [a for a in preview.actions if isinstance(a, P.Decommission)]
            if removing:
                confirm(f"Remove {', '.join(removing[0].names)}?")
        with progress(err, f"scale {name}", quiet=as_json) as reporter:
            hooks, drainer = workflows.Hooks(), None
            if not no_ssh:
                from provisioner.workflows.decommission import Decommissioner

                drainer = Decommissioner(inv, cloud, reporter, force=force)
                hooks = NodeStage(inv, cloud, reporter, hub=False).hooks()
                hooks.decommission = drainer
            res = workflows.scale(inv, workers=workers, cloud=cloud, user_data=user_data,
                                  reporter=reporter, hooks=hooks)  # fmt: skip
            current.state = f"after scale had finished: cluster {name} has {workers} worker(s)"
        if drainer is not None:
            res.notes.extend(drainer.notes)
        if as_json:
            emit_json(result_json(name, res, dry_run=False))
            return
        if not (res.actions or res.created or res.deleted):
            out.print(f"cluster {name} already has {workers} worker(s)")
        for line in res.notes:
            out.print(escape(line), highlight=False)
        print_done(out, "created", res.created)
        print_done(out, "deleted", res.deleted)


def down(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    no_backup: NoBackupOpt = False,
) -> None:
    """Delete every resource that carries the cluster's identity. Idempotent. First, the
    hub users' homes are saved to an archive on this machine (unless --no-backup)."""
    inv: Inventory = load(inventory)
    out, err = Console(emoji=False), Console(stderr=True, emoji=False)
    name = inv.cluster.name
    if not dry_run:
        _remove_builder_leftovers(inv, err, quiet=as_json)
    with session(name) as current:
        cloud = cluster_cloud(inv)
        saver = None
        if not no_backup:
            from provisioner.workflows.backup import DownBackup

            saver = DownBackup(inv, cloud)
        # As in scale: with --yes the real run alone observes the cloud.
        if dry_run or not yes:
            preview = workflows.down(inv, cloud=cloud, dry_run=True, backup=saver)
            if dry_run or not preview.actions:
                _print_down_preview(out, name, preview, dry_run=dry_run, as_json=as_json)
                return
            out.print(escape(P.describe(preview.actions)), highlight=False, soft_wrap=True)
            if saver is not None and preview.observed is not None:
                out.print(escape(saver.preview(preview.observed)), highlight=False,
                          soft_wrap=True)  # fmt: skip
            confirm(f"Delete cluster {name}?")
        with progress(err, f"down {name}", quiet=as_json) as reporter:
            if saver is not None:
                saver.reporter = reporter
            res = workflows.down(inv, cloud=cloud, reporter=reporter, backup=saver)
            current.state = f"after down had finished: nothing is left of cluster {name}"
        if as_json:
            payload = result_json(name, res, dry_run=False)
            if saver is not None and saver.saved is not None:
                payload["backup"] = saver.saved.to_json()
            emit_json(payload)
            return
        if not res.actions:
            out.print(f"nothing left of cluster {name}")
        print_done(out, "deleted", res.deleted)
        for line in res.notes:
            out.print(escape(line), highlight=False, soft_wrap=True)


def _print_down_preview(out: Console, name: str, preview: workflows.Result, *, dry_run: bool,
                        as_json: bool) -> None:  # fmt: skip
    """A dry run's plan, or that nothing is left (then there is nothing to ask)."""
    if as_json:
        emit_json(result_json(name, preview, dry_run=dry_run))
        return
    if not preview.actions:
        out.print(f"nothing left of cluster {name}")
    else:
        print_plan(out, preview)
    for line in preview.notes:  # what only looks like the cluster's
        out.print(escape(line), highlight=False, soft_wrap=True)


def status(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    as_json: JsonOpt = False,
    no_ssh: StatusNoSshOpt = False,
) -> None:
    """The cluster's nodes (name, role, state, IPs, flavor, age) and, over SSH to the
    master, each node's Spark state and the hub's."""
    inv: Inventory = load(inventory)
    name = inv.cluster.name
    live = None
    with session(name):
        cloud = cluster_cloud(inv)
        observed = workflows.status(cloud)
        if not no_ssh and observed.master() is not None:
            from provisioner.workflows.live import live_state

            live = live_state(inv, cloud=cloud, observed=observed)
    if as_json:
        payload: dict[str, Any] = {
            "cluster": name,
            "nodes": [n.to_json() for n in observed.nodes],
            "floating_ip": observed.attached_ip,
            "exists": not observed.empty,
        }
        if live is not None:
            for node in payload["nodes"]:
                node["spark"] = live.spark.get(node["name"])
            payload["hub"] = {"state": live.hub, "url": _hub_url(inv, observed)}
            payload["remote_error"] = live.error or None
        emit_json(payload)
        return
    out = Console(emoji=False)
    if observed.empty:
        out.print(f"cluster {name} does not exist")
        return
    out.print(nodes_table(observed))
    if live is not None:
        if live.spark:
            out.print(spark_table(observed, live.spark))
        out.print(f"hub: {live.hub}  {_hub_url(inv, observed)}", highlight=False)
        if live.error:
            out.print(f"[yellow]{escape(live.error)}[/]", highlight=False, soft_wrap=True)


def warn(err: Console, text: str) -> None:
    log.warning("%s", text)
    err.print(f"[bold yellow]WARNING:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _remove_builder_leftovers(inv: Inventory, err: Console, *, quiet: bool) -> None:
    """What an `image build` on this machine left of its builder (it removes it itself
    unless it was killed): its local key marks it, so `down` costs no request otherwise."""
    from provisioner.workflows.image_build import builder_name, clean_up, key_dir_of_builder

    if not key_dir_of_builder(inv.cluster.name).exists():
        return
    from provisioner.commands.image import image_clouds

    builder = builder_name(inv.cluster.name)
    with session(builder), progress(err, f"down {builder}", quiet=quiet) as reporter:
        cloud, images = image_clouds(inv)
        for line in clean_up(inv, builder=cloud, images=images, reporter=reporter):
            reporter.step(f"deleted {line}")


def _hub_url(inv: Inventory, observed: P.Observed) -> str:
    """The URL `up` printed for this cluster's hub."""
    from provisioner.hub.config import hub_url

    master = observed.master()
    address = (master.floating_ip or master.fixed_ip) if master else ""
    return hub_url(address=address, port=inv.jupyterhub.port, domain=inv.jupyterhub.tls.domain)
