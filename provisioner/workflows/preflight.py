"""Preflight: every reason a plan cannot run, collected before anything is created.

Names resolve, the image fits the flavors, quotas hold the plan, the keys exist, and every
node's user_data renders within Nova's size limit: all of it is reported in one message
(exit 2, nothing created), and a dry run shows the same list. Rendering includes the Spark
tarball's sha512, which the renderer fetches from spark.checksums unless the inventory pins
it: a source that does not answer is one of these problems, not a node that fails later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from provisioner import plan as P
from provisioner.errors import PreflightError, UserInputError
from provisioner.inventory.fields import unusable_file
from provisioner.workflows.context import Result, UserData
from provisioner.workflows.ports import Cloud

log = logging.getLogger(__name__)

# Before the master port exists its address is unknown; the longest IPv4 address gives
# each document its largest size, so a plan that fits here fits with the real address.
_WIDEST_IP = "255.255.255.254"

_CREATING = (P.CreateServer, P.CreateMasterPort, P.CreateSecurityGroup, P.AttachFloatingIP)


def render_sizes(
    actions: list[P.Action], *, observed: P.Observed, user_data: UserData
) -> tuple[dict[str, int], list[str]]:
    """Render each role the plan creates; its base64 size, or the reason it cannot be sent."""
    from provisioner.render import check_user_data_size, user_data_base64_size

    master_ip = observed.master_port.detail if observed.master_port else ""
    sizes: dict[str, int] = {}
    problems: list[str] = []
    for role in dict.fromkeys(a.role for a in actions if isinstance(a, P.CreateServer)):
        try:
            text = user_data(role, master_ip or _WIDEST_IP)
            check_user_data_size(text, what=f"{role} user_data")
            sizes[role] = user_data_base64_size(text)
        except UserInputError as exc:
            # One cause (the Spark hash that could not be fetched) fails every role alike.
            if exc.message not in problems:
                problems.append(exc.message)
    return sizes, problems


def preflight(
    *,
    cloud: Cloud,
    desired: P.Desired,
    observed: P.Observed,
    actions: list[P.Action],
    user_data: UserData | None,
) -> tuple[P.Resolved | None, list[str], dict[str, int]]:
    sizes: dict[str, int] = {}
    problems: list[str] = []
    if user_data is not None:
        sizes, problems = render_sizes(actions, observed=observed, user_data=user_data)
    resolved, found = cloud.resolve(desired)
    problems += found
    if resolved is not None:
        used = [resolved.flavors[k] for k in {desired.master_flavor, desired.worker_flavor}]
        problems += P.image_flavor_shortfalls(resolved.image, used)
        problems += P.limits_shortfalls(resolved.flavors.get(desired.master_flavor),
                                        memory_mib=desired.user_memory_mib, cpu=desired.user_cpu)
    if not desired.floating_ip_pool and any(
        isinstance(a, P.AttachFloatingIP) and not a.address for a in actions
    ):
        problems.append("network.floating_ip_pool is empty and no network.floating_ip is given")
    if any(isinstance(a, P.CreateKeypair) and a.source == "import" for a in actions):
        pub = Path(desired.public_key_file)
        if problem := unusable_file(pub):
            problems.append(f"public key {pub} (for ssh.private_key) {problem}")
    if desired.private_key_file and (problem := unusable_file(Path(desired.private_key_file))):
        problems.append(f"private key {desired.private_key_file} (ssh.private_key) {problem}")
    if desired.keypair and not cloud.find_keypair(desired.keypair):
        problems.append(f"keypair {desired.keypair!r} (ssh.keypair) not found")
    if resolved is not None and any(isinstance(a, _CREATING) for a in actions):
        need = P.needs(actions, flavors=resolved.flavors, observed=observed, desired=desired)
        problems += P.quota_shortfalls(need, cloud.quotas())
    return resolved, problems, sizes


def checked(
    *,
    cloud: Cloud,
    desired: P.Desired,
    observed: P.Observed,
    actions: list[P.Action],
    user_data: UserData | None,
    dry_run: bool,
    refuse: Sequence[str] = (),
) -> tuple[Result, P.Resolved | None]:
    """Preflight shared by up and scale: a dry run reports the problems, a real run refuses.
    `refuse` are problems the caller found already (resources that only look like ours)."""
    resolved, problems, sizes = preflight(
        cloud=cloud, desired=desired, observed=observed, actions=actions, user_data=user_data
    )
    problems = [*refuse, *problems]
    if problems and not dry_run:
        raise refusal(problems, desired.cluster)
    result = Result(actions=actions, observed=observed, problems=problems, user_data_sizes=sizes)
    return result, resolved


def refusal(problems: list[str], cluster: str) -> PreflightError:
    listed = "\n".join(f"  - {p}" for p in problems)
    return PreflightError(
        f"cluster {cluster} cannot be created as planned; nothing was created:\n{listed}",
        step="preflight",
        hint="fix each item above (inventory, quota, image, flavor or network), then retry",
    )
