"""The hub's configuration as pure functions: settings in, config and unit text out.

The config text is executed against a recording stand-in for traitlets' ``c``, so each
test reads back what JupyterHub would be configured with, not a substring of the file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import os
import shlex
import stat
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioner.errors import RemoteError, UserInputError
from provisioner.hub import HubPaths, HubSettings, Sudo, ensure_tls, render_config, render_unit
from provisioner.hub.acme import (
    acme_cert_problem,
    lego_args,
    render_hook,
    render_install,
    render_renew_service,
    render_renew_timer,
)
from provisioner.hub.config import CULLER_SCOPES
from provisioner.hub.oidc import ADD_USER, OidcEndpoints, callback_note, parse_discovery
from provisioner.hub.singleuser import (
    NOTEBOOK_OOM_SCORE_ADJ,
    PYSPARK_KERNEL,
    SPARKUI_EXTENSION,
    render_lab_overrides,
    render_singleuser_config,
    render_sparkui_enabled,
    sparkui_module,
)
from provisioner.hub.tls import cert_problem, fingerprint, openssl_config
from provisioner.inventory import HUB_API_PORT, PROXY_API_PORT, parse_inventory
from provisioner.inventory.oidc import OidcConfig
from provisioner.inventory.services import MIN_SERVER_IDLE_TIMEOUT
from provisioner.render import KERNEL_DIR

SMOKE_TOKEN = "c0ffee" * 10 + "beef"
TOKEN = "4f1c0ffee5ecret0000aaaabbbbccccddddeeeeffff0000111122223333444455"


class _Recorder:
    """Stands in for traitlets' Config: ``c.Section.trait = value`` is recorded."""

    def __init__(self) -> None:
        self.sections: dict[str, SimpleNamespace] = {}

    def __getattr__(self, name: str) -> SimpleNamespace:
        return self.sections.setdefault(name, SimpleNamespace())


def _settings(tmp_path: Path, **changes) -> HubSettings:
    base = HubSettings(
        users=("alice", "bob"),
        admins=("alice",),
        port=443,
        spark_master_url="spark://10.0.0.5:7077",
        addresses=("10.0.0.5", "203.0.113.7"),
        paths=HubPaths(config_dir=str(tmp_path / "etc"), state_dir=str(tmp_path / "state")),
    )
    return replace(base, **changes)


def _load(settings: HubSettings, **kwargs) -> _Recorder:
    """Run the config as JupyterHub would, with the proxy token file in place."""
    token = Path(settings.paths.proxy_token)
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(TOKEN + "\n")
    Path(settings.paths.smoke_token).write_text(SMOKE_TOKEN + "\n")
    c = _Recorder()
    exec(render_config(settings, **kwargs), {"get_config": lambda: c})
    return c


def test_smoke_service_reads_its_token_from_a_file_and_acts_on_its_account_only(tmp_path):
    settings = _settings(tmp_path)
    text = render_config(settings)
    assert SMOKE_TOKEN not in text
    c = _load(settings)
    smoke = next(s for s in c.JupyterHub.services if s["name"] == "sparkstack-smoke")
    assert smoke["api_token"] == SMOKE_TOKEN
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == "sparkstack-smoke")
    assert role["services"] == ["sparkstack-smoke"]
    assert role["scopes"] and all(s.endswith("!user=sparkstack-smoke") for s in role["scopes"])


def test_pam_with_explicit_users_and_exact_admins(tmp_path):
    c = _load(_settings(tmp_path, users=("bob", "alice", "carol"), admins=("carol", "alice")))
    assert c.JupyterHub.authenticator_class == "pam"
    assert c.Authenticator.allowed_users == {"alice", "bob", "carol"}
    # Without this, JupyterHub >= 5 keeps letting in everyone still in its database.
    assert c.Authenticator.allow_existing_users is False
    admin_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "admin")
    assert admin_role["users"] == ["alice", "carol"]
    assert set(admin_role["users"]) <= c.Authenticator.allowed_users


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"addresses": ()}, "addresses are unknown"),
        ({"addresses": ("master",)}, "not an IP address"),
    ],
)
def test_invalid_settings_cannot_be_built(tmp_path, changes, message):
    with pytest.raises(UserInputError, match=message):
        _settings(tmp_path, **changes)


