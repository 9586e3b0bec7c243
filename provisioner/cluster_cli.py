"""`sparkstack up|scale|down|status`: parse, call a workflow, print the outcome.

Progress goes to stderr (live on a terminal), results to stdout (a table, or JSON with
--json), details to a log file per cluster whose path is printed when something fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from provisioner import plan as P
from provisioner import workflows
from provisioner.errors import SparkstackError, UserInputError

log = logging.getLogger(__name__)

InventoryOpt = Annotated[
    Path,
    typer.Option(
        "--inventory",
        "-i",
        help="Inventory file describing the cluster.",
        envvar="SPARKSTACK_INVENTORY",
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan and check the cloud; change nothing.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
YesOpt = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Do not ask before deleting.", envvar="SPARKSTACK_YES"),
]


class Until(str, Enum):
    servers = "servers"
    all = "all"


@contextlib.contextmanager
def _session(cluster: str) -> Iterator[Path]:
    """A log file for this cluster for the duration of one command; on failure the
    error's hint points at it."""
    path = workflows.state_dir(cluster) / "sparkstack.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    )
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    handler.setLevel(logging.DEBUG)
    for noisy in ("urllib3", "keystoneauth", "stevedore", "openstack.config"):
        logging.getLogger(noisy).setLevel(logging.INFO)
    root.addHandler(handler)
    log.info("sparkstack %s", " ".join(sys.argv[1:]))
    try:
        yield path
    except SparkstackError as exc:
        log.error("%s", exc.render())
        exc.hint = f"{exc.hint}\ndetails: {path}" if exc.hint else f"details: {path}"
        raise
    except KeyboardInterrupt:
        log.error("interrupted")
        raise
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def _load(path: Path) -> Any:
    from provisioner.inventory import load_inventory

    return load_inventory(path)


def _cloud(inv: Any) -> Any:
    from provisioner.cloud import ClusterCloud, connect

    return ClusterCloud(connect(inv.cluster.cloud or ""), cluster=inv.cluster.name)


def _user_data(inv: Any) -> workflows.UserData:
    def render(role: str, master_ip: str) -> str:
        from provisioner.render import render_cloud_init

        return render_cloud_init(inv, role=role, master_ip=master_ip)

    return render


