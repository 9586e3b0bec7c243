"""The hub's certificate from an ACME CA (tls.mode = "acme"), obtained and renewed by lego.

lego runs on the master and answers the CA's HTTP-01 challenge through a webroot that the
master's port-80 server serves (provisioner/hub/acme_http.py), which redirects every other
plain-HTTP request to the hub's HTTPS (jupyterhub.port). The account key and the private
key are made by lego on the node and never leave it; only the public certificate comes
back, to be checked here. Renewal needs no provisioner: a systemd timer runs ``lego renew
--days 30``, whose hook installs the new certificate and restarts the hub only when lego
really renewed it.

Let's Encrypt allows 5 certificates per week for the same names, so a run never asks the
CA again while the one in lego's store is still good: it installs that one instead.
"""

from __future__ import annotations

import logging

from cryptography import x509

from provisioner.errors import RemoteError
from provisioner.hub.acme_http import ensure_http_redirect, unit_word
from provisioner.hub.config import ACME_UNIT_NAME, UNIT_NAME, HubSettings
from provisioner.hub.shell import MASTER, Shell, Step, q
from provisioner.hub.tls import (
    RENEW_BEFORE,
    TlsStep,
    fingerprint,
    key_matches,
    subject_alt_names,
    usable_cert,
)

log = logging.getLogger(__name__)

# lego renews when fewer days than this are left: the same margin as every other mode.
RENEW_DAYS = RENEW_BEFORE.days
_HINT = (
    "{domain} must resolve to the master's floating IP, port 80 must be reachable from the "
    'internet (the security group opens it with tls.mode = "acme") and answered by the '
    "master's port-80 server (systemctl status sparkstack-hub-http); check "
    "tls.acme_directory (and tls.acme_ca_file for a private CA), then run again"
)


def acme_cert_problem(cert_pem: bytes | None, *, domain: str) -> str | None:
    """Why the hub's certificate must be obtained (again), or None if it is good to keep."""
    cert = usable_cert(cert_pem)
    if isinstance(cert, str):
        return cert
    # A self-signed certificate left from another mode covers IPs only, but say why.
    if cert.issuer == cert.subject:
        return "certificate is self-signed"
    san = subject_alt_names(cert)
    names = {n.lower() for n in san.get_values_for_type(x509.DNSName)} if san else set()
    if domain not in names:
        return f"certificate does not cover {domain}"
    return None


def _domain(settings: HubSettings) -> str:
    assert settings.tls_domain and settings.tls_email, "the inventory requires them for acme"
    return settings.tls_domain


def lego_args(settings: HubSettings) -> list[str]:
    """lego's global options, the same for obtaining and renewing (its account and store)."""
    return [
        # Accepting the CA's terms is what registering an account means.
        "--accept-tos",
        f"--email={settings.tls_email}",
        f"--server={settings.acme_directory}",
        f"--path={settings.paths.acme_dir}",
        "--http",
        # The port-80 server answers the challenge from here: lego binds no port.
        f"--http.webroot={settings.paths.acme_webroot}",
        f"--domains={_domain(settings)}",
    ]


def _lego_env(settings: HubSettings) -> dict[str, str]:
    # lego trusts the system store plus the PEM file this variable names.
    return {"LEGO_CA_CERTIFICATES": settings.paths.acme_ca} if settings.acme_ca_file else {}


def _stored(settings: HubSettings) -> tuple[str, str]:
    """Where lego keeps the certificate (with its chain) and key it obtained."""
    base = f"{settings.paths.acme_dir}/certificates/{_domain(settings)}"
    return f"{base}.crt", f"{base}.key"


def render_install(settings: HubSettings) -> str:
    """A script that copies lego's certificate and key where the hub reads them."""
    p = settings.paths
    crt, key = _stored(settings)
    return "\n".join(
        [
            "#!/bin/sh",
            "# Written by sparkstack; rewritten on every run. Puts the certificate lego",
            "# obtained where the hub reads it.",
            "set -eu",
            # umask first: the key's copy is 0600 from the moment it exists.
            "umask 077",
            f"cp {q(key)} {q(p.key)}.new",
            f"cp {q(crt)} {q(p.cert)}.new",
            f"chmod 0644 {q(p.cert)}.new",
            f"mv -f {q(p.key)}.new {q(p.key)}",
            f"mv -f {q(p.cert)}.new {q(p.cert)}",
            "",
        ]
    )


def render_hook(settings: HubSettings) -> str:
    """lego's --renew-hook, run only when it renewed: install, then restart the hub."""
    return "\n".join(
        [
            "#!/bin/sh",
            "# Written by sparkstack; rewritten on every run.",
            "set -eu",
            q(settings.paths.acme_install),
            f"systemctl restart {q(UNIT_NAME)}",
            "",
        ]
    )


def render_renew_service(settings: HubSettings, *, lego: str) -> str:
    argv = [lego, *lego_args(settings), "renew", f"--days={RENEW_DAYS}",
            f"--renew-hook={settings.paths.acme_hook}"]
    env = [f"Environment={unit_word(f'{k}={v}')}" for k, v in _lego_env(settings).items()]
    return "\n".join(
        [
            "# Written by sparkstack; rewritten on every run.",
            "[Unit]",
            f"Description=Renew the ACME certificate of the sparkstack hub ({_domain(settings)})",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            *env,
            "ExecStart=" + " ".join(unit_word(a) for a in argv),
            "",
        ]
    )


