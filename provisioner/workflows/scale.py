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
from provisioner.workflows.lookalikes import refusals, separate
from provisioner.workflows.ports import Cloud
from provisioner.workflows.preflight import checked


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
    reporter = reporter or Reporter()
    desired = P.desired_from_inventory(inv, workers=workers)
    observed, lookalikes = separate(desired, cloud.observe(), config_dir(desired.cluster))
    if observed.master() is None or observed.master_port is None or not observed.security_group:
        raise UserInputError(
            f"cluster {desired.cluster} has no master",
            hint="run `sparkstack up` first",
        )
    actions = P.plan_scale(desired, observed)
    result, resolved = checked(
        cloud=cloud,
        desired=desired,
        observed=observed,
        actions=actions,
        user_data=user_data,
        dry_run=dry_run,
        refuse=refusals(lookalikes, desired.cluster),
    )
    if dry_run:
        return result
    assert resolved is not None
    hooks = hooks or Hooks()
    run = Run(
        cloud=cloud,
        desired=desired,
        observed=observed,
        resolved=resolved,
        user_data=user_data,
        reporter=reporter,
        settings=settings or Settings(max_parallel=inv.cluster.max_parallel_creates),
        hooks=hooks,
        result=result,
        key_dir=config_dir(desired.cluster),
        watch=[P.server_name(desired.cluster, P.WORKER, i) for i in range(1, workers + 1)],
    )
    with guard(verb="scale", cluster=desired.cluster):
        execute(actions, run)
        created = run.converged
        if not created:
            converge(run, [])
        result.observed = run.after()
        if created:
            hooks.after_servers_active(result.observed)
    return result
