"""Pure: what the hub on the master is configured with, and the files that say so.

Nothing here touches a system. :class:`HubSettings` is built from the inventory (plus the
master's addresses, known only once it exists); :func:`render_config` and
:func:`render_unit` turn it into the text of ``jupyterhub_config.py`` and the systemd unit.
Secrets never appear in either text: the config names the root-only files the hub reads
them from at start.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from provisioner import inventory as inv_mod
from provisioner.errors import UserInputError
from provisioner.hub.limits import AppliedLimits, spawner_config_lines
from provisioner.hub.oidc import OidcEndpoints, sso_config_lines
from provisioner.hub.services import (
    CLUSTER_UI_MODULE,
    CULLER_SCOPES,
    SMOKE_SCOPES,
    SMOKE_SERVICE,
    cluster_ui_service,
    culler_service,
)
from provisioner.hub.singleuser import singleuser_cmd
from provisioner.inventory import Inventory
from provisioner.inventory.fields import RESERVED_USERS, memory_mib
from provisioner.inventory.names import CORE_OOM_SCORE_ADJ, CORE_SLICE
from provisioner.inventory.oidc import OidcConfig
from provisioner.inventory.services import LETSENCRYPT_DIRECTORY
from provisioner.render import VENV

log = logging.getLogger(__name__)

UNIT_NAME = "sparkstack-hub"
# The certificate's renewal (tls.mode = "acme"): a oneshot service and its timer.
ACME_UNIT_NAME = "sparkstack-hub-acme"
# Port 80 with tls.mode = "acme": redirects to HTTPS, answers the CA's HTTP-01 requests.
HTTP_UNIT_NAME = "sparkstack-hub-http"


@dataclass(frozen=True)
class HubPaths:
    """Where the hub's files live on the master. State under /var/lib, never /root."""

    config_dir: str = "/etc/sparkstack-hub"
    state_dir: str = "/var/lib/sparkstack-hub"
    unit_dir: str = "/etc/systemd/system"

    @property
    def config(self) -> str:
        return f"{self.config_dir}/jupyterhub_config.py"

    @property
    def tls_dir(self) -> str:
        return f"{self.config_dir}/tls"

    @property
    def cert(self) -> str:
        return f"{self.tls_dir}/hub.crt"

    @property
    def key(self) -> str:
        return f"{self.tls_dir}/hub.key"

    @property
    def singleuser_dir(self) -> str:
        """The users' servers' JUPYTER_CONFIG_PATH: JupyterLab's settings for the team."""
        return f"{self.config_dir}/singleuser"

    @property
    def singleuser_config(self) -> str:
        return f"{self.singleuser_dir}/jupyter_server_config.json"

    @property
    def singleuser_python(self) -> str:
        """On the servers' PYTHONPATH: the Spark UI extension (hub/singleuser.py)."""
        return f"{self.singleuser_dir}/python"

    @property
    def sparkui_module(self) -> str:
        return f"{self.singleuser_python}/sparkstack_sparkui.py"

    @property
    def cluster_ui_module(self) -> str:
        """The admins' Spark UI service (hub/services.py), beside the module it imports."""
        return f"{self.singleuser_python}/{CLUSTER_UI_MODULE}.py"

    @property
    def sparkui_enabled(self) -> str:
        """Where `jupyter server extension enable` would write it, for this config path."""
        return f"{self.singleuser_dir}/jupyter_server_config.d/sparkstack_sparkui.json"

    @property
    def lab_overrides(self) -> str:
        """JupyterLab's defaults for its settings (a user's own choice still wins)."""
        return f"{self.singleuser_dir}/labconfig/default_setting_overrides.json"

    @property
    def cookie_secret(self) -> str:
        return f"{self.state_dir}/jupyterhub_cookie_secret"

    @property
    def proxy_token(self) -> str:
        return f"{self.state_dir}/proxy_auth_token"

    @property
    def smoke_token(self) -> str:
        """API token of the hub service `sparkstack smoke` acts as (read over SSH)."""
        return f"{self.state_dir}/smoke_api_token"

    @property
    def oidc_secret(self) -> str:
        """The OIDC client's secret (authenticator "oidc"), sent over SSH."""
        return f"{self.state_dir}/oidc_client_secret"

    @property
    def oidc_ca(self) -> str:
        """The CA bundle the hub trusts for the provider's HTTPS (jupyterhub.oidc.ca_file)."""
        return f"{self.tls_dir}/oidc-ca.pem"

    @property
    def sso_add_user(self) -> str:
        """Makes a person's Unix account at their first single sign-on (hub/oidc.py)."""
        return f"{self.config_dir}/add-sso-user"

    @property
    def sso_files(self) -> dict[str, str]:
        """Single sign-on's files on the master, as hub/oidc.py's functions take them."""
        return {"secret_path": self.oidc_secret, "ca_path": self.oidc_ca,
                "add_user_path": self.sso_add_user}  # fmt: skip

    @property
    def users_record(self) -> str:
        """Every account the hub has ever served: how removed users are recognised."""
        return f"{self.state_dir}/users.json"

    @property
    def database(self) -> str:
        return f"{self.state_dir}/jupyterhub.sqlite"

    @property
    def unit(self) -> str:
        return f"{self.unit_dir}/{UNIT_NAME}.service"

    # --- tls.mode = "acme" ---

    @property
    def acme_dir(self) -> str:
        """lego's --path: the ACME account key and the certificates it obtained."""
        return f"{self.state_dir}/acme"

    @property
    def acme_ca(self) -> str:
        """The CA bundle lego trusts for the directory's HTTPS (tls.acme_ca_file)."""
        return f"{self.tls_dir}/acme-ca.pem"

    @property
    def acme_install(self) -> str:
        """Copies lego's certificate and key to cert / key."""
        return f"{self.config_dir}/acme-install"

    @property
    def acme_hook(self) -> str:
        """lego's --renew-hook: install, then restart the hub."""
        return f"{self.config_dir}/acme-renewed"

    @property
    def acme_service(self) -> str:
        return f"{self.unit_dir}/{ACME_UNIT_NAME}.service"

    @property
    def acme_timer(self) -> str:
        return f"{self.unit_dir}/{ACME_UNIT_NAME}.timer"

    @property
    def acme_webroot(self) -> str:
        """lego's --http.webroot, which the port-80 server answers challenges from."""
        return f"{self.state_dir}/acme-webroot"

    @property
    def http_server(self) -> str:
        """The port-80 program (provisioner/hub/http_redirect.py, copied as it is)."""
        return f"{self.config_dir}/http-redirect.py"

    @property
    def http_unit(self) -> str:
        return f"{self.unit_dir}/{HTTP_UNIT_NAME}.service"


