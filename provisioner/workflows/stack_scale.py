"""`scale` for a cluster a Heat stack made (`render --heat`): the stack owns the workers,
so their number changes through it (worker_count: Heat adds the next indices or removes
the highest first, the same workers `scale` picks for an `up` cluster). Workers about to go
are decommissioned gracefully first; new ones get the SSH stage and the Spark secret, as
`scale` gives them on an `up` cluster."""

from __future__ import annotations

from provisioner import plan as P
from provisioner.workflows.context import Hooks, Reporter, Result
from provisioner.workflows.guard import guard
from provisioner.workflows.ports import Cloud


def scale_stack(
    desired: P.Desired,
    observed: P.Observed,
    *,
    cloud: Cloud,
    reporter: Reporter,
    hooks: Hooks,
    dry_run: bool,
) -> Result:
    stack, current = observed.stack, observed.workers()
    going = [w for w in current if w.index > desired.workers]
    actions: list[P.Action] = [P.Decommission(names=tuple(w.name for w in going))] if going else []
    result = Result(actions=actions, observed=observed)
    if len(current) == desired.workers and not going:
        return result
    result.notes.append(
        f"Heat stack {stack}: worker_count {len(current)} -> {desired.workers} "
        "(the stack's parameter; every other one kept)"
    )
    if dry_run:
        return result
    with guard(verb="scale", cluster=desired.cluster):
        if going:
            hooks.decommission(observed, going)
        reporter.step(f"resizing Heat stack {stack} to {desired.workers} worker(s)")
        cloud.resize_stack(stack, workers=desired.workers)
        after = cloud.observe()
        before = {w.name for w in current}
        added = [w for w in after.workers() if w.name not in before]
        result.created += [f"server {w.name}" for w in added]
        result.deleted += [f"server {w.name}" for w in going]
        result.observed = after
        if added:
            hooks.after_servers_active(after)
    return result
