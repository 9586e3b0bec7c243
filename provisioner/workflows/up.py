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
    builder = desired is not None  # no hub, no Spark: the memory notes are not its
    desired = desired or P.desired_from_inventory(inv)
    key_dir = key_dir or config_dir(desired.cluster)
    reporter.step(f"looking at cluster {desired.cluster}")
    result, resolved = planned(desired, cloud=cloud, key_dir=key_dir, user_data=user_data,
                               plan=P.plan_up, dry_run=dry_run)  # fmt: skip
    result.notes += _plan_notes(inv, desired, result, None if builder else resolved)
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


def _plan_notes(
    inv: Inventory, desired: P.Desired, result: Result, resolved: P.Resolved | None
) -> list[str]:
    """What the dry run and the apply say beside the plan: memory the flavors cannot hold
    (not for an image builder, which runs neither hub nor Spark: `resolved` None), and
    the security group's rules that someone else added."""
    notes: list[str] = []
    if resolved is not None:
        limits = inv.spark.limits
        master_flavor = resolved.flavors.get(desired.master_flavor)
        users = len(inv.jupyterhub.users)
        driver_mib = memory_mib(limits.driver_memory)
        notes += P.memory_notes(
            master=master_flavor,
            worker=resolved.flavors.get(desired.worker_flavor),
            workers=desired.workers,
            users=users,
            driver_memory=(limits.driver_memory, driver_mib),
            executor_memory=(limits.executor_memory, memory_mib(limits.executor_memory)),
        )
        note = P.limits_note(master_flavor, users=users, driver_mib=driver_mib,
                             memory_mib=desired.user_memory_mib, cpu=desired.user_cpu)
        notes += [note] if note else []
    observed = result.observed
    hub = inv.jupyterhub
    if hub.authenticator == "oidc" and resolved is not None:
        from provisioner.hub.config import hub_url
        from provisioner.hub.oidc import callback_note

        master = observed.master() if observed is not None else None
        address = (master.floating_ip if master is not None else None) or inv.network.floating_ip
        domain = hub.tls.domain if hub.tls.mode == "acme" else None
        root = hub_url(address=address or "", port=hub.port, domain=domain) if (
            address or domain) else None
        notes.append(callback_note(hub.oidc, hub_root=root))
    if observed is not None and observed.security_group and observed.foreign_rules:
        # never deleted (someone opened them on purpose), but never silently kept either
        notes.append(
            f"security group {observed.security_group.name} also has rules sparkstack did "
            f"not make, left as they are: {'; '.join(observed.foreign_rules)}"
        )
    return notes
