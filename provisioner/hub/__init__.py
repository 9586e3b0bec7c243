"""JupyterHub on the master: pure configuration (config) and idempotent steps (steps, accounts).

The steps talk to the node only through :class:`Shell`; see its docstring for what an
implementation must guarantee.
"""

from __future__ import annotations

from provisioner.hub.accounts import UsersStep, ensure_users
from provisioner.hub.acme import ensure_acme_certificate, ensure_acme_client
from provisioner.hub.config import HubPaths, HubSettings, render_config, render_unit
from provisioner.hub.shell import Shell, Step, Sudo
from provisioner.hub.steps import (
    HubReport,
    ensure_config,
    ensure_dirs,
    ensure_hub,
    ensure_kernel,
    ensure_secrets,
    ensure_service,
    wait_for_hub,
)
from provisioner.hub.tls import TlsStep, ensure_tls, fingerprint

__all__ = [
    "HubPaths",
    "HubReport",
    "HubSettings",
    "Shell",
    "Step",
    "Sudo",
    "TlsStep",
    "UsersStep",
    "ensure_acme_certificate",
    "ensure_acme_client",
    "ensure_config",
    "ensure_dirs",
    "ensure_hub",
    "ensure_kernel",
    "ensure_secrets",
    "ensure_service",
    "ensure_tls",
    "ensure_users",
    "fingerprint",
    "render_config",
    "render_unit",
    "wait_for_hub",
]
