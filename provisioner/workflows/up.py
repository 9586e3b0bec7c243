"""`up`: observe -> plan -> preflight (a dry run stops here) -> execute -> hand over to the
SSH stage."""

from __future__ import annotations

from pathlib import Path

from provisioner import plan as P
from provisioner.baked import image_note
from provisioner.inventory import Inventory, memory_mib
from provisioner.keys import config_dir
from provisioner.workflows.context import Hooks, Reporter, Result, Run, Settings, UserData
from provisioner.workflows.executor import converge, execute
from provisioner.workflows.guard import guard
from provisioner.workflows.planned import planned
from provisioner.workflows.ports import Cloud


def up(
    inv: Inventory,
    *,
    cloud: Cloud,
    user_data: UserData,
    reporter: Reporter | None = None,
    hooks: Hooks | None = None,
    settings: Settings | None = None,
    key_dir: Path | None = None,
    desired: P.Desired | None = None,
    dry_run: bool = False,
    until: str = "all",
) -> Result:
    """Create what is missing until every server is ACTIVE and the floating IP is on the
    master; then (unless until == "servers") hand over to the SSH stage hook."""
    reporter = reporter or Reporter()
    # `desired` given: a deployment that is not the inventory's cluster (an image builder).
    desired = desired or P.desired_from_inventory(inv)
    key_dir = key_dir or config_dir(desired.cluster)
    reporter.step(f"looking at cluster {desired.cluster}")
    result, resolved = planned(desired, cloud=cloud, key_dir=key_dir, user_data=user_data,
                               plan=P.plan_up, dry_run=dry_run)  # fmt: skip
    if resolved is not None:
        limits = inv.spark.limits
        result.notes += P.memory_notes(
            master=resolved.flavors.get(desired.master_flavor),
            worker=resolved.flavors.get(desired.worker_flavor),
            workers=desired.workers,
            users=len(inv.jupyterhub.users),
            driver_memory=(limits.driver_memory, memory_mib(limits.driver_memory)),
            executor_memory=(limits.executor_memory, memory_mib(limits.executor_memory)),
        )
    sg = result.observed.security_group if result.observed else None
    if sg is not None and result.observed and result.observed.foreign_rules:
        # never deleted (someone opened them on purpose), but never silently kept either
        result.notes.append(
            f"security group {sg.name} also has rules sparkstack did not make, left as "
            f"they are: {'; '.join(result.observed.foreign_rules)}"
        )
    if dry_run:
        return result
    assert resolved is not None
    note = image_note(resolved.image, inv)
    if note:
        reporter.step(note)
        result.notes.append(note)
    run = Run.create(
        inv, cloud=cloud, desired=desired, result=result, key_dir=key_dir, reporter=reporter,
        settings=settings, hooks=hooks, resolved=resolved, user_data=user_data,
        watch=[P.server_name(desired.cluster, r, i) for r, i in desired.wanted()],
    )  # fmt: skip
    with guard(verb="up", cluster=desired.cluster):
        execute(result.actions, run)
        if not run.converged:  # nothing to create: the servers must still all be ACTIVE
            converge(run, [])
        result.observed = run.after()
        reporter.step("every server is ACTIVE and the floating IP is attached")
        if until != "servers":
            run.hooks.after_servers_active(result.observed)
    return result
