"""Spark authentication: one secret per cluster on every node and in the drivers' config,
so the master's port 7077 refuses any client without it (spark.authenticate).

Standalone Spark takes the secret from its configuration (not from a file of its own), so
it goes into a managed block of spark-defaults.conf: 0640 root:spark on workers (the
daemon hands it to its executors), and root:<client group> on the master, whose members
are the spark user and the hub's users (their notebooks' drivers read it). The secret is
made on the master once and copied to the workers over SSH, never through user_data.
It keeps outsiders off the cluster, not hub users from each other: they all share it.

The daemons start here, after the block is written: a node's boot only enables its unit,
and the unit refuses to start without the secret, so no port of the cluster ever takes a
client that lacks it (and a fresh cluster needs no restart).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from typing import Any

import tenacity

from provisioner.errors import RemoteError
from provisioner.inventory.names import (
    SMOKE_USER,
    SPARK_CLIENT_GROUP,
    SPARK_MASTER_UI_PORT,
    SSO_GROUP,
)
from provisioner.remote import Session, on_each
from provisioner.render import READY_MARKER, SPARK_HOME, SPARK_PID_DIR
from provisioner.workflows.ssh_stage import Nodes

log = logging.getLogger(__name__)

SECRET_PATH = "/etc/sparkstack/spark-auth-secret"
DEFAULTS = f"{SPARK_HOME}/conf/spark-defaults.conf"
BEGIN = "# --- sparkstack: authentication (written over SSH; do not edit) ---"
END = "# --- end of sparkstack authentication ---"
_PORTS = {"master": "SPARK_MASTER_PORT", "worker": "SPARK_WORKER_PORT"}


def with_auth(defaults: str, secret: str) -> str:
    """spark-defaults.conf text with the managed block (replaced if there, else added)."""
    lines, inside = [], False
    for line in defaults.splitlines():
        if line == BEGIN:
            inside = True
        elif line == END:
            inside = False
        elif not inside:
            lines.append(line)
    while lines and not lines[-1].strip():
        lines.pop()
    block = [BEGIN, "spark.authenticate true", f"spark.authenticate.secret {secret}", END]
    return "\n".join([*lines, "", *block]) + "\n"


def _master_secret(master: Session) -> str:
    """The cluster's secret, made on the master the first time (64 hex digits, 0600)."""
    path = shlex.quote(SECRET_PATH)
    master.run(
        f"if ! grep -qxE '[0-9a-f]{{64}}' {path} 2>/dev/null; then mkdir -p /etc/sparkstack && "
        f"(umask 077; openssl rand -hex 32 >{path}.new) && mv -f {path}.new {path}; fi",
        sudo=True,
    )
    return (master.read(SECRET_PATH, sudo=True) or b"").decode().strip()


def client_group(master: Session, users: list[str] | None, *, sso: bool = False) -> None:
    """The group that may read the master's Spark config: spark, the hub's users and the
    smoke account; a user removed from the inventory leaves it. users None: the group and
    spark only, nobody else's membership touched (while the hub stage makes its users).
    sso: single sign-on is on, and the accounts it made (the SSO group) are hub users too;
    off, they leave the group with the rest."""
    group = shlex.quote(SPARK_CLIENT_GROUP)
    if users is None:
        master.run(f"getent group {group} >/dev/null || groupadd --system {group}; "
                   f"id -nG spark | tr ' ' '\\n' | grep -qx {group} || "
                   f"usermod -aG {group} spark", sudo=True)  # fmt: skip
        return
    wanted = " ".join(shlex.quote(u) for u in ["spark", SMOKE_USER, *users])
    if sso:
        wanted += f" $(getent group {SSO_GROUP} | cut -d: -f4 | tr ',' ' ')"
    script = f"""
getent group {group} >/dev/null || groupadd --system {group}
wanted="{wanted}"
for u in $wanted; do
  id -u "$u" >/dev/null 2>&1 || continue
  id -nG "$u" | tr ' ' '\\n' | grep -qx {group} || usermod -aG {group} "$u"
done
for u in $(getent group {group} | cut -d: -f4 | tr ',' ' '); do
  case " $wanted " in *" $u "*) ;; *) gpasswd -d "$u" {group} >/dev/null;; esac
done
"""
    master.run(script, sudo=True)


