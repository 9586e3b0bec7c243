"""The hub's packages on the master: JupyterHub, JupyterLab and ipykernel in the venv, and
configurable-http-proxy, exactly as this sparkstack's locks pin them.

`up` sends the locks in the master's user_data, so its boot installs them while the rest of
the node comes up and this step only confirms it. A master launched from Horizon (whose
pasted document has no room for the locks) or booted by an older sparkstack gets them here,
over SSH: the node's own boot steps install them, with the mirrors, proxies, CA and time
bounds its boot was rendered with. Either way a missing install is named here, before the
hub is started, not by a hub unit that fails to start.
"""

from __future__ import annotations

import logging

from provisioner.errors import RemoteError
from provisioner.hub.shell import MASTER, Shell, Step, q
from provisioner.locks import locks
from provisioner.render import NPM_DIR, NPM_LOCK_DIR, VENV

log = logging.getLogger(__name__)

BOOTSTRAP = "/usr/local/sbin/sparkstack-bootstrap"
# What the hub unit runs: both must be there before it starts.
NEEDED = (f"{VENV}/bin/jupyterhub", f"{NPM_DIR}/node_modules/.bin/configurable-http-proxy")
# pip and npm bound each fetch themselves; this bounds a whole install over SSH.
INSTALL_TIMEOUT = 1800


# What the venv and the proxy were installed from: the boot's record, or the lock a
# pre-baked image was made from (image/provision.sh leaves it there).
_INSTALLED_FROM = (f"{VENV}/.sparkstack-requirements.txt", "/opt/sparkstack/requirements.txt")


def _out_of_date(shell: Shell) -> list[str]:
    """What is missing, or installed from another lock than this sparkstack's."""
    lock_set = locks()
    req, npm_lock = q(lock_set.requirements.path), q(lock_set.npm_lock.path)
    checks = [f"[ -x {q(path)} ] || echo {q(path)}" for path in NEEDED]
    checks.append(" || ".join(f"cmp -s {req} {q(p)}" for p in _INSTALLED_FROM)
                  + f" || echo {q(VENV)}")  # fmt: skip
    checks.append(f"cmp -s {npm_lock} {q(NPM_DIR)}/package-lock.json || echo {q(NPM_DIR)}")
    _, out, _ = shell.run("; ".join(checks), check=False)
    return list(dict.fromkeys(out.split()))


def ensure_packages(shell: Shell) -> Step:
    """The locks in place and what they pin installed; RemoteError naming what failed.

    Changed (the hub then restarts) only when something was installed: placing the lock
    files alone changes nothing the hub runs."""
    lock_set = locks()
    # A master launched from Horizon has none of the locks' directories yet.
    shell.run(f"install -d -m 0755 {q(NPM_LOCK_DIR)}")
    placed = [
        lock.path
        for lock in (lock_set.requirements, lock_set.npm_package, lock_set.npm_lock)
        if shell.put(lock.path, lock.data, mode=0o644, owner="root", group="root")
    ]
    stale = _out_of_date(shell)
    if not stale:
        detail = "hub and proxy installed from this sparkstack's locks"
        return Step("packages", False, detail + (" (locks placed)" if placed else ""))
    log.info("hub packages: %s missing or from another lock: installing on the master",
             ", ".join(stale))  # fmt: skip
    # The boot's own steps, run again: markers untouched (the node stays "ready").
    status, out, err = shell.run(
        f"SPARKSTACK_NO_MARKERS=1 {BOOTSTRAP} python proxy", check=False, timeout=INSTALL_TIMEOUT
    )
    if status != 0:
        failed = [line for line in (out + err).splitlines() if "FAILED:" in line]
        raise RemoteError(
            "the hub's packages could not be installed: "
            + (failed[-1].split("FAILED:", 1)[1].strip() if failed else f"exit code {status}"),
            resource=MASTER,
            step="hub packages",
            log_tail="\n".join((out + err).splitlines()[-30:]),
            hint="check the inventory's [mirrors] (the master must reach the Python index "
            "and the npm registry), then run again",
        )
    still = _out_of_date(shell)
    if still:
        raise RemoteError(
            f"installed the hub's packages, but {', '.join(still)} is still missing or not "
            "from this sparkstack's lock",
            resource=MASTER,
            step="hub packages",
            log_tail="\n".join(out.splitlines()[-30:]),
        )
    return Step("packages", True, f"installed over SSH ({', '.join(stale)})")