def _age(created: str) -> str:
    if not created:
        return ""
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created
    secs = int((datetime.now(timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{max(secs, 0)}s"


def _nodes_table(observed: P.Observed) -> Group:
    """The nodes as a table that fits 80 columns; Nova's fault texts follow it, unwrapped."""
    table = Table(
        title=f"cluster {observed.cluster}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("name", "role", "state", "fixed IP", "floating IP", "flavor", "age"):
        table.add_column(col, no_wrap=True)
    nodes = sorted(observed.nodes, key=lambda n: (n.role != P.MASTER, n.index))
    for n in nodes:
        age = _age(n.created)
        table.add_row(n.name, n.role, n.status, n.fixed_ip, n.floating_ip, n.flavor, age)
    faults = [Text(f"{n.name}: {n.fault}") for n in nodes if n.fault]
    return Group(table, *faults)


def _print_plan(out: Console, actions: list[P.Action], problems: list[str]) -> None:
    out.print("plan:", highlight=False)
    out.print(escape(P.describe(actions)), highlight=False, soft_wrap=True)
    if problems:
        out.print("[red]preflight problems:[/]")
        for p in problems:
            out.print(f"  - {escape(p)}", highlight=False, soft_wrap=True)


def _emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def _result_json(name: str, res: workflows.Result, *, dry_run: bool) -> dict[str, Any]:
    return {
        "cluster": name,
        "dry_run": dry_run,
        "plan": P.to_json(res.actions),
        "problems": res.problems,
        "created": res.created,
        "deleted": res.deleted,
        "notes": res.notes,
        "nodes": [n.to_json() for n in res.observed.nodes] if res.observed else [],
    }


def _show_dry_run(out: Console, name: str, res: workflows.Result, *, as_json: bool) -> None:
    """Print the plan (or its JSON); a plan with problems still ends in the refusal, exit 2."""
    if as_json:
        _emit_json(_result_json(name, res, dry_run=True))
    else:
        _print_plan(out, res.actions, res.problems)
    if res.problems:
        raise workflows.refusal(res.problems, name)


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
        inv = _load(inventory)
        out, err = Console(), Console(stderr=True)
        name = inv.cluster.name
        with _session(name):
            cloud = _cloud(inv)
            stop = "servers" if no_ssh else until.value
            if dry_run:
                res = workflows.up(inv, cloud=cloud, user_data=_user_data(inv), dry_run=True)
                _show_dry_run(out, name, res, as_json=as_json)
                return
            with _progress(err, f"up {name}", quiet=as_json) as reporter:
                res = workflows.up(
                    inv, cloud=cloud, user_data=_user_data(inv), reporter=reporter, until=stop
                )
            if as_json:
                _emit_json(_result_json(name, res, dry_run=False))
                return
            if not res.actions:
                out.print(f"cluster {name} is complete; nothing to create")
            for line in res.created:
                out.print(f"created {escape(line)}", highlight=False)
            for line in res.notes:
                out.print(escape(line), highlight=False)
            if res.observed:
                out.print(_nodes_table(res.observed))

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
        inv = _load(inventory)
        out, err = Console(), Console(stderr=True)
        name = inv.cluster.name
        with _session(name):
            cloud = _cloud(inv)
            user_data = _user_data(inv)
            # The preview serves only the dry run and the question: with --yes the real
            # run alone observes and checks the cloud, once.
            if dry_run or not yes:
                preview = workflows.scale(
                    inv, workers=workers, cloud=cloud, user_data=user_data, dry_run=True
                )
                if dry_run:
                    _show_dry_run(out, name, preview, as_json=as_json)
                    return
                removing = [a for a in preview.actions if isinstance(a, P.Decommission)]
                if removing:
                    _confirm(f"Remove {', '.join(removing[0].names)}?")
            with _progress(err, f"scale {name}", quiet=as_json) as reporter:
                res = workflows.scale(
                    inv, workers=workers, cloud=cloud, user_data=user_data, reporter=reporter
                )
            if as_json:
                _emit_json(_result_json(name, res, dry_run=False))
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
        inv = _load(inventory)
        out, err = Console(), Console(stderr=True)
        name = inv.cluster.name
        with _session(name):
            cloud = _cloud(inv)
            # As in scale: with --yes the real run alone observes the cloud.
            if dry_run or not yes:
                preview = workflows.down(inv, cloud=cloud, dry_run=True)
                if dry_run or not preview.actions:
                    if as_json:
                        _emit_json(_result_json(name, preview, dry_run=dry_run))
                    elif not preview.actions:
                        out.print(f"nothing left of cluster {name}")
                    else:
                        _print_plan(out, preview.actions, [])
                    return
                out.print(escape(P.describe(preview.actions)), highlight=False, soft_wrap=True)
                _confirm(f"Delete cluster {name}?")
            with _progress(err, f"down {name}", quiet=as_json) as reporter:
                res = workflows.down(inv, cloud=cloud, reporter=reporter)
            if as_json:
                _emit_json(_result_json(name, res, dry_run=False))
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
        inv = _load(inventory)
        name = inv.cluster.name
        with _session(name):
            observed = workflows.status(inv, cloud=_cloud(inv))
        if as_json:
            _emit_json(
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
        out.print(_nodes_table(observed))


def _confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise UserInputError(
            "refusing to delete without confirmation", hint="pass --yes to confirm"
        )
    if not typer.confirm(question, default=False):
        raise typer.Abort()


@contextlib.contextmanager
def _progress(err: Console, title: str, *, quiet: bool) -> Iterator[workflows.Reporter]:
    if quiet:
        yield workflows.Reporter()
        return
    from provisioner.progress import LiveProgress

    with LiveProgress(err, title=title) as live:
        yield live