# Starts the unit if it is down, restarts it if it runs on a config older than the file
# (its pid file is written as it starts), then waits until it listens; prints what it did.
# bash for /dev/tcp. The unit itself refuses to start without the secret (ExecStartPre).
# reset-failed: systemd refuses to start a unit that hit its start limit (a daemon that kept
# crashing) until its failure is reset.
START = r"""
set -u
unit=$1 pid_file=$2 defaults=$3 ready=$4 port_var=$5
. /etc/sparkstack/sparkstack.conf
port=${!port_var}
ip=$(sed -n 's/^private_ip=//p' /var/lib/sparkstack/node)
state=$(systemctl is-active "$unit" 2>/dev/null | tail -n 1)
if [ "$state" != active ]; then
  did=started
elif [ "$defaults" -nt "$pid_file" ]; then
  did=restarted
else
  did=running
fi
case $did in
  started) systemctl reset-failed "$unit" >/dev/null 2>&1; systemctl start "$unit" ;;
  restarted) systemctl restart "$unit" ;;
esac || { echo "systemctl could not start $unit" >&2; tail -n 30 /var/log/spark/*.out >&2; exit 1; }
sed -i 's/^spark=waiting-for-secret$/spark=authenticated/' "$ready" 2>/dev/null || true
for _ in $(seq 600); do
  if (exec 3<>"/dev/tcp/$ip/$port") 2>/dev/null; then echo "$did"; exit 0; fi
  sleep 0.2
done
echo "$unit is not listening on $ip:$port after 120 s" >&2
tail -n 30 /var/log/spark/*.out >&2
exit 1
"""


def _write_block(session: Session, secret: str, group: str) -> None:
    current = session.read(DEFAULTS, sudo=True)
    if current is None:
        raise RemoteError(f"{DEFAULTS} is missing", resource=session.target.name, step="spark auth")
    session.put(DEFAULTS, with_auth(current.decode(), secret), mode=0o640, owner="root",
                group=group, sudo=True)  # fmt: skip


def _ensure_running(session: Session, role: str) -> str:
    """The daemon running on the node's config: "started" (it was down, as on a node fresh
    from boot), "restarted" (it ran on an older config) or "running"."""
    args = [f"spark-{role}", pid_file(role), DEFAULTS, READY_MARKER, _PORTS[role]]
    result = session.run(
        " ".join(shlex.quote(a) for a in ["bash", "-c", START, "start", *args]),
        sudo=True, timeout=180, check=False,
    )  # fmt: skip
    if result.status != 0:
        raise RemoteError(
            f"spark-{role} did not start with the cluster's secret",
            resource=session.target.name,
            step="spark auth",
            log_tail=result.stderr.strip() or None,
            hint="its log: `sparkstack logs -i INVENTORY N --spark`",
        )
    return result.stdout.strip().splitlines()[-1]


def pid_file(role: str) -> str:
    """The pid file spark-daemon.sh writes for the role's daemon (the unit's PIDFile)."""
    cls = "master.Master" if role == "master" else "worker.Worker"
    return f"{SPARK_PID_DIR}/spark-spark-org.apache.spark.deploy.{cls}-1.pid"


def waiting_for_secret(session: Session) -> bool:
    """Whether the node's Spark config has no secret yet: its daemon is down on purpose
    (the boot script does not start it; the SSH stage brings the secret, then starts it)."""
    script = f"grep -qxE 'spark[.]authenticate[.]secret [0-9a-f]{{64}}' {shlex.quote(DEFAULTS)}"
    return session.run(script, sudo=True, check=False, timeout=30).status != 0


def master_status(nodes: Nodes, master_ip: str) -> dict[str, Any]:
    """The Spark master's /json/ status, read on the master (its UI is private)."""
    url = f"http://{master_ip}:{SPARK_MASTER_UI_PORT}/json/"
    status: dict[str, Any] = json.loads(
        nodes.master.run(f"curl -fsS --max-time 10 {url}", timeout=30).stdout
    )
    return status


