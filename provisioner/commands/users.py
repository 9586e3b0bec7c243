"""`sparkstack users list|reset`: the hub's users on the master, and a new password for one,
over one SSH login to the master (as `sparkstack hub` reaches it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from provisioner import plan as P
from provisioner.commands.common import (
    DEFAULT_INVENTORY,
    InventoryOpt,
    JsonOpt,
    cluster_cloud,
    load,
    session,
)
from provisioner.commands.output import emit_json, on_terminal, progress
from provisioner.errors import UserInputError

if TYPE_CHECKING:  # imported where used: commands that need neither start faster
    from provisioner.hub import HubSettings, Shell
    from provisioner.inventory import Inventory
    from provisioner.workflows.users import Reset

NameArg = Annotated[str, typer.Argument(help="The hub user (one of jupyterhub.users).")]


def register(app: typer.Typer) -> None:
    users_app = typer.Typer(
        no_args_is_help=True,
        help="The hub's users: list them as the master knows them (users list), give one "
        "a new password (users reset).",
    )
    app.add_typer(users_app, name="users")
    users_app.command("list")(list_)
    users_app.command("reset")(reset)


@contextlib.contextmanager
def _master(inv: Inventory, title: str, *, quiet: bool) -> Iterator[tuple[Shell, HubSettings]]:
    """A root shell on the cluster's master and its hub settings, progress on stderr."""
    from provisioner.hub import HubSettings, Sudo
    from provisioner.workflows.ssh_stage import Access, bring_up

    name = inv.cluster.name
    cloud = cluster_cloud(inv)
    # the servers alone (one tagged list), not the whole cluster's resources
    master = P.Observed(cluster=name, nodes=tuple(cloud.list_nodes())).master()
    if master is None:
        raise UserInputError(f"cluster {name} has no master", hint="run `sparkstack up` first")
    settings = HubSettings.from_inventory(
        inv,
        master_ip=master.fixed_ip,
        floating_ips=[master.floating_ip] if master.floating_ip else [],
    )
    err = Console(stderr=True, emoji=False)
    with progress(err, title, quiet=quiet) as reporter:
        alone = P.Observed(cluster=name, nodes=(master,))
        nodes = bring_up(alone, cloud=cloud, access=Access.from_inventory(inv), reporter=reporter)
        try:
            yield Sudo(nodes.master), settings
        finally:
            nodes.close()


def reset(name: NameArg, inventory: InventoryOpt = DEFAULT_INVENTORY,
          as_json: JsonOpt = False) -> None:  # fmt: skip
    """Give a hub user a new random password: set on the master, kept in the cluster's
    credentials file, and printed only when stdout is a terminal."""
    from provisioner.workflows.users import check_hub_user, reset_password

    inv = load(inventory)
    check_hub_user(inv, name)  # before any request to the cloud
    out = Console(emoji=False)
    cluster = inv.cluster.name
    with session(cluster) as current:
        with _master(inv, f"users reset {name}", quiet=as_json) as (shell, settings):
            current.state = (
                f"while setting {name}'s new password: the old one may still hold; "
                "run the same command again"
            )
            done = reset_password(shell, inv=inv, settings=settings, name=name)
        current.state = f"after {name}'s password was reset; it is in {done.credentials}"
    if as_json:  # never the password: JSON is for files and pipes
        emit_json({"cluster": cluster, "user": name, "credentials_file": str(done.credentials)})
        return
    print_reset(out, done)


def print_reset(out: Console, done: Reset) -> None:
    """The new password on a terminal; elsewhere (a pipe, a file, a CI log) only where
    it is kept."""
    who, where = escape(done.user), escape(str(done.credentials))
    if on_terminal(out):
        out.print(f"{who}'s new password: {escape(done.password)}", highlight=False)
        out.print(f"  kept in {where}", highlight=False, soft_wrap=True)
    else:
        out.print(f"{who}'s new password is in {where} (printed only on a terminal)",
                  highlight=False, soft_wrap=True)  # fmt: skip


def list_(inventory: InventoryOpt = DEFAULT_INVENTORY, as_json: JsonOpt = False) -> None:
    """The inventory's hub users and the former ones the master remembers: role, whether
    the account exists, processes running as it, and whether the credentials file holds
    a password for it (never the password)."""
    from provisioner.workflows.users import list_users

    inv = load(inventory)
    cluster = inv.cluster.name
    with session(cluster), _master(inv, "users list", quiet=as_json) as (shell, settings):
        users = list_users(shell, inv=inv, settings=settings)
    if as_json:
        emit_json({"cluster": cluster, "users": [u.to_json() for u in users]})
        return
    table = Table(title=f"hub users of cluster {cluster}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)  # fmt: skip
    for col in ("user", "role", "account", "processes", "password in credentials file"):
        table.add_column(col, no_wrap=True)
    for u in users:
        table.add_row(u.name, u.role, "yes" if u.account else "no", str(u.processes),
                      "yes" if u.password_kept else "no")  # fmt: skip
    Console(emoji=False).print(table)