@pytest.mark.parametrize("port", [443, 8443, 9000])
def test_https_on_the_public_port_and_internal_apis_on_loopback(tmp_path, port):
    settings = _settings(tmp_path, port=port)
    c = _load(settings)
    assert c.JupyterHub.bind_url == f"https://:{port}"
    assert c.JupyterHub.ssl_cert == settings.paths.cert
    assert c.JupyterHub.ssl_key == settings.paths.key
    assert c.JupyterHub.hub_bind_url == f"http://127.0.0.1:{HUB_API_PORT}"
    assert c.ConfigurableHTTPProxy.api_url == f"http://127.0.0.1:{PROXY_API_PORT}"
    assert c.JupyterHub.cookie_secret_file == settings.paths.cookie_secret


def test_no_secret_in_config_or_unit_but_the_hub_reads_the_token(tmp_path):
    settings = _settings(tmp_path)
    c = _load(settings)
    assert c.ConfigurableHTTPProxy.auth_token == TOKEN
    for text in (render_config(settings), render_unit(settings)):
        assert TOKEN not in text
        assert "CONFIGPROXY_AUTH_TOKEN" not in text


@pytest.mark.parametrize(
    ("timeout", "expected_every"), [(0, None), (MIN_SERVER_IDLE_TIMEOUT, 110), (3600, 600)]
)
def test_idle_culler_is_a_scoped_service_or_absent(tmp_path, timeout, expected_every):
    c = _load(_settings(tmp_path, server_idle_timeout=timeout))
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    others = [s for s in c.JupyterHub.services if s["name"] not in ("sparkstack-smoke", "spark")]
    if expected_every is None:
        assert others == []
        assert "idle-culler" not in roles
        return
    (service,) = others
    assert service["name"] == "idle-culler"
    assert f"--timeout={timeout}" in service["command"]
    assert f"--cull-every={expected_every}" in service["command"]
    assert service["command"][:3] == ["/opt/sparkstack/venv/bin/python", "-m",
                                      "jupyterhub_idle_culler"]
    role = roles["idle-culler"]
    assert role["services"] == ["idle-culler"]
    assert sorted(role["scopes"]) == sorted(CULLER_SCOPES)
    assert "admin" not in role["scopes"]


def test_the_spark_ui_service_runs_as_nobody_for_admins_only(tmp_path):
    settings = _settings(tmp_path)
    c = _load(settings)
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "spark"]
    assert service["user"] == "nobody"
    assert service["url"] == "http://127.0.0.1:15002"  # loopback: only the proxy reaches it
    assert service["command"] == ["/opt/sparkstack/venv/bin/python", "-m", "sparkstack_clusterui"]
    assert service["environment"] == {
        "PYTHONPATH": settings.paths.singleuser_python,
        "SPARKSTACK_MASTER_UI": f"http://{settings.addresses[0]}:8080",
    }
    # no role names it: only the admin role's access:services lets anyone through
    assert not [r for r in c.JupyterHub.load_roles if "spark" in r.get("services", [])]
    assert "access:services" not in str(c.JupyterHub.load_roles)


@pytest.mark.parametrize(("timeout", "interval"), [(0, None), (60, 30), (1800, 300)])
def test_kernel_culling_in_the_single_user_server(tmp_path, timeout, interval):
    c = _load(_settings(tmp_path, kernel_idle_timeout=timeout))
    args = getattr(c.Spawner, "args", [])
    if interval is None:
        assert not any("cull" in a for a in args)
        return
    assert f"--MappingKernelManager.cull_idle_timeout={timeout}" in args
    assert f"--MappingKernelManager.cull_interval={interval}" in args
    assert "--MappingKernelManager.cull_connected=True" in args


