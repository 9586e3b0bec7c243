"""`down`: delete everything that carries the cluster's identity, servers first (and wait
until they are gone), then floating IP, port, security group, server group, keypair, and
the private key generated for it. Before the first deletion, the `backup` hook (the hub
users' homes, see workflows/backup.py) runs: if it fails or is interrupted, nothing is
deleted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from provisioner import plan as P
from provisioner.errors import Interrupted
from provisioner.interrupts import interrupted, signum_of
from provisioner.inventory import Inventory
from provisioner.keys import config_dir, remove_cluster_files
from provisioner.workflows.context import Reporter, Result, Run, Settings
from provisioner.workflows.executor import execute
from provisioner.workflows.guard import guard
from provisioner.workflows.lookalikes import left, separate
from provisioner.workflows.ports import Cloud

# Saves what must outlive the servers; its lines go to the result's notes.
Backup = Callable[[P.Observed], list[str]]


def down(
    inv: Inventory,
    *,
    cloud: Cloud,
    reporter: Reporter | None = None,
    settings: Settings | None = None,
    dry_run: bool = False,
    key_dir: Path | None = None,
    desired: P.Desired | None = None,
    backup: Backup | None = None,
) -> Result:
    # `desired` given: a deployment that is not the inventory's cluster (an image builder).
    desired = desired or P.desired_from_inventory(inv)
    key_dir = key_dir or config_dir(desired.cluster)
    observed, lookalikes = separate(desired, cloud.observe(), key_dir)
    actions = P.plan_down(desired, observed)
    result = Result(actions=actions, observed=observed, notes=left(lookalikes, desired.cluster))
    stack = observed.stack
    if stack:
        result.notes.append(
            f"cluster {desired.cluster} was made by Heat stack {stack}: `down` deletes the "
            "stack (Heat removes what it made), then anything of the cluster left"
        )
    if dry_run:
        if backup is not None and (actions or stack):
            preview = getattr(backup, "preview", None)
            result.notes.append(preview(observed) if preview else "a backup would be made first")
        return result
    if backup is not None and (actions or stack):
        result.notes += _backed_up(backup, observed, desired.cluster)
    run = Run.create(inv, cloud=cloud, desired=desired, result=result, key_dir=key_dir,
                     reporter=reporter, settings=settings)  # fmt: skip
    with guard(verb="down", cluster=desired.cluster):
        if stack:
            # Through Heat, not resource by resource: a stack whose servers were deleted
            # under it would stay behind, pointing at nothing.
            run.reporter.step(f"deleting Heat stack {stack} and waiting for it")
            cloud.delete_stack(stack)
            result.deleted.append(f"Heat stack {stack}")
            observed, _ = separate(desired, cloud.observe(), key_dir)
            actions = P.plan_down(desired, observed)
        if actions:
            execute(actions, run)
        # The cluster's credentials and recorded host keys go with it (even when only they
        # are left), last: until its keypair is gone, its key is what proves it the
        # cluster's. A key named in the inventory is never among them.
        result.deleted += [f"local file {p}" for p in remove_cluster_files(key_dir)]
    return result


def _backed_up(backup: Backup, observed: P.Observed, cluster: str) -> list[str]:
    """The backup's lines; a Ctrl-C during it stops `down` with nothing deleted (its own
    failures say so themselves)."""
    try:
        return backup(observed)
    except KeyboardInterrupt as exc:
        signum = signum_of(exc)
        raise Interrupted(
            f"down {interrupted(signum)} during the backup of the hub users' homes: nothing "
            f"was deleted and no archive was left", step="backup", signum=signum,
            hint=f"run `sparkstack down` again to delete cluster {cluster}",
        ) from None
