"""`sparkstack smoke`: prove a live cluster runs a PySpark job through its hub."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from provisioner.commands.common import InventoryOpt, JsonOpt, cluster_cloud, load, session
from provisioner.commands.output import emit_json, progress
from provisioner.errors import RemoteError, UserInputError


def register(app: typer.Typer) -> None:
    @app.command()
    def smoke(
        inventory: InventoryOpt = Path("inventory.toml"),
        as_json: JsonOpt = False,
    ) -> None:
        """Check the cluster as a user sees it: workers ALIVE, the hub over HTTPS, and a
        PySpark job run by a throwaway smoke account. Exit 0 only if every check passes."""
        inv = load(inventory)
        out, err = Console(emoji=False), Console(stderr=True, emoji=False)
        name = inv.cluster.name
        with session(name):
            from provisioner.workflows.smoke import Check
            from provisioner.workflows.smoke import smoke as run_smoke
            from provisioner.workflows.ssh_stage import Access, bring_up

            cloud = cluster_cloud(inv)
            observed = cloud.observe()
            if observed.master() is None:
                raise UserInputError(
                    f"cluster {name} has no master", hint="run `sparkstack up` first"
                )

            def show(check: Check) -> None:
                if as_json:
                    return
                mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]"
                out.print(
                    f"{mark} {check.seconds:6.1f} s  {escape(check.name)}"
                    + (f"  ({escape(check.detail)})" if check.detail and check.ok else ""),
                    highlight=False,
                    soft_wrap=True,
                )
                if not check.ok:
                    out.print(escape(check.detail), highlight=False, soft_wrap=True)

            with progress(err, f"smoke {name}", quiet=as_json) as reporter:
                nodes = bring_up(
                    observed, cloud=cloud, access=Access.from_inventory(inv), reporter=reporter
                )
                try:
                    report = run_smoke(
                        nodes, observed=observed, port=inv.jupyterhub.port, on_check=show
                    )
                finally:
                    nodes.close()
            if as_json:
                emit_json({"cluster": name, **report.to_json()})
            if not report.ok:
                failed = next(c for c in report.checks if not c.ok)
                raise RemoteError(
                    f"smoke test failed: {failed.name}",
                    step="smoke",
                    hint="the lines above say what failed; `sparkstack up` repairs what it can",
                )
