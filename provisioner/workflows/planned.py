"""What `up` and `scale` do before they change anything: look at the cluster, set apart
what only looks like it, plan, and check the plan (preflight). A dry run ends here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from provisioner import plan as P
from provisioner.errors import UserInputError
from provisioner.workflows.context import Result, UserData
from provisioner.workflows.lookalikes import refusals, separate
from provisioner.workflows.ports import Cloud
from provisioner.workflows.preflight import checked


class StackOwned(UserInputError):
    """The cluster's servers belong to a Heat stack (`render --heat`): `up` leaves them to
    it; `scale` resizes the stack instead (workflows.stack_scale)."""

    def __init__(self, cluster: str, observed: P.Observed) -> None:
        super().__init__(
            f"cluster {cluster} was made by Heat stack {observed.stack}: its servers are "
            "the stack's",
            hint="`sparkstack scale -i <inventory> --workers N` resizes the stack "
            "(worker_count), `sparkstack hub -i <inventory>` finishes new nodes, "
            "`sparkstack down` deletes the stack",
        )
        self.observed = observed


# (what the inventory wants, what the cloud has) -> the actions, in apply order
Planner = Callable[[P.Desired, P.Observed], list[P.Action]]


def planned(
    desired: P.Desired,
    *,
    cloud: Cloud,
    key_dir: Path,
    user_data: UserData,
    plan: Planner,
    dry_run: bool,
) -> tuple[Result, P.Resolved | None]:
    """The checked plan (its problems listed in a dry run, refused otherwise) and the image,
    flavors and networks resolved for it (None only when a dry run could not resolve them).
    Resources that only look like the cluster's are problems: never used, never changed."""
    observed, lookalikes = separate(desired, cloud.observe(), key_dir)
    if observed.stack:
        raise StackOwned(desired.cluster, observed)
    return checked(
        cloud=cloud,
        desired=desired,
        observed=observed,
        actions=plan(desired, observed),
        user_data=user_data,
        dry_run=dry_run,
        refuse=refusals(lookalikes, desired.cluster),
    )