@dataclass(frozen=True)
class HubSettings:
    """Everything the hub's configuration depends on. Built by :meth:`from_inventory` from
    an Inventory, whose checks (users, admins, port, TLS, culling) it relies on."""

    users: tuple[str, ...]
    admins: tuple[str, ...]
    port: int
    spark_master_url: str
    # IPs the self-signed certificate must cover (fixed first, then floating).
    addresses: tuple[str, ...]
    tls_mode: str = "self-signed"
    # Local files for tls_mode "files": copied to paths.cert / paths.key.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # tls_mode "acme": the certificate's DNS name, the account's e-mail, the CA's
    # directory and a local CA bundle for the directory's own HTTPS (private CAs only).
    tls_domain: str | None = None
    tls_email: str | None = None
    acme_directory: str = LETSENCRYPT_DIRECTORY
    acme_ca_file: Path | None = None
    server_idle_timeout: int = 3600
    kernel_idle_timeout: int = 1800
    # Single sign-on (authenticator "oidc"); None: PAM.
    oidc: OidcConfig | None = None
    # jupyterhub.limits as the inventory names them (None: "auto"), and the driver's heap
    # that "auto" must leave room for (spark.limits.driver_memory, MiB).
    user_memory_mib: int | None = None
    user_cpu: float | None = None
    driver_mib: int = 1024
    paths: HubPaths = field(default_factory=HubPaths)

    def __post_init__(self) -> None:
        # Users, admins, port, TLS and culling come from an Inventory, which has checked
        # them, each against its key; only what the inventory cannot know is checked here.
        problems = []
        if not self.addresses:
            problems.append("the master's addresses are unknown (needed for the certificate)")
        for address in self.addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                problems.append(f"not an IP address: {address!r}")
        if problems:
            raise UserInputError("hub settings are not valid: " + "; ".join(problems))

    @classmethod
    def from_inventory(
        cls,
        inv: Inventory,
        *,
        master_ip: str,
        floating_ips: Iterable[str] = (),
        paths: HubPaths | None = None,
    ) -> HubSettings:
        hub = inv.jupyterhub
        addresses = tuple(dict.fromkeys([master_ip, *floating_ips]))
        return cls(
            users=tuple(hub.users),
            admins=tuple(hub.admins),
            port=hub.port,
            spark_master_url=f"spark://{master_ip}:{inv_mod.SPARK_MASTER_PORT}",
            addresses=addresses,
            tls_mode=hub.tls.mode,
            tls_cert_file=hub.tls.cert_file,
            tls_key_file=hub.tls.key_file,
            tls_domain=hub.tls.domain,
            tls_email=hub.tls.email,
            acme_directory=hub.tls.acme_directory,
            acme_ca_file=hub.tls.acme_ca_file,
            server_idle_timeout=hub.culling.server_idle_timeout,
            kernel_idle_timeout=hub.culling.kernel_idle_timeout,
            oidc=hub.oidc if hub.authenticator == "oidc" else None,
            user_memory_mib=hub.limits.memory_limit_mib(),
            user_cpu=hub.limits.cpu_limit(),
            driver_mib=memory_mib(inv.spark.limits.driver_memory),
            paths=paths or HubPaths(),
        )

    @property
    def url(self) -> str:
        """Where users open the hub: the last (floating) address, or with ACME the domain,
        which its certificate is for, not the address."""
        return hub_url(address=self.addresses[-1], port=self.port,
                       domain=self.tls_domain if self.tls_mode == "acme" else None)

    @property
    def oauth_callback(self) -> str:
        """The redirect URI to register at the OIDC provider."""
        return self.url + "hub/oauth_callback"


