"""Port 80 of the master with tls.mode = "acme", and everything ACME left behind without it.

With ACME the master runs provisioner/hub/http_redirect.py on port 80: it redirects plain
HTTP to the hub's HTTPS address and answers the CA's HTTP-01 requests from lego's webroot.
Why a webroot rather than lego's own server stopped and started around renewals: port 80
never closes or stops redirecting, no hook can leave it stopped, and the same unit works
with a booted systemd and with the daemonless systemctl of containers.

When a cluster switches away from ACME, the renewal timer and the port-80 server would
otherwise go on running with nothing needing them: :func:`ensure_no_acme` removes them.
lego's store (the CA account and its certificates) stays, so switching back asks the CA
for nothing while its certificate is still good.
"""

from __future__ import annotations

import logging
from pathlib import Path

from provisioner.errors import RemoteError
from provisioner.hub.config import ACME_UNIT_NAME, HTTP_UNIT_NAME, HubSettings
from provisioner.hub.shell import MASTER, Shell, Step, q
from provisioner.hub.systemd import ensure_running

log = logging.getLogger(__name__)

# The master's own Python: the program needs nothing beyond the standard library.
SYSTEM_PYTHON = "/usr/bin/python3"
# Who serves port 80 once it is bound (Debian's and Ubuntu's unprivileged account).
HTTP_USER = "nobody"
_PROGRAM = Path(__file__).with_name("http_redirect.py")
# How long the port-80 server may take to listen after it is started (Python's start-up).
_LISTEN_TIMEOUT = 20


def https_target(settings: HubSettings) -> str:
    """Where port 80 sends browsers: the certificate's name and the hub's port."""
    assert settings.tls_domain, "HubSettings checks it for acme"
    port = "" if settings.port == 443 else f":{settings.port}"
    return f"https://{settings.tls_domain}{port}"


def unit_word(value: str) -> str:
    """One argument of an ExecStart= line: systemd expands % and $ and splits on spaces."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def render_http_unit(settings: HubSettings) -> str:
    p = settings.paths
    argv = [
        SYSTEM_PYTHON,
        "-I",
        p.http_server,
        "--port=80",
        f"--webroot={p.acme_webroot}",
        f"--target={https_target(settings)}",
        f"--user={HTTP_USER}",
    ]
    return "\n".join(
        [
            "# Written by sparkstack; rewritten on every run.",
            "[Unit]",
            "Description=Port 80 of the sparkstack hub: redirects to HTTPS, ACME challenges",
            "After=network.target",
            "",
            "[Service]",
            # Started as root to bind port 80; the program drops to HTTP_USER at once.
            "ExecStart=" + " ".join(unit_word(a) for a in argv),
            "Restart=on-failure",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def _listen_probe(port: int, timeout: float) -> str:
    # Run by the master's Python: polls its own port until it accepts, with a deadline.
    return (
        "import socket, sys, time\n"
        f"end = time.monotonic() + {timeout}\n"
        "while True:\n"
        "    try:\n"
        f"        socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
        "        sys.exit(0)\n"
        "    except OSError:\n"
        "        if time.monotonic() > end:\n"
        "            sys.exit(1)\n"
        "        time.sleep(0.1)\n"
    )


def ensure_http_redirect(shell: Shell, settings: HubSettings) -> list[str]:
    """The port-80 server installed, enabled and listening; what had to change."""
    p = settings.paths
    root = {"owner": "root", "group": "root"}
    # Readable by everyone: the server reads challenge files as HTTP_USER.
    shell.run(f"mkdir -p {q(p.acme_webroot)} && chmod 0755 {q(p.acme_webroot)}")
    wrote = []
    if shell.put(p.http_server, _PROGRAM.read_bytes(), mode=0o644, **root):
        wrote.append("port-80 server")
    unit_changed = shell.put(p.http_unit, render_http_unit(settings).encode(), mode=0o644, **root)
    if unit_changed:
        wrote.append("port-80 unit")
        shell.run("systemctl daemon-reload", check=False)
    unit = q(f"{HTTP_UNIT_NAME}.service")
    # a failed start shows as the listen probe's failure below, with the unit's log
    started = ensure_running(shell, f"{HTTP_UNIT_NAME}.service", restart=bool(wrote),
                             timeout=60)  # fmt: skip
    wrote += [f"port-80 {change}" for change in started.changes]
    probe = _listen_probe(80, _LISTEN_TIMEOUT).encode()
    if shell.run(f"{SYSTEM_PYTHON} -", input=probe, check=False, timeout=60)[0] != 0:
        _, journal, _ = shell.run(
            f"journalctl -u {unit} -n 30 --no-pager 2>&1 || tail -n 30 /var/log/journal/{unit}.log",
            check=False,
        )
        raise RemoteError(
            f"{HTTP_UNIT_NAME} (port 80: HTTPS redirects and ACME challenges) does not listen",
            resource=MASTER,
            step="hub acme",
            log_tail=journal,
            hint="port 80 must be free for it on the master: stop what listens there "
            "(`ss -ltnp 'sport = :80'`), then run again",
        )
    return wrote


def ensure_no_acme(shell: Shell, settings: HubSettings) -> Step:
    """No renewal timer and no port-80 server left from an earlier tls.mode = "acme"."""
    p = settings.paths
    units = [f"{ACME_UNIT_NAME}.timer", f"{ACME_UNIT_NAME}.service", f"{HTTP_UNIT_NAME}.service"]
    files = [p.acme_timer, p.acme_service, p.http_unit, p.http_server, p.acme_hook, p.acme_install]
    stop = "; ".join(f"systemctl stop {q(u)}; systemctl disable {q(u)}" for u in units)
    # One round trip when there is nothing to do, which is every run of most clusters.
    _, out, _ = shell.run(
        f'for f in {" ".join(map(q, files))}; do [ -e "$f" ] && found=1; done;'
        f' if [ -n "${{found:-}}" ]; then {{ {stop}; }} >/dev/null 2>&1;'
        f" rm -f {' '.join(map(q, files))}; systemctl daemon-reload >/dev/null 2>&1;"
        " echo removed; fi",
        timeout=120,
    )
    if out.strip() == "removed":
        log.info("hub acme: tls.mode is no longer acme; renewal timer and port 80 removed")
        return Step("acme", True, "renewal timer and port-80 server removed (not acme)")
    return Step("acme", False, "not used")
