"""What every command that works on a cluster shares: the options, one log file per
command, loading the inventory, and connecting (openstack is imported only here, lazily)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from provisioner.errors import Interrupted, SparkstackError, UnexpectedError, UserInputError
from provisioner.interrupts import checkpoint, interrupted, signum_of
from provisioner.keys import state_dir
from provisioner.workflows import UserData

if TYPE_CHECKING:  # imported where used: commands that need neither start faster
    from provisioner.cloud import ClusterCloud
    from provisioner.inventory import Inventory
    from provisioner.render import Role

log = logging.getLogger(__name__)

# Where every command looks for the inventory unless told (-i, $SPARKSTACK_INVENTORY).
DEFAULT_INVENTORY = Path("inventory.toml")
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


def is_cli_exit(exc: BaseException) -> bool:
    """typer's and click's own ways out (Exit, Abort, usage errors), which are not bugs.
    typer vendors its own click, so match the interface, not a class of one or the other."""
    if isinstance(exc, typer.Exit | typer.Abort):
        return True
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


@dataclass
class Session:
    """One command's log file, and the state of the cluster if it were stopped now: the
    command moves it on as it goes (before an apply nothing was changed; an apply's own
    guard says what it leaves; after it, the outcome)."""

    log: Path
    state: str


@contextlib.contextmanager
def session(cluster: str) -> Iterator[Session]:
    """A log file for this cluster for the duration of one command; on failure the
    error's hint points at it, a bug becomes "unexpected error, please report", and an
    interruption a message with the session's state."""
    path = state_dir(cluster) / "sparkstack.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    )
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    handler.setLevel(logging.DEBUG)
    # websockets logs every request header at DEBUG, the hub token's Authorization too
    for noisy in ("urllib3", "keystoneauth", "stevedore", "openstack.config", "paramiko",
                  "websockets"):
        logging.getLogger(noisy).setLevel(logging.INFO)
    root.addHandler(handler)
    log.info("sparkstack %s", " ".join(sys.argv[1:]))
    current = Session(
        log=path, state=f"before anything was changed: cluster {cluster} is as it was"
    )
    try:
        checkpoint()
        yield current
        checkpoint()
    except SparkstackError as exc:
        log.error("%s", exc.render())
        exc.hint = f"{exc.hint}\ndetails: {path}" if exc.hint else f"details: {path}"
        raise
    except KeyboardInterrupt as exc:
        log.error("interrupted %s", current.state)
        signum = signum_of(exc)
        raise Interrupted(
            f"{interrupted(signum)} {current.state}", signum=signum, hint=f"details: {path}"
        ) from None
    except Exception as exc:
        if is_cli_exit(exc):
            raise
        log.exception("unexpected error")
        raise UnexpectedError(f"{type(exc).__name__}: {exc}", hint=f"details: {path}") from exc
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


# One cluster per CI pipeline run from one inventory file: the run's id names the cluster.
CLUSTER_NAME_ENV = "SPARKSTACK_CLUSTER_NAME"


def load(path: Path) -> Inventory:
    from provisioner.inventory import load_inventory

    name = os.environ.get(CLUSTER_NAME_ENV) or None
    try:
        return load_inventory(path, cluster_name=name)
    except UserInputError as exc:
        if name is not None and "cluster.name" in exc.message:
            exc.hint = f"cluster.name comes from ${CLUSTER_NAME_ENV} ({name!r})"
        raise


# Per-request timeout and how long transient failures are retried, in seconds: for a
# slow cloud (longer) or a pipeline that must fail fast on an unreachable one (shorter).
API_TIMEOUT_ENV = "SPARKSTACK_API_TIMEOUT"
API_RETRY_FOR_ENV = "SPARKSTACK_API_RETRY_FOR"


def seconds_from_env(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise UserInputError(f"${name}: must be a number of seconds in (0, 86400], got {raw!r}")
    return value


def cluster_cloud(inv: Inventory) -> ClusterCloud:
    from provisioner.cloud import ClusterCloud, connect

    conn = connect(inv.cluster.cloud or "", api_timeout=seconds_from_env(API_TIMEOUT_ENV))
    retry_for = seconds_from_env(API_RETRY_FOR_ENV)
    if retry_for is None:
        return ClusterCloud(conn, cluster=inv.cluster.name)
    return ClusterCloud(conn, cluster=inv.cluster.name, retry_for=retry_for)


def user_data_renderer(inv: Inventory) -> UserData:
    """Renders each role's user_data. The Spark tarball's sha512 is resolved at the first
    render, which preflight does: a checksum source that cannot be reached is then one of
    preflight's problems, before anything exists. Resolved once per command."""
    known: list[Any] = []

    def render(role: str, master_ip: str) -> str:
        from provisioner.checksums import spark_hash
        from provisioner.render import render_cloud_init

        if not known:
            try:
                known.append(spark_hash(inv.spark))
            except UserInputError as exc:
                known.append(exc)
            if not isinstance(known[0], Exception):
                log.info("spark tarball sha512 %s", known[0].source)
        if isinstance(known[0], Exception):
            raise known[0]
        # the executor renders only the roles its plan creates servers for
        return render_cloud_init(inv, role=cast("Role", role), master_ip=master_ip,
                                 spark_hash=known[0], for_api=True)  # fmt: skip

    return render


def confirm(question: str) -> None:
    if not sys.stdin.isatty():
        raise UserInputError(
            "refusing to delete without confirmation", hint="pass --yes to confirm"
        )
    if not typer.confirm(question, default=False):
        raise typer.Abort()