def test_single_user_server_is_jupyterlab_from_the_venv_with_the_cluster(tmp_path):
    settings = _settings(tmp_path)
    c = _load(settings)
    assert c.Spawner.cmd[-1] == "/opt/sparkstack/venv/bin/jupyterhub-singleuser"
    assert c.Spawner.default_url == "/lab"
    assert c.Spawner.environment == {"MASTER": "spark://10.0.0.5:7077",
                                     "JUPYTER_CONFIG_PATH": settings.paths.singleuser_dir,
                                     "PYTHONPATH": settings.paths.singleuser_python}
    # the Spark UI extension: on that path, and switched on where the servers read config
    assert settings.paths.sparkui_module.startswith(settings.paths.singleuser_python + "/")
    assert settings.paths.sparkui_enabled.startswith(settings.paths.singleuser_dir + "/")
    assert json.loads(render_sparkui_enabled()) == {
        "ServerApp": {"jpserver_extensions": {SPARKUI_EXTENSION: True}}}
    assert "def _jupyter_server_extension_points" in sparkui_module()
    # A hub restart (a user added) must not stop everybody's notebooks.
    assert c.JupyterHub.cleanup_servers is False


def test_single_user_server_and_what_it_starts_make_private_files(tmp_path):
    """The command's wrapper run for real, in front of a stand-in for the server: the
    spawner's arguments reach it unchanged, and what it writes is its user's alone."""
    c = _load(_settings(tmp_path))
    wrapper = c.Spawner.cmd[:-1]
    made = tmp_path / "Untitled.ipynb"
    server = ["/bin/sh", "-c", 'cat /proc/self/oom_score_adj; umask; printf "%s\\n" "$@";'
              ' echo {} >"$0"', str(made)]  # fmt: skip
    args = ["--MappingKernelManager.cull_idle_timeout=60", "two words", "$HOME", "*"]
    proc = subprocess.run([*wrapper, *server, *args], capture_output=True, text=True,
                          check=True, preexec_fn=lambda: os.umask(0o022))
    # the OOM killer's first pick: what the server starts inherits its score
    assert proc.stdout.splitlines() == [str(NOTEBOOK_OOM_SCORE_ADJ), "0077", *args]
    assert stat.S_IMODE(made.stat().st_mode) == 0o600


def test_single_user_servers_offer_only_the_pyspark_kernel_and_fetch_no_news():
    config = json.loads(render_singleuser_config())
    assert PYSPARK_KERNEL == Path(KERNEL_DIR).name == "pyspark"
    assert config["MappingKernelManager"] == {"default_kernel_name": "pyspark"}
    # "Python 3 (ipykernel)" from the venv would start without `sc`.
    assert config["KernelSpecManager"] == {"allowed_kernelspecs": ["pyspark"]}
    assert config["LabApp"] == {"news_url": None,
                                "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}


def test_jupyterlab_never_asks_about_the_news():
    overrides = json.loads(render_lab_overrides())
    # JupyterLab 4.6's schema: fetchNews is a string, "none" asks, "false" is Never.
    assert overrides == {"@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false", "checkForUpdates": False}}


@pytest.mark.parametrize(
    ("users", "former", "blocked"),
    [
        (("alice", "bob"), (), set()),
        (("alice",), ("bob",), {"bob"}),
        # Added back: a former user is a user again, not blocked.
        (("alice", "bob"), ("bob", "carol"), {"carol"}),
    ],
)
def test_former_users_are_blocked(tmp_path, users, former, blocked):
    c = _load(_settings(tmp_path, users=users), former_users=former)
    assert c.Authenticator.blocked_users == blocked
    assert not blocked & c.Authenticator.allowed_users


def test_config_text_does_not_depend_on_list_order(tmp_path):
    # A re-run with the same users in another order must not rewrite it (and restart).
    one = render_config(_settings(tmp_path, users=("alice", "bob", "carol"),
                                  admins=("alice", "bob")), former_users=("x", "y"))
    two = render_config(_settings(tmp_path, users=("carol", "bob", "alice"),
                                  admins=("bob", "alice")), former_users=("y", "x"))
    assert one == two


def test_unit_runs_the_hub_as_root_outside_root_home(tmp_path):
    settings = _settings(tmp_path)
    lines = render_unit(settings).splitlines()
    assert "User=root" in lines
    assert f"WorkingDirectory={settings.paths.state_dir}" in lines
    assert not any(line.startswith("WorkingDirectory=/root") for line in lines)
    # A restart for a config change leaves the users' servers running.
    assert "KillMode=process" in lines
    assert (f"ExecStart=/opt/sparkstack/venv/bin/jupyterhub --config={settings.paths.config}"
            in lines)


