"""The hub stage of `up`: JupyterHub installed and reconciled on the master over SSH, the
users' initial passwords kept in the cluster's credentials file (never in the log), the
hub's certificate signed by the cluster's CA kept beside it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from provisioner import plan as P
from provisioner.hub import HubSettings, Sudo, ensure_hub
from provisioner.hub.ca import ensure_ca
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
    # the CA file users trust (TLS mode "self-signed"; None for ACME or the inventory's files)
    ca_file: Path | None = None
    # single sign-on: the redirect URI to register at the provider (None with PAM)
    sso_callback: str | None = None
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
    key_dir = config_dir(inv.cluster.name)
    self_signed = settings.tls_mode == "self-signed"
    ca = ensure_ca(key_dir, cluster=inv.cluster.name) if self_signed else None
    reporter.step("installing JupyterHub on the master")
    report = ensure_hub(Sudo(nodes.master), settings, inv=inv, ca=ca)
    for step in report.steps:
        reporter.step(f"hub {step}")
    path = save_credentials(
        key_dir,
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
        ca_file=ca.cert_path if ca else None,
        sso_callback=settings.oauth_callback if settings.oidc is not None else None,
        new_passwords=dict(report.passwords),
        steps=[str(s) for s in report.steps],
    )
