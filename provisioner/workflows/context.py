"""What a workflow run carries: the progress sink, hooks, timing knobs, the result, and one
`Run` holding everything an apply needs (instead of a dozen parameters per function)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner import plan as P
from provisioner.inventory import names
from provisioner.workflows.ports import Cloud

log = logging.getLogger(__name__)

UserData = Callable[[str, str], str]  # (role, master_ip) -> cloud-init user_data


class Reporter:
    """Progress sink. The CLI shows it live; tests record it; the default logs it."""

    def step(self, text: str) -> None:
        log.info("%s", text)

    def nodes(self, states: Mapping[str, str]) -> None:
        """Current state of every node being waited on (name -> short text)."""


def _noop(*_: Any) -> None:
    return None


def _no_user_data(role: str, master_ip: str) -> str:
    return ""


# A run that creates nothing (down) resolves nothing: the executor's handlers for deletes
# never read these.
NOTHING_RESOLVED = P.Resolved(
    image_id="",
    image=P.Image(name="", status=""),
    flavors={},
    flavor_ids={},
    network_id="",
    external_network_id="",
)


@dataclass
class Hooks:
    """Seams for the SSH stage: after every server is ACTIVE (and the floating IP is
    attached), and before workers are removed (graceful decommission)."""

    after_servers_active: Callable[[P.Observed], None] = _noop
    # (the cluster as observed, the workers about to be removed)
    decommission: Callable[[P.Observed, Sequence[P.Node]], None] = _noop


@dataclass
class Settings:
    """Timing knobs, explicit so tests and benchmarks can tighten them."""

    max_parallel: int = 10
    replace_budget: int = 3  # creates per node (ERROR replacements, lost answers)
    active_timeout: float = 900.0
    delete_timeout: float = 600.0
    poll_min: float = 1.0
    poll_max: float = 5.0
    poll_fraction: float = 0.15  # of the time waited so far (converge._WaitInProportion)


@dataclass
class Result:
    actions: list[P.Action]
    observed: P.Observed | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    # base64 bytes of each role's user_data, as rendered in preflight (Nova's limit applies)
    user_data_sizes: dict[str, int] = field(default_factory=dict)


@dataclass
class Run:
    """One apply: its inputs, and what it learns as actions run (the ids later actions
    need). The executor's handlers read and fill it."""

    cloud: Cloud  # a Protocol: this module never imports openstack
    desired: P.Desired
    observed: P.Observed
    resolved: P.Resolved
    user_data: UserData
    reporter: Reporter
    settings: Settings
    hooks: Hooks
    result: Result
    key_dir: Path
    watch: list[str] = field(default_factory=list)  # servers that must end up ACTIVE
    security_group_id: str = ""
    server_group_id: str = ""
    master_port: P.Ref | None = None
    gone: set[str] = field(default_factory=set)  # server ids deleted (may still be listed)
    converged: bool = False  # a create batch ran and saw every watched server ACTIVE
    rendered: dict[str, str] = field(default_factory=dict)
    nodes: list[P.Node] = field(default_factory=list)  # the watched servers, ACTIVE
    attached_ip: str = ""  # the floating IP this run put on the master
    keypair_made: str = ""  # the keypair this run imported: (name, public key)
    keypair_public: str = ""

    @classmethod
    def create(
        cls,
        inv: Any,
        *,
        cloud: Any,
        desired: P.Desired,
        result: Result,
        key_dir: Path,
        reporter: Reporter | None = None,
        settings: Settings | None = None,
        hooks: Hooks | None = None,
        resolved: P.Resolved = NOTHING_RESOLVED,
        user_data: UserData = _no_user_data,
        watch: Sequence[str] = (),
    ) -> Run:
        """The one place a verb's Run is assembled, with the defaults every verb shares: a
        reporter that logs, the inventory's parallelism, no hooks. A run that creates
        nothing (down) needs neither `resolved` nor `user_data`."""
        assert result.observed is not None, "a run starts from what was observed"
        return cls(
            cloud=cloud,
            desired=desired,
            observed=result.observed,
            resolved=resolved,
            user_data=user_data,
            reporter=reporter or Reporter(),
            settings=settings or Settings(max_parallel=inv.cluster.max_parallel_creates),
            hooks=hooks or Hooks(),
            result=result,
            key_dir=key_dir,
            watch=list(watch),
        )

    def __post_init__(self) -> None:
        obs = self.observed
        self.security_group_id = obs.security_group.id if obs.security_group else ""
        self.server_group_id = obs.server_group.id if obs.server_group else ""
        self.master_port = obs.master_port

    @property
    def master_ip(self) -> str:
        master = self.observed.master()
        return (self.master_port.detail if self.master_port else "") or (
            master.fixed_ip if master else ""
        )

    def after(self) -> P.Observed:
        """The cluster as this run leaves it, from what it made and its last server list:
        a second look at the whole cloud would cost a request per resource kind."""
        obs, c = self.observed, self.desired.cluster
        fresh = {n.name: n for n in self.nodes}
        nodes = [fresh.pop(n.name, n) for n in obs.nodes if n.id not in self.gone]
        nodes += fresh.values()
        ip = self.attached_ip or obs.attached_ip
        # Nova's view of addresses lags behind Neutron's for a moment after an attach
        nodes = [
            dataclasses.replace(n, floating_ip=ip) if n.role == P.MASTER and not n.floating_ip
            else n
            for n in nodes
        ]  # fmt: skip
        sg = obs.security_group or (
            P.Ref(self.security_group_id, names.security_group_name(c))
            if self.security_group_id else None
        )  # fmt: skip
        group = obs.server_group or (
            P.Ref(self.server_group_id, names.server_group_name(c),
                  self.desired.server_group_policy)
            if self.server_group_id else None
        )  # fmt: skip
        keypair = obs.keypair or (
            P.Ref(self.keypair_made, self.keypair_made, self.keypair_public)
            if self.keypair_made else None
        )  # fmt: skip
        return dataclasses.replace(
            obs, nodes=tuple(nodes), attached_ip=ip, security_group=sg, server_group=group,
            master_port=self.master_port, keypair=keypair,
        )  # fmt: skip

    def user_data_for(self, role: str) -> str:
        """Rendered once per role (not once per server), with the master's real IP."""
        if role not in self.rendered:
            self.rendered[role] = self.user_data(role, self.master_ip)
        return self.rendered[role]