def test_default_paths_keep_state_out_of_root():
    paths = HubPaths()
    for path in (paths.state_dir, paths.database, paths.cookie_secret, paths.proxy_token):
        assert not path.startswith("/root")
    assert paths.unit == "/etc/systemd/system/sparkstack-hub.service"


def test_settings_from_the_inventory():
    inv = parse_inventory(
        {
            "cluster": {"name": "demo", "image": "debian-12"},
            "network": {"name": "private"},
            "master": {"flavor": "m1.large"},
            "workers": {"flavor": "m1.medium"},
            "jupyterhub": {
                "users": ["alice", "bob"],
                "admins": ["bob"],
                "port": 8443,
                "culling": {"server_idle_timeout": 0, "kernel_idle_timeout": 600},
            },
        },
        source="test",
    )
    settings = HubSettings.from_inventory(inv, master_ip="10.0.0.9",
                                          floating_ips=["203.0.113.9", "10.0.0.9"])
    assert settings.users == ("alice", "bob") and settings.admins == ("bob",)
    assert settings.port == 8443
    assert settings.addresses == ("10.0.0.9", "203.0.113.9")
    assert settings.spark_master_url == "spark://10.0.0.9:7077"
    assert (settings.server_idle_timeout, settings.kernel_idle_timeout) == (0, 600)
    assert settings.tls_mode == "self-signed"


# --- The self-signed certificate's checks (the certificate itself is made on the node) ---


def _cert(addresses: list[str], *, days: int = 825) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sparkstack-hub")])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    if addresses:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            ),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("cert", "wanted", "problem"),
    [
        (None, ["10.0.0.5"], "no certificate"),
        (b"not a certificate", ["10.0.0.5"], "does not parse"),
        (_cert(["10.0.0.5", "203.0.113.7"]), ["10.0.0.5", "203.0.113.7"], None),
        (_cert(["10.0.0.5"]), ["10.0.0.5", "203.0.113.7"], "does not cover 203.0.113.7"),
        (_cert([]), ["10.0.0.5"], "does not cover 10.0.0.5"),
        (_cert(["10.0.0.5"], days=10), ["10.0.0.5"], "expires"),
    ],
    # made afresh at each collection: ids that do not change, for pytest-xdist's workers
    ids=["none", "not-pem", "covers-both", "misses-one", "no-addresses", "expires-soon"],
)
def test_when_a_self_signed_certificate_is_remade(cert, wanted, problem):
    found = cert_problem(cert, addresses=wanted)
    assert (found is None) if problem is None else (problem in found)


def test_fingerprint_is_sha256_of_the_der_certificate():
    pem = _cert(["10.0.0.5"])
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    expected = x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex().upper()
    assert fingerprint(pem).replace(":", "") == expected
    assert len(fingerprint(pem).split(":")) == 32


def test_openssl_config_names_every_address_as_an_ip_san():
    text = openssl_config(["10.0.0.5", "2001:db8::1"])
    assert "subjectAltName = IP:10.0.0.5,IP:2001:db8::1" in text
    assert "CA:FALSE" in text
    with pytest.raises(ValueError):
        openssl_config(["master.example.org"])


# --- TLS from the inventory's files, against an in-memory node ---------------------------


