"""What `up` and `scale` do before they change anything: look at the cluster, set apart
what only looks like it, plan, and check the plan (preflight). A dry run ends here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisioner import plan as P
from provisioner.workflows.context import Result, UserData
from provisioner.workflows.lookalikes import refusals, separate
from provisioner.workflows.preflight import checked

# (what the inventory wants, what the cloud has) -> the actions, in apply order
Planner = Callable[[P.Desired, P.Observed], list[P.Action]]


def planned(
    desired: P.Desired,
    *,
    cloud: Any,
    key_dir: Path,
    user_data: UserData,
    plan: Planner,
    dry_run: bool,
) -> tuple[Result, P.Resolved | None]:
    """The checked plan (its problems listed in a dry run, refused otherwise) and the image,
    flavors and networks resolved for it (None only when a dry run could not resolve them).
    Resources that only look like the cluster's are problems: never used, never changed."""
    observed, lookalikes = separate(desired, cloud.observe(), key_dir)
    return checked(
        cloud=cloud,
        desired=desired,
        observed=observed,
        actions=plan(desired, observed),
        user_data=user_data,
        dry_run=dry_run,
        refuse=refusals(lookalikes, desired.cluster),
    )