def hub_url(*, address: str, port: int, domain: str | None = None) -> str:
    """Where users open the hub: its domain when it has one (an ACME certificate is for the
    domain, not for the address), else the master's address; the port only when it is not
    HTTPS's own."""
    host = domain or (f"[{address}]" if ":" in address else address)
    return f"https://{host}/" if port == 443 else f"https://{host}:{port}/"


def _py(value: object) -> str:
    """A Python literal for the config: repr of str/int/list/dict/bool is valid Python."""
    return repr(value)


def render_config(settings: HubSettings, *, former_users: Iterable[str] = (),
                  oidc: OidcEndpoints | None = None,
                  limits: AppliedLimits | None = None) -> str:
    """The text of jupyterhub_config.py.

    ``former_users`` are accounts that were hub users once and are not any more (a fact of
    the node): JupyterHub keeps them in its database, so leaving them out of
    ``allowed_users`` would not end their sessions or tokens; blocking them does.
    ``oidc``: the provider's endpoints, which single sign-on needs (read by the master).
    ``limits``: the users' limits as reckoned for the master (hub/limits.py); None leaves
    servers unlimited.
    """
    p = settings.paths
    users = sorted(settings.users)
    blocked = sorted(set(former_users) - set(users))
    lines = [
        "# Written by sparkstack; rewritten on every run. Holds no secrets: the proxy token",
        "# and the cookie secret are read from root-only files when the hub starts.",
        "from pathlib import Path",
        "",
        "c = get_config()  # noqa: F821",
        "",
    ]
    if settings.oidc is None:
        lines += [
            "# PAM accounts; the hub runs as root so it can check passwords and spawn as users.",
            'c.JupyterHub.authenticator_class = "pam"',
        ]
    else:
        if oidc is None:
            raise ValueError("single sign-on needs the provider's endpoints")
        lines += sso_config_lines(settings.oidc, oidc, callback=settings.oauth_callback,
                                  users=settings.users, admins=settings.admins, **p.sso_files)
        # A provider must never log anyone in as a system account.
        blocked = sorted(set(blocked) | RESERVED_USERS)
    lines += [
        f"c.Authenticator.allowed_users = set({_py(users)})",
        # With allowed_users set, JupyterHub >= 5 also lets in every user still in its
        # database (allow_existing_users); the inventory alone must decide.
        "c.Authenticator.allow_existing_users = False",
        f"c.Authenticator.blocked_users = set({_py(blocked)})",
        "",
        "# HTTPS on the public port, served by configurable-http-proxy.",
        f"c.JupyterHub.ssl_cert = {_py(p.cert)}",
        f"c.JupyterHub.ssl_key = {_py(p.key)}",
        f'c.JupyterHub.bind_url = "https://:{settings.port}"',
        "# The hub API defaults to 8081, the Spark worker UI's port.",
        f'c.JupyterHub.hub_bind_url = "http://127.0.0.1:{inv_mod.HUB_API_PORT}"',
        f'c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{inv_mod.PROXY_API_PORT}"',
        f"c.ConfigurableHTTPProxy.auth_token = Path({_py(p.proxy_token)}).read_text().strip()",
        f"c.ConfigurableHTTPProxy.pid_file = {_py(p.state_dir + '/proxy.pid')}",
        f"c.JupyterHub.cookie_secret_file = {_py(p.cookie_secret)}",
        f'c.JupyterHub.db_url = "sqlite:///{p.database}"',
        # A config change (a user added) restarts the hub: it must not stop every
        # running notebook and its Spark application with it.
        "c.JupyterHub.cleanup_servers = False",
        "",
        "# Single-user servers: JupyterLab from the shared venv, as each user, with a",
        "# umask that keeps every file it and its kernels make private to that user.",
        f"c.Spawner.cmd = {_py(singleuser_cmd())}",
        'c.Spawner.default_url = "/lab"',
        "c.Spawner.start_timeout = 120",
        "c.Spawner.http_timeout = 60",
        # MASTER is what spark-submit falls back to: `pyspark` in a terminal and a plain
        # SparkSession in any kernel then use the cluster, like the PySpark kernel does.
        # JUPYTER_CONFIG_PATH: the server's own config (the PySpark kernel as the default)
        # and JupyterLab's setting defaults (no news prompt), from root-owned files.
        # PYTHONPATH: the Spark UI extension it enables (kernels set their own path).
        "c.Spawner.environment = "
        + _py({"MASTER": settings.spark_master_url, "JUPYTER_CONFIG_PATH": p.singleuser_dir,
               "PYTHONPATH": p.singleuser_python}),  # fmt: skip
    ]
    if limits is not None:
        lines += spawner_config_lines(limits)
    kernel_timeout = settings.kernel_idle_timeout
    if kernel_timeout:
        # An idle kernel keeps its Spark executors; cull it even with a browser tab open.
        interval = max(30, min(300, kernel_timeout // 3))
        lines += [
            "c.Spawner.args = [",
            f'    "--MappingKernelManager.cull_idle_timeout={kernel_timeout}",',
            f'    "--MappingKernelManager.cull_interval={interval}",',
            '    "--MappingKernelManager.cull_connected=True",',
            "]",
        ]
    # Admins as an exact admin role: with Authenticator.admin_users, a name removed from
    # the list keeps admin=True in the database for ever.
    roles: list[dict[str, object]] = [{"name": "admin", "users": sorted(settings.admins)}]
    culler = culler_service(settings.server_idle_timeout)
    lines.append("")
    roles.append(
        {"name": SMOKE_SERVICE, "scopes": list(SMOKE_SCOPES), "services": [SMOKE_SERVICE]}
    )
    lines += [
        "# `sparkstack smoke` tests the hub as this service, with its own account only;",
        "# its token is read at start from a root-only file.",
        "c.JupyterHub.services = [",
        f'    {{"name": "{SMOKE_SERVICE}",',
        f'     "api_token": Path({_py(p.smoke_token)}).read_text().strip()}},',
        "]",
    ]
    if culler is not None:
        roles.append(
            {"name": "idle-culler", "scopes": list(CULLER_SCOPES), "services": ["idle-culler"]}
        )
        lines += [
            "# Stops servers idle for longer than culling.server_idle_timeout.",
            f"c.JupyterHub.services.append({_py(culler)})",
        ]
    else:
        lines += ["# culling.server_idle_timeout = 0: servers are never culled."]
    # addresses[0]: the master's fixed IP, where Spark's UIs listen
    cluster_ui = cluster_ui_service(master_ip=settings.addresses[0],
                                    python_path=p.singleuser_python)
    lines += [
        "# The Spark master's and workers' UIs at /services/spark/, for admins only (they",
        "# hold access:services; nobody else does).",
        f"c.JupyterHub.services.append({_py(cluster_ui)})",
    ]
    lines.append(f"c.JupyterHub.load_roles = {_py(roles)}")
    return "\n".join(lines) + "\n"


def render_unit(settings: HubSettings) -> str:
    """The systemd unit of the hub.

    Root, because PAM checks passwords and LocalProcessSpawner setuids to each user. The
    working directory is the state dir, so nothing lands in /root.
    """
    p = settings.paths
    return "\n".join(
        [
            "# Written by sparkstack; rewritten on every run.",
            "[Unit]",
            "Description=JupyterHub of the sparkstack cluster",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            "User=root",
            f"WorkingDirectory={p.state_dir}",
            # configurable-http-proxy is a global npm package (/usr/local/bin).
            f"Environment=PATH={VENV}/bin:/usr/local/bin:/usr/bin:/bin",
            f"ExecStart={VENV}/bin/jupyterhub --config={p.config}",
            # Beside the Spark master, apart from the users' servers (hub/limits.py), and
            # among the last the OOM killer picks: the proxy and the hub's services
            # inherit it; each user's server raises its own (hub/singleuser.py).
            f"Slice={CORE_SLICE}",
            f"OOMScoreAdjust={CORE_OOM_SCORE_ADJ}",
            # Stopping the hub must not kill the users' servers (children started in their
            # own sessions): systemd's default control-group mode would, on every restart.
            # The hub stops the proxy it started itself.
            "KillMode=process",
            # The hub itself stops in about a second. Debian's daemonless systemctl (the
            # test bed's) also waits for those children, up to this long, before it
            # restarts; its default of 90 s would stall every restart with a server up.
            "TimeoutStopSec=15",
            "Restart=on-failure",
            "RestartSec=5",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )
