"""The hub stage of `up`: JupyterHub installed and reconciled on the master over SSH, the
users' initial passwords kept in the cluster's credentials file (never in the log)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from provisioner import plan as P
from provisioner.hub import HubSettings, Sudo, ensure_hub
from provisioner.inventory import Inventory
from provisioner.keys import config_dir, save_credentials
from provisioner.workflows.context import Reporter
from provisioner.workflows.ssh_stage import Nodes

log = logging.getLogger(__name__)


@dataclass
class HubOutcome:
    url: str
    fingerprint: str
    changed: bool
    credentials: Path
    # passwords set in this run only, to print once; never logged
    new_passwords: dict[str, str] = field(repr=False, default_factory=dict)
    steps: list[str] = field(default_factory=list)


def install_hub(
    nodes: Nodes, *, inv: Inventory, observed: P.Observed, reporter: Reporter
) -> HubOutcome:
    master = observed.master()
    assert master is not None
    settings = HubSettings.from_inventory(
        inv,
        master_ip=master.fixed_ip,
        floating_ips=[master.floating_ip] if master.floating_ip else [],
    )
    reporter.step("installing JupyterHub on the master")
    report = ensure_hub(Sudo(nodes.master), settings, inv=inv)
    for step in report.steps:
        reporter.step(f"hub {step}")
    path = save_credentials(
        config_dir(inv.cluster.name),
        url=report.url,
        fingerprint=report.fingerprint,
        passwords=report.passwords,
        users=list(inv.jupyterhub.users),
    )
    verdict = "changed" if report.changed else "already as the inventory says; nothing changed"
    reporter.step(f"hub ready at {report.url} ({verdict}, {report.seconds:.1f} s)")
    return HubOutcome(
        url=report.url,
        fingerprint=report.fingerprint,
        changed=report.changed,
        credentials=path,
        new_passwords=dict(report.passwords),
        steps=[str(s) for s in report.steps],
    )
