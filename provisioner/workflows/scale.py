"""`scale`: add workers from the same template, or remove the highest-numbered ones after
the graceful-decommission hook."""

from __future__ import annotations

from provisioner import plan as P
from provisioner.errors import UserInputError
from provisioner.inventory import Inventory
from provisioner.keys import config_dir
from provisioner.workflows.context import Hooks, Reporter, Result, Run, Settings, UserData
from provisioner.workflows.executor import converge, execute
from provisioner.workflows.guard import guard
from provisioner.workflows.planned import StackOwned, planned
from provisioner.workflows.ports import Cloud
from provisioner.workflows.stack_scale import scale_stack


def scale(
    inv: Inventory,
    *,
    workers: int,
    cloud: Cloud,
    user_data: UserData,
    reporter: Reporter | None = None,
    hooks: Hooks | None = None,
    settings: Settings | None = None,
    dry_run: bool = False,
) -> Result:
    if workers < 0:
        raise UserInputError("--workers must be 0 or more")
    desired = P.desired_from_inventory(inv, workers=workers)
    key_dir = config_dir(desired.cluster)
    try:
        result, resolved = planned(desired, cloud=cloud, key_dir=key_dir, user_data=user_data,
                                   plan=_plan, dry_run=dry_run)  # fmt: skip
    except StackOwned as owned:
        return scale_stack(desired, owned.observed, cloud=cloud, dry_run=dry_run,
                           reporter=reporter or Reporter(), hooks=hooks or Hooks())  # fmt: skip
    if dry_run:
        return result
    assert resolved is not None
    run = Run.create(
        inv, cloud=cloud, desired=desired, result=result, key_dir=key_dir, reporter=reporter,
        settings=settings, hooks=hooks, resolved=resolved, user_data=user_data,
        watch=[P.server_name(desired.cluster, P.WORKER, i) for i in range(1, workers + 1)],
    )  # fmt: skip
    with guard(verb="scale", cluster=desired.cluster):
        execute(result.actions, run)
        created = run.converged
        if not created:
            converge(run, [])
        result.observed = run.after()
        if created:
            run.hooks.after_servers_active(result.observed)
    return result


def _plan(desired: P.Desired, observed: P.Observed) -> list[P.Action]:
    """Workers come from the master's template and join its groups: `up` makes those."""
    if observed.master() is None or observed.master_port is None or not observed.security_group:
        raise UserInputError(
            f"cluster {desired.cluster} has no master",
            hint="run `sparkstack up` first",
        )
    return P.plan_scale(desired, observed)
