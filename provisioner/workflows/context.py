"""What a workflow run carries: the progress sink, hooks, timing knobs, the result, and one
`Run` holding everything an apply needs (instead of a dozen parameters per function)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner import plan as P

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


@dataclass
class Result:
    actions: list[P.Action]
    observed: P.Observed | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # base64 bytes of each role's user_data, as rendered in preflight (Nova's limit applies)
    user_data_sizes: dict[str, int] = field(default_factory=dict)


@dataclass
class Run:
    """One apply: its inputs, and what it learns as actions run (the ids later actions
    need). The executor's handlers read and fill it."""

    cloud: Any  # a ClusterCloud; typed loosely so this module never imports openstack
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

    def user_data_for(self, role: str) -> str:
        """Rendered once per role (not once per server), with the master's real IP."""
        if role not in self.rendered:
            self.rendered[role] = self.user_data(role, self.master_ip)
        return self.rendered[role]