def render_renew_timer() -> str:
    return "\n".join(
        [
            "# Written by sparkstack; rewritten on every run.",
            "[Unit]",
            "Description=Daily renewal check of the sparkstack hub's certificate",
            "",
            "[Timer]",
            "OnCalendar=daily",
            # Spread the CA's load (Let's Encrypt asks clients not to renew on the hour);
            # a day missed while the master was off is caught up at boot.
            "RandomizedDelaySec=6h",
            "Persistent=true",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )


def ensure_lego(shell: Shell) -> str:
    """The path of lego on the master, installed from the distribution if missing."""
    status, out, err = shell.run(
        "command -v lego || { DEBIAN_FRONTEND=noninteractive apt-get install -y lego"
        " >/dev/null 2>&1 && command -v lego; }",
        check=False,
        timeout=600,
    )
    path = out.strip().splitlines()[-1] if out.strip() else ""
    if status != 0 or not path.startswith("/"):
        raise RemoteError(
            "lego (the ACME client) is not on the master and `apt-get install -y lego` failed",
            resource=MASTER,
            step="hub acme",
            log_tail=err,
            hint="install lego on the master (Debian and Ubuntu package it), then run again",
        )
    return path


def ensure_acme_client(shell: Shell, settings: HubSettings) -> Step:
    """lego, the directory's CA bundle, the install and hook scripts, the renewal timer,
    and the port-80 server that lego's challenges go through.

    Runs before the certificate step (which uses all of it); none of it is read by the hub,
    so a change here restarts nothing.
    """
    p = settings.paths
    lego = ensure_lego(shell)
    root = {"owner": "root", "group": "root"}
    wrote = []
    if settings.acme_ca_file is not None:
        ca = settings.acme_ca_file.read_bytes()
        if shell.put(p.acme_ca, ca, mode=0o644, **root):
            wrote.append("CA bundle")
    files = [
        (p.acme_install, render_install(settings), 0o755, "install script"),
        (p.acme_hook, render_hook(settings), 0o755, "renewal hook"),
    ]
    units = [
        (p.acme_service, render_renew_service(settings, lego=lego), 0o644, "renewal service"),
        (p.acme_timer, render_renew_timer(), 0o644, "renewal timer"),
    ]
    units_changed = False
    for path, text, mode, what in files + units:
        if shell.put(path, text.encode(), mode=mode, **root):
            wrote.append(what)
            units_changed = units_changed or path in (p.acme_service, p.acme_timer)
    if units_changed:
        # The daemonless systemctl of small images has nothing to reload.
        shell.run("systemctl daemon-reload", check=False)
    timer = q(f"{ACME_UNIT_NAME}.timer")
    if shell.run(f"systemctl is-enabled {timer}", check=False)[0] != 0:
        shell.run(f"systemctl enable {timer}")
        wrote.append("timer enabled")
    # Only a booted systemd runs timers (sd_booted(3) checks this directory); without one
    # (the daemonless systemctl of containers) enabled is all there is to be.
    _, out, _ = shell.run(
        f"if [ -d /run/systemd/system ] && ! systemctl is-active --quiet {timer}; then"
        f" systemctl start {timer} && echo started; fi"
    )
    if out.strip() == "started":
        wrote.append("timer started")
    wrote += ensure_http_redirect(shell, settings)
    return Step("acme", bool(wrote), ", ".join(wrote) or f"lego at {lego}, renewal timer on")


def _obtain(shell: Shell, settings: HubSettings, lego: str) -> None:
    env = " ".join(f"{k}={q(v)}" for k, v in _lego_env(settings).items())
    command = " ".join([env, q(lego), *map(q, lego_args(settings)), "run"]).strip()
    status, out, err = shell.run(command + " 2>&1", check=False, timeout=300)
    if status != 0:
        raise RemoteError(
            f"lego could not obtain a certificate for {_domain(settings)} from "
            f"{settings.acme_directory} (exit status {status})",
            resource=MASTER,
            step="hub tls",
            log_tail="\n".join((out + err).splitlines()[-30:]),
            hint=_HINT.format(domain=_domain(settings)),
        )


def ensure_acme_certificate(shell: Shell, settings: HubSettings) -> TlsStep:
    """The hub's certificate for tls.domain: kept while good, else lego's stored one, else
    a new one from the CA. ``changed`` means the certificate the hub serves changed."""
    p = settings.paths
    domain = _domain(settings)
    served = shell.read(p.cert)
    problem = acme_cert_problem(served, domain=domain)
    if problem is None and served and not key_matches(shell, p.key, served):
        problem = "key missing, not 0600 root, or not the certificate's"
    if problem is None and served:
        return TlsStep("tls", False, f"ACME certificate for {domain} kept", fingerprint(served))
    stored_crt, stored_key = _stored(settings)
    stored = shell.read(stored_crt)
    how = "from lego's store"
    if acme_cert_problem(stored, domain=domain) is not None or not (
        stored and key_matches(shell, stored_key, stored)
    ):
        log.info("hub tls: asking %s for a certificate for %s (%s)", settings.acme_directory,
                 domain, problem)
        _obtain(shell, settings, ensure_lego(shell))
        how = f"from {settings.acme_directory}"
    shell.run(q(p.acme_install))
    cert_pem = shell.read(p.cert)
    still = acme_cert_problem(cert_pem, domain=domain)
    if still is not None or not cert_pem:
        raise RemoteError(
            f"the certificate lego stored for {domain} is not usable: {still}",
            resource=MASTER,
            step="hub tls",
            hint=f"look at {stored_crt} on the master; remove it and run again",
        )
    return TlsStep("tls", True, f"ACME certificate for {domain} {how} ({problem})",
                   fingerprint(cert_pem))
