"""`sparkstack up|scale|down|status`: parse, call a workflow, print the outcome."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

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
    fetch_sources,
    nodes_table,
    print_plan,
    progress,
    result_json,
    show_dry_run,
    spark_table,
    summarised,
)

log = logging.getLogger(__name__)


class Until(str, Enum):
    servers = "servers"
    ssh = "ssh"
    all = "all"


class _NodeStage:
    """The hook that takes ACTIVE servers on to booted nodes over SSH and, with --until
    all, to a running hub. Imported only when a command goes past `--until servers`: it
    loads paramiko."""

    def __init__(self, inv: Any, cloud: Any, reporter: workflows.Reporter, *, hub: bool) -> None:
        self.inv, self.cloud, self.reporter, self.hub = inv, cloud, reporter, hub
        self.outcome: Any = None  # the hub stage's HubOutcome, for the closing lines

    def __call__(self, observed: P.Observed) -> None:
        from provisioner.workflows.ssh_stage import Access, bring_up

        self.reporter.step("waiting for every node over SSH (host keys, login, boot)")
        access = Access.from_inventory(self.inv)
        nodes = bring_up(observed, cloud=self.cloud, access=access, reporter=self.reporter)
        try:
            self.reporter.step(f"all {len(observed.nodes)} node(s) booted and reachable over SSH")
            done = self._hub_and_daemons(nodes, observed) if self.hub else None
            spark_stage(nodes, observed, inv=self.inv, reporter=self.reporter, done=done)
        finally:
            nodes.close()

    def _hub_and_daemons(self, nodes: Any, observed: P.Observed) -> dict[str, str]:
        """The hub installed while the Spark daemons get the secret and start: they need
        nothing from each other (on a cloud, different machines do the work), and the
        hub's users join the secret's group once both are done (spark_stage)."""
        import concurrent.futures as cf

        from provisioner.workflows.hub_stage import install_hub
        from provisioner.workflows.spark_auth import ensure_spark_auth

        with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spark") as pool:
            # users=None: hub users' group memberships wait until the hub made them
            daemons = pool.submit(ensure_spark_auth, nodes, users=None)
            try:
                self.outcome = install_hub(
                    nodes, inv=self.inv, observed=observed, reporter=self.reporter
                )
            except BaseException:
                daemons.exception()  # the hub's failure is the one to report
                raise
            return daemons.result()

    def hooks(self) -> workflows.Hooks:
        return workflows.Hooks(after_servers_active=self)


def spark_stage(nodes: Any, observed: P.Observed, *, inv: Any, reporter: Any,
                done: dict[str, str] | None = None) -> None:  # fmt: skip
    """The cluster's secret on every node and its daemons started with it (`done`: that
    happened already, beside the hub), then every worker ALIVE. After the hub: its users
    must exist to join the group that reads the secret."""
    from provisioner.workflows.spark_auth import client_group, ensure_spark_auth, wait_workers

    users = list(inv.jupyterhub.users)
    if done is None:
        done = ensure_spark_auth(nodes, users=users)
    else:
        client_group(nodes.master, users)
    for what in ("started", "restarted"):
        names = [name for name, did in done.items() if did == what]
        if names:
            reporter.step(f"Spark authentication on; {what} {', '.join(names)}")
    master = observed.master()
    workers = {w.fixed_ip for w in observed.workers()}
    if master is not None and workers:
        reporter.step(f"waiting for {len(workers)} worker(s) to register")
        wait_workers(nodes, master_ip=master.fixed_ip, workers=workers, timeout=300)
        reporter.step("every worker is ALIVE on the Spark master")


def warn(err: Console, text: str) -> None:
    log.warning("%s", text)
    err.print(f"[bold yellow]WARNING:[/] {escape(text)}", highlight=False, soft_wrap=True)


def print_hub(out: Console, inv: Any, outcome: Any) -> None:
    out.print(f"hub: {outcome.url}", highlight=False)
    out.print(f"  certificate SHA256 {outcome.fingerprint}", highlight=False, soft_wrap=True)
    admins = [a for a in inv.jupyterhub.admins if a in outcome.new_passwords]
    for name in admins[:1]:
        # printed once, here, when the account is made; kept only in the 0600 file
        out.print(f"  admin {name}, initial password: {outcome.new_passwords[name]}",
                  highlight=False)  # fmt: skip
    out.print(f"  every user's initial password: {outcome.credentials}", highlight=False)
    out.print(
        "  Spark master UI: http://<master fixed IP>:8080 from inside the cluster's network",
        highlight=False,
        soft_wrap=True,
    )


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
                "floating IP attached (no SSH stage); 'ssh' = every node booted and "
                "reachable over SSH with pinned host keys; 'all' = and the hub running.",
                envvar="SPARKSTACK_UNTIL",
            ),
        ] = Until.all,
        no_ssh: Annotated[bool, typer.Option("--no-ssh", help="Same as --until servers.")] = False,
    ) -> None:
        """Create the cluster, or complete a partial one. A second run creates nothing."""
        inv = load(inventory)
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
                stage = _NodeStage(inv, cloud, reporter, hub=stop == "all")
                res = workflows.up(
                    inv, cloud=cloud, user_data=render, reporter=reporter, hooks=stage.hooks(),
                    until=stop,
                )  # fmt: skip
                current.state = f"after up had finished: cluster {name} is up ({stop})"
            if as_json:
                payload = result_json(name, res, dry_run=False)
                if stage.outcome is not None:
                    payload["hub"] = {
                        "url": stage.outcome.url,
                        "certificate_sha256": stage.outcome.fingerprint,
                        "changed": stage.outcome.changed,
                        "credentials_file": str(stage.outcome.credentials),
                    }
                emit_json(payload)
                return
            if not res.actions:
                out.print(f"cluster {name} is complete; nothing to create")
            for line in summarised(res.created):
                out.print(f"created {escape(line)}", highlight=False)
            for line in res.notes:
                out.print(escape(line), highlight=False)
            if res.observed:
                out.print(nodes_table(res.observed))
            if stage.outcome is not None:
                print_hub(out, inv, stage.outcome)

    @app.command()
    def scale(
        workers: Annotated[
            int, typer.Option("--workers", "-w", help="Number of workers wanted.", min=0)
        ],
        inventory: InventoryOpt = Path("inventory.toml"),
        dry_run: DryRunOpt = False,
        as_json: JsonOpt = False,
        yes: YesOpt = False,
        no_ssh: Annotated[
            bool,
            typer.Option(
                "--no-ssh",
                help="No SSH stage: new workers are not waited for, and removed ones are "
                "deleted at once, without a graceful decommission.",
            ),
        ] = False,
        force: Annotated[
            bool,
            typer.Option(
                "--force",
                help="Remove workers even if their executors have not finished within "
                "workers.decommission_timeout, or if they cannot be reached.",
            ),
        ] = False,
    ) -> None:
        """Add workers, or remove the highest-numbered ones after a graceful decommission:
        their executors finish their running tasks and leave before the servers go."""
        inv = load(inventory)
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
                    hooks = _NodeStage(inv, cloud, reporter, hub=False).hooks()
                    hooks.decommission = drainer
                res = workflows.scale(
                    inv, workers=workers, cloud=cloud, user_data=user_data, reporter=reporter,
                    hooks=hooks,
                )  # fmt: skip
                current.state = f"after scale had finished: cluster {name} has {workers} worker(s)"
            if drainer is not None:
                res.notes.extend(drainer.notes)
            if as_json:
                emit_json(result_json(name, res, dry_run=False))
                return
            if not res.actions:
                out.print(f"cluster {name} already has {workers} worker(s)")
            for line in res.notes:
                out.print(escape(line), highlight=False)
            for line in summarised(res.created):
                out.print(f"created {escape(line)}", highlight=False)
            for line in summarised(res.deleted):
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
        out, err = Console(emoji=False), Console(stderr=True, emoji=False)
        name = inv.cluster.name
        if not dry_run:
            _remove_builder_leftovers(inv, err, quiet=as_json)
        with session(name) as current:
            cloud = cluster_cloud(inv)
            # As in scale: with --yes the real run alone observes the cloud.
            if dry_run or not yes:
                preview = workflows.down(inv, cloud=cloud, dry_run=True)
                if dry_run or not preview.actions:
                    if as_json:
                        emit_json(result_json(name, preview, dry_run=dry_run))
                        return
                    if not preview.actions:
                        out.print(f"nothing left of cluster {name}")
                    else:
                        print_plan(out, preview)
                    for line in preview.notes:  # what only looks like the cluster's
                        out.print(escape(line), highlight=False, soft_wrap=True)
                    return
                out.print(escape(P.describe(preview.actions)), highlight=False, soft_wrap=True)
                confirm(f"Delete cluster {name}?")
            with progress(err, f"down {name}", quiet=as_json) as reporter:
                res = workflows.down(inv, cloud=cloud, reporter=reporter)
                current.state = f"after down had finished: nothing is left of cluster {name}"
            if as_json:
                emit_json(result_json(name, res, dry_run=False))
                return
            if not res.actions:
                out.print(f"nothing left of cluster {name}")
            for line in summarised(res.deleted):
                out.print(f"deleted {escape(line)}", highlight=False)
            for line in res.notes:
                out.print(escape(line), highlight=False, soft_wrap=True)

    @app.command()
    def status(
        inventory: InventoryOpt = Path("inventory.toml"),
        as_json: JsonOpt = False,
        no_ssh: Annotated[
            bool, typer.Option("--no-ssh", help="The cloud's view only (no Spark, no hub).")
        ] = False,
    ) -> None:
        """The cluster's nodes (name, role, state, IPs, flavor, age) and, over SSH to the
        master, each node's Spark state and the hub's."""
        inv = load(inventory)
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


def _remove_builder_leftovers(inv: Any, err: Console, *, quiet: bool) -> None:
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


def _hub_url(inv: Any, observed: P.Observed) -> str:
    master = observed.master()
    address = (master.floating_ip or master.fixed_ip) if master else ""
    host = inv.jupyterhub.tls.domain if getattr(inv.jupyterhub.tls, "domain", "") else address
    port = inv.jupyterhub.port
    return f"https://{host}/" if port == 443 else f"https://{host}:{port}/"