def workers_by_host(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The master's worker entries by host. A worker that re-registered after a restart is
    listed once per registration; the newest (highest id) counts."""
    entries: dict[str, dict[str, Any]] = {}
    for entry in sorted(status.get("workers", []), key=lambda e: str(e.get("id", ""))):
        entries[str(entry.get("host"))] = entry
    return entries


class WorkerStopped(RemoteError):
    """A worker's daemon is stopped or failed: no wait brings it back."""


# `systemctl is-active` answers for a unit that is down and will not come back by itself;
# "activating" (a restart pending) and "deactivating" may still end ALIVE.
_DOWN = {"inactive", "failed"}
_CHECK_UNITS_EVERY = 5.0  # s between looks at the missing workers' units


def stopped_workers(sessions: dict[str, Session]) -> dict[str, str]:
    """Of these workers (by name), those whose spark-worker unit is down, with its state."""

    def state(session: Session) -> str:
        # sudo: the daemonless systemctl of small images keeps its state root-only
        out = session.run(
            "systemctl is-active spark-worker", sudo=True, check=False, timeout=30
        ).stdout
        return out.strip().splitlines()[-1] if out.strip() else "unknown"

    states = on_each(state, sessions)
    log.info("spark-worker units of workers not yet ALIVE: %s", states)
    return {name: st for name, st in states.items() if st in _DOWN}


def wait_workers(nodes: Nodes, *, master_ip: str, workers: set[str], timeout: float) -> set[str]:
    """Until every worker (by private IP) is ALIVE on the master; the ALIVE ones. A missing
    worker whose daemon is stopped or failed ends the wait at once (WorkerStopped)."""
    by_ip = {s.target.address: (name, s) for name, s in nodes.workers.items()}
    next_look = time.monotonic()

    def alive() -> set[str]:
        nonlocal next_look
        status = master_status(nodes, master_ip)
        up = {w["host"] for w in status.get("workers", []) if w.get("state") == "ALIVE"}
        missing = {by_ip[ip][0]: by_ip[ip][1] for ip in workers - up if ip in by_ip}
        if missing and time.monotonic() >= next_look:
            next_look = time.monotonic() + _CHECK_UNITS_EVERY
            down = stopped_workers(missing)
            if down:
                raise WorkerStopped(
                    "spark-worker is down on "
                    + ", ".join(f"{n} ({st})" for n, st in sorted(down.items())),
                    resource=sorted(down)[0],
                    step="spark",
                    hint="start it with `sparkstack ssh -i INVENTORY N -- sudo systemctl start "
                    "spark-worker`; why it stopped: `sparkstack logs -i INVENTORY N --spark`",
                )
        return up

    try:
        return tenacity.Retrying(
            # A master just started opens its UI a moment after its port.
            retry=tenacity.retry_if_result(lambda up: not workers <= up)
            | tenacity.retry_if_exception(
                lambda e: isinstance(e, RemoteError) and not isinstance(e, WorkerStopped)
            ),
            wait=tenacity.wait_fixed(1),
            stop=tenacity.stop_after_delay(timeout),
        )(alive)
    except tenacity.RetryError:
        missing = ", ".join(sorted(workers - alive()))
        raise RemoteError(
            f"workers not registered with the master after {timeout:.0f} s: {missing}",
            resource=nodes.master.target.name,
            step="spark",
            hint="see their Spark logs: `sparkstack logs -i INVENTORY N --spark`",
        ) from None


def ensure_spark_auth(nodes: Nodes, *, users: list[str] | None, sso: bool = False
                      ) -> dict[str, str]:
    """Every node's daemon running with the cluster's secret, by node name what it took:
    "started", "restarted" (it ran on an older config) or "running". The master first,
    listening before any worker starts, so each worker registers at its first attempt."""
    secret = _master_secret(nodes.master)
    if len(secret) != 64:
        raise RemoteError(
            f"{SECRET_PATH} on the master holds no secret",
            resource=nodes.master.target.name,
            step="spark auth",
        )
    client_group(nodes.master, users, sso=sso)
    on_each(lambda s: _write_block(s, secret, SPARK_CLIENT_GROUP if s is nodes.master
                                   else "spark"), nodes.all())  # fmt: skip
    done = {nodes.master.target.name: _ensure_running(nodes.master, "master")}
    done.update(on_each(lambda s: _ensure_running(s, "worker"), nodes.workers))
    return done