class _Files:
    """A node that only stores files: enough for steps that run no command."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, int, str]] = {}

    def run(self, command, *, input=None, timeout=None, check=True):
        raise AssertionError(f"unexpected command: {command}")

    def put(self, path, data, *, mode, owner, group):
        new = (data, mode, f"{owner}:{group}")
        changed = self.files.get(path) != new
        self.files[path] = new
        return changed

    def read(self, path):
        return self.files[path][0] if path in self.files else None


def _key_and_cert(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.example.org")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_tls_files_are_copied_once_with_a_root_only_key(tmp_path):
    key, cert = _key_and_cert(tmp_path, "hub")
    settings = _settings(tmp_path, tls_mode="files", tls_cert_file=cert, tls_key_file=key)
    node = _Files()
    first = ensure_tls(node, settings)
    assert first.changed
    assert node.files[settings.paths.key][1:] == (0o600, "root:root")
    assert node.files[settings.paths.cert][1:] == (0o644, "root:root")
    assert first.fingerprint == fingerprint(cert.read_bytes())
    second = ensure_tls(node, settings)
    assert not second.changed and second.fingerprint == first.fingerprint


def test_tls_files_whose_key_is_not_the_certificates_are_refused(tmp_path):
    key, _ = _key_and_cert(tmp_path, "one")
    _, cert = _key_and_cert(tmp_path, "two")
    settings = _settings(tmp_path, tls_mode="files", tls_cert_file=cert, tls_key_file=key)
    node = _Files()
    with pytest.raises(UserInputError, match="is not the key of"):
        ensure_tls(node, settings)
    assert node.files == {}


# --- ACME: the certificate's checks and the renewal's files ------------------------------


def _issued(names: list[str], *, days: int = 90, self_signed: bool = False) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")])
    issuer = subject if self_signed else x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Test Intermediate")])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("cert", "problem"),
    [
        (None, "no certificate"),
        (b"junk", "does not parse"),
        (_issued(["hub.example.org"]), None),
        (_issued(["www.example.org", "hub.example.org"]), None),
        (_issued(["hub.example.org"], days=29), "expires"),
        (_issued(["other.example.org"]), "does not cover hub.example.org"),
        (_issued([]), "does not cover hub.example.org"),
        (_issued(["hub.example.org"], self_signed=True), "self-signed"),
        # What the hub had in self-signed mode: IPs only.
        (_cert(["10.0.0.5"]), "self-signed"),
    ],
    ids=["none", "not-pem", "one-name", "two-names", "expires-soon", "other-name",
         "no-names", "self-signed-name", "self-signed-ips"],  # fmt: skip
)
def test_when_an_acme_certificate_is_obtained_again(cert, problem):
    found = acme_cert_problem(cert, domain="hub.example.org")
    assert (found is None) if problem is None else (problem in found), found


def _acme(tmp_path: Path, **changes) -> HubSettings:
    acme = {"tls_mode": "acme", "tls_domain": "hub.example.org", "tls_email": "me@example.org"}
    return _settings(tmp_path, **{**acme, **changes})


def test_renewal_runs_lego_with_the_same_account_and_a_restarting_hook(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    settings = _acme(tmp_path, acme_directory="https://ca.test:14000/dir", acme_ca_file=ca)
    p = settings.paths
    unit = render_renew_service(settings, lego="/usr/bin/lego")
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv == ["/usr/bin/lego", *lego_args(settings), "renew", "--days=30",
                    f"--renew-hook={p.acme_hook}"]
    assert "--server=https://ca.test:14000/dir" in argv and f"--path={p.acme_dir}" in argv
    # lego binds no port: it leaves the challenge in the webroot the port-80 server serves
    assert f"--http.webroot={p.acme_webroot}" in argv and "--domains=hub.example.org" in argv
    assert not any(a.startswith("--http.port") for a in argv)
    assert f'Environment="LEGO_CA_CERTIFICATES={p.acme_ca}"' in unit
    assert "Type=oneshot" in unit
    timer = render_renew_timer()
    assert "OnCalendar=daily" in timer and "WantedBy=timers.target" in timer
    hook = render_hook(settings)
    assert hook.splitlines()[-2:] == [p.acme_install, "systemctl restart sparkstack-hub"]
    install = render_install(settings)
    assert install.index("umask 077") < install.index("cp ")
    assert f"mv -f {p.key}.new {p.key}" in install


def test_renewal_unit_escapes_what_systemd_would_expand(tmp_path):
    settings = _acme(tmp_path, tls_email="100%$me@example.org")
    unit = render_renew_service(settings, lego="/usr/bin/lego")
    assert '"--email=100%%$$me@example.org"' in unit
    # Without a CA file lego trusts the system store: no environment at all.
    assert "Environment=" not in unit


def test_sudo_makes_every_call_of_a_login_session_as_root():
    calls = []

    class Session:
        def run(self, command, **kwargs):
            calls.append(("run", kwargs["sudo"]))
            return 0, "out", ""

        def put(self, path, data, **kwargs):
            calls.append(("put", kwargs["sudo"]))
            return True

        def read(self, path, **kwargs):
            calls.append(("read", kwargs["sudo"]))
            return b"x"

    shell = Sudo(Session())
    assert shell.run("id -u") == (0, "out", "")
    assert shell.put("/etc/x", b"x", mode=0o600, owner="root", group="root")
    assert shell.read("/etc/x") == b"x"
    assert calls == [("run", True), ("put", True), ("read", True)]


# --- single sign-on ------------------------------------------------------------------------

ENDPOINTS = OidcEndpoints(
    issuer="https://login.example.org/realms/research",
    authorize="https://login.example.org/realms/research/protocol/openid-connect/auth",
    token="https://login.example.org/realms/research/protocol/openid-connect/token",
    userinfo="https://login.example.org/realms/research/protocol/openid-connect/userinfo",
)


def _sso(tmp_path: Path, **changes) -> HubSettings:
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret-of-the-client\n")
    keys = {"issuer": ENDPOINTS.issuer, "client_id": "sparkstack",
            "client_secret_file": str(secret), "allowed_groups": ["spark-users"],
            "admin_groups": ["spark-admins"]}
    oidc = OidcConfig(**(keys | changes))
    return _settings(tmp_path, oidc=oidc)


def test_single_sign_on_is_generic_oauth_with_the_discovered_endpoints(tmp_path):
    settings = _sso(tmp_path)
    with pytest.raises(ValueError, match="needs the provider's endpoints"):
        render_config(settings)
    text = render_config(settings, oidc=ENDPOINTS, former_users=["carol"])
    assert "s3cret" not in text, "the config names the secret's file, never the secret"
    secret_file = Path(settings.paths.oidc_secret)
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text("s3cret-of-the-client\n")
    c = _load(settings, oidc=ENDPOINTS, former_users=["carol"])
    gen = c.GenericOAuthenticator
    assert c.JupyterHub.authenticator_class == "generic-oauth"
    assert (gen.client_id, gen.client_secret) == ("sparkstack", "s3cret-of-the-client")
    assert (gen.authorize_url, gen.token_url, gen.userdata_url) == (
        ENDPOINTS.authorize, ENDPOINTS.token, ENDPOINTS.userinfo)
    # the floating address: where browsers come back to, as the provider must know it
    assert gen.oauth_callback_url == "https://203.0.113.7/hub/oauth_callback"
    assert gen.scope == ["openid", "profile", "email"] and gen.enable_pkce is True
    assert gen.username_claim == "preferred_username"
    assert (gen.manage_groups, gen.auth_state_groups_key) == (True, "oauth_user.groups")
    assert (gen.allowed_groups, gen.admin_groups) == ({"spark-users"}, {"spark-admins"})
    # the inventory's admins stay admins although admin_groups decides at each login
    assert c.Authenticator.admin_users == {"alice"}
    assert c.Authenticator.allowed_users == {"alice", "bob"}
    # former users, and every system account a provider might name, stay out
    assert {"carol", "root", "debian", "ubuntu", "spark", "sparkstack-smoke"} <= (
        c.Authenticator.blocked_users)
    assert c.Authenticator.username_pattern == "^[a-z][a-z0-9_-]{0,31}$"
    assert not hasattr(gen, "http_request_kwargs"), "the system's CAs unless one is named"
    assert callable(c.Authenticator.post_auth_hook)

    # a private CA, and no groups: names only
    settings = _sso(tmp_path, ca_file=str(secret_file), allowed_groups=[], admin_groups=[])
    c = _load(settings, oidc=ENDPOINTS)
    gen = c.GenericOAuthenticator
    assert gen.http_request_kwargs == {"ca_certs": settings.paths.oidc_ca}
    assert not hasattr(gen, "manage_groups") and not hasattr(gen, "allowed_groups")
    assert not hasattr(c.Authenticator, "admin_users"), "roles alone decide, as with PAM"


def test_the_account_hook_makes_new_accounts_and_refuses_system_ones(tmp_path):
    """The post-auth hook as the hub runs it (as root, after the provider said yes)."""
    settings = _sso(tmp_path)
    Path(settings.paths.oidc_secret).parent.mkdir(parents=True, exist_ok=True)
    Path(settings.paths.oidc_secret).write_text("x\n")
    token = Path(settings.paths.proxy_token)
    token.write_text(TOKEN + "\n")
    Path(settings.paths.smoke_token).write_text(SMOKE_TOKEN + "\n")
    namespace: dict = {"get_config": lambda: _Recorder()}
    exec(render_config(settings, oidc=ENDPOINTS), namespace)
    hook = namespace["_unix_account"]
    made = tmp_path / "made"
    # the add-user script, as a stand-in that records whom it was asked to make
    add = tmp_path / "add-user"
    add.write_text(f'#!/bin/sh\necho "$1" >>{made}\n[ "$1" != broken ] || exit 3\n'
                   'echo "created $1"\n')
    add.chmod(0o755)
    namespace["ADD_USER"] = str(add)
    authenticator = SimpleNamespace(log=logging.getLogger("hook"))

    def login(name: str):
        return asyncio.run(hook(authenticator, None, {"name": name, "admin": None}))

    # an account this machine has, which sparkstack did not make for the hub: never
    assert login("daemon") is None
    # a new name: its account is made, then the login goes on
    assert login("zz-first-login") == {"name": "zz-first-login", "admin": None}
    assert login("broken") is None, "no account, no login"
    assert made.read_text().split() == ["zz-first-login", "broken"]
    # an account the inventory made for the hub is let in as it is
    namespace["INVENTORY_USERS"] = {"daemon"}
    assert login("daemon") == {"name": "daemon", "admin": None}


def test_the_add_user_script_refuses_names_and_groups_it_must_not_touch(tmp_path):
    script = tmp_path / "add-sso-user"
    script.write_text(ADD_USER)
    script.chmod(0o755)
    # useradd must never run for these: a stand-in on PATH records it if it does
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "useradd").write_text(f"#!/bin/sh\necho ran >{tmp_path}/useradd-ran\n")
    (bin_dir / "useradd").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
    for name, code, words in (("root", 3, "account root exists"),
                              ("sudo", 4, "sudo is a group"),
                              ("Eve", 2, "not a valid user name"),
                              ("-o", 2, "not a valid user name")):  # fmt: skip
        done = subprocess.run([str(script), name], env=env, capture_output=True, text=True)
        assert (done.returncode, words in done.stderr) == (code, True), (name, done.stderr)
    assert not (tmp_path / "useradd-ran").exists()


def test_the_providers_discovery_document_must_name_its_issuer_and_https_endpoints():
    issuer = ENDPOINTS.issuer
    doc = {"issuer": issuer, "authorization_endpoint": ENDPOINTS.authorize,
           "token_endpoint": ENDPOINTS.token, "userinfo_endpoint": ENDPOINTS.userinfo}
    assert parse_discovery(issuer + "/", "noise\n" + json.dumps(doc)) == replace(
        ENDPOINTS, issuer=issuer + "/")
    with pytest.raises(RemoteError, match="cannot read the provider's https://login.example.org"
                                          "/realms/research/.well-known/openid-configuration: "
                                          "SSLCertVerificationError"):
        parse_discovery(issuer, json.dumps({"error": "SSLCertVerificationError: bad"}))
    with pytest.raises(RemoteError, match="names the issuer 'https://evil.example.org'"):
        parse_discovery(issuer, json.dumps(doc | {"issuer": "https://evil.example.org"}))
    with pytest.raises(RemoteError, match="gives no https:// token_endpoint or "
                                          "userinfo_endpoint"):
        parse_discovery(issuer, json.dumps(doc | {"token_endpoint": "http://x/token",
                                                  "userinfo_endpoint": None}))
    with pytest.raises(RemoteError, match="no answer"):
        parse_discovery(issuer, "")


def test_the_redirect_uri_note_names_the_address_once_it_is_known(tmp_path):
    oidc = _sso(tmp_path).oidc
    assert oidc is not None
    assert callback_note(oidc, hub_root="https://hub.example.org:8443/") == (
        f"single sign-on through {ENDPOINTS.issuer}: register the redirect URI "
        "https://hub.example.org:8443/hub/oauth_callback for client sparkstack at the provider")
    assert callback_note(oidc, hub_root=None).endswith(
        "https://<the master's floating IP>/hub/oauth_callback for client sparkstack at the "
        "provider (the address is known once `up` has attached it)")
