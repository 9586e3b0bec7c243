"""Graceful removal of workers, before `scale` deletes their servers.

Each worker leaving is told to decommission (SIGPWR to its JVM: the worker runs with
spark.decommission.enabled, so it tells the master, which stops giving it work and tells
each driver to decommission its executors there; they finish their running tasks, hand
their blocks on and exit). Its executors get SIGPWR too, and again while they run: one
started just before the worker was told is otherwise never told at all. Only when the
master no longer lists the worker ALIVE and the worker itself runs no executor is its
daemon stopped and its server free to go.

"Runs no executor" is read from the worker's own UI, not the master's: the master keeps
counting the cores of a decommissioned worker's executors after they exited (it drops
them from the application before their exit is reported, so the report finds nothing to
update), and its `coresused` never reaches 0.

Imported only when a command reaches the SSH stage: it loads paramiko.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioner import plan as P
from provisioner.errors import RemoteError
from provisioner.inventory import Inventory
from provisioner.inventory.names import SPARK_MASTER_UI_PORT, SPARK_WORKER_UI_PORT
from provisioner.remote import Session, on_each
from provisioner.render import SPARK_PID_DIR
from provisioner.workflows.context import Reporter
from provisioner.workflows.ports import Cloud
from provisioner.workflows.spark_auth import workers_by_host
from provisioner.workflows.ssh_stage import Access, reach

log = logging.getLogger(__name__)

SPARK_WORKER_DIR = "/var/lib/spark/work"
RESIGNAL_EVERY = 10.0  # seconds between SIGPWRs to executors still running on a leaving worker
WORKER_PID_FILE = f"{SPARK_PID_DIR}/spark-spark-org.apache.spark.deploy.worker.Worker-1.pid"
_MARK = "@@sparkstack@@ "


@dataclass(frozen=True)
class Drain:
    """One leaving worker as the master and the worker itself see it right now."""

    name: str
    address: str
    master_state: str  # ALIVE, DECOMMISSIONED, DEAD, ... or "absent" (not registered)
    executors: int | None  # running on the worker; None: its UI does not answer (stopped)

    @property
    def drained(self) -> bool:
        return self.master_state != "ALIVE" and not self.executors

    def describe(self) -> str:
        if self.drained:
            return "drained"
        if self.master_state == "ALIVE":
            return "decommissioning"
        n = self.executors or 0
        return f"draining, {n} executor{'s' if n != 1 else ''} left"


def _fetch_script(urls: Sequence[str]) -> str:
    # One SSH exec per poll, for the whole cluster: every JSON behind a marker line.
    parts = [f"echo {shlex.quote(_MARK + u)}; curl -fsS --max-time 5 {shlex.quote(u)} || true; echo"
             for u in urls]  # fmt: skip
    return "\n".join(parts)


def _parse(output: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    url = ""
    body: list[str] = []
    for line in [*output.splitlines(), _MARK]:
        if line.startswith(_MARK):
            if url:
                try:
                    found[url] = json.loads("\n".join(body)) if "".join(body).strip() else None
                except ValueError:
                    found[url] = None
            url, body = line[len(_MARK) :], []
        else:
            body.append(line)
    return found


def observe(master: Session, master_ip: str, leaving: Sequence[P.Node]) -> list[Drain]:
    """The master's view of every leaving worker and each worker's own executor count."""
    master_url = f"http://{master_ip}:{SPARK_MASTER_UI_PORT}/json/"
    worker_urls = {w.name: f"http://{w.fixed_ip}:{SPARK_WORKER_UI_PORT}/json/" for w in leaving}
    out = master.run(_fetch_script([master_url, *worker_urls.values()]), timeout=60).stdout
    found = _parse(out)
    status = found.get(master_url)
    if not isinstance(status, dict):
        raise RemoteError(
            "the Spark master's status page does not answer",
            resource=master.target.name,
            step="decommission",
            hint="check it with `sparkstack logs --spark`; --force removes the workers anyway",
        )
    by_host = {host: str(e.get("state", "?")) for host, e in workers_by_host(status).items()}
    drains = []
    for w in leaving:
        own = found.get(worker_urls[w.name])
        executors = len(own.get("executors", [])) if isinstance(own, dict) else None
        drains.append(Drain(w.name, w.fixed_ip, by_host.get(w.fixed_ip, "absent"), executors))
    return drains


_EXECUTOR = "org.apache.spark.executor.CoarseGrainedExecutorBackend"
# Executors as the spark user: not the root shell running this, whose command line holds
# the pattern too.
_SIGNAL_EXECUTORS = f"for e in $(pgrep -u spark -f {_EXECUTOR}); do kill -PWR \"$e\"; done; true"


def _signal(session: Session) -> None:
    # The unit runs Spark's own start script, which keeps this pid file (see _spark.service).
    session.run(f'pid=$(cat {WORKER_PID_FILE}) && kill -PWR "$pid"; {_SIGNAL_EXECUTORS}',
                sudo=True, timeout=30)  # fmt: skip


def _signal_executors(session: Session) -> None:
    """Executors decommission themselves on SIGPWR too. Needed for one the worker started
    just before it was told: the master's word reached the driver before that executor
    had registered, so nobody tells it, and a notebook's driver lives on for hours."""
    session.run(_SIGNAL_EXECUTORS, sudo=True, check=False, timeout=30)


def executor_log_tail(session: Session, lines: int = 20) -> str:
    out = session.run(
        f"tail -q -n {lines} $(ls -t {SPARK_WORKER_DIR}/app-*/*/stderr 2>/dev/null | head -1) "
        "</dev/null 2>/dev/null", sudo=True, check=False, timeout=30,
    )  # fmt: skip
    return out.stdout.strip()


def _stop(session: Session) -> None:
    result = session.run("systemctl stop spark-worker", sudo=True, check=False, timeout=120)
    if result.status != 0:
        log.warning("stopping spark-worker on %s: %s", session.target.name, result.stderr)


def drain(
    master: Session,
    workers: Mapping[str, Session],
    leaving: Sequence[P.Node],
    *,
    master_ip: str,
    timeout: float,
    force: bool,
    on_states: Callable[[dict[str, str]], None],
    poll: float = 1.0,
) -> list[str]:
    """Decommission `leaving` and wait until each is drained; stop their daemons. The notes
    to print. Past `timeout`, an error (nothing stopped) unless `force`."""
    started = time.monotonic()
    drains = observe(master, master_ip, leaving)
    for d in drains:
        if d.master_state == "ALIVE":
            session = workers.get(d.name)
            if session is None:
                if not force:
                    raise RemoteError(
                        "the worker is ALIVE on the Spark master but cannot be reached over "
                        "SSH to decommission it",
                        resource=d.name,
                        step="decommission",
                        hint="pass --force to remove it anyway (its executors are lost)",
                    )
                continue
            log.info("decommissioning %s", d.name)
            _signal(session)
    notes: list[str] = []
    signalled = time.monotonic()
    while True:
        on_states({d.name: d.describe() for d in drains})
        if all(d.drained for d in drains):
            break
        if time.monotonic() - started > timeout:
            busy = [d.name for d in drains if not d.drained]
            if not force:
                tail = executor_log_tail(workers[busy[0]]) if busy[0] in workers else ""
                raise RemoteError(
                    f"{', '.join(busy)} still running executors after {timeout:.0f} s",
                    resource=busy[0],
                    step="decommission",
                    log_tail=tail,
                    hint="they take no new work now; run the same `scale` again once their "
                    "jobs end, raise workers.decommission_timeout, or pass --force to remove "
                    "them anyway (their running tasks are then lost)",
                )
            notes.append(f"removed {', '.join(busy)} before their executors finished (--force)")
            break
        if time.monotonic() - signalled >= RESIGNAL_EVERY:
            signalled = time.monotonic()
            for d in drains:
                if not d.drained and d.master_state != "ALIVE" and d.name in workers:
                    _signal_executors(workers[d.name])
        time.sleep(poll)
        drains = observe(master, master_ip, leaving)
    waited = time.monotonic() - started
    on_each(_stop, {d.name: workers[d.name] for d in drains if d.name in workers})
    notes.insert(0, f"decommissioned {', '.join(d.name for d in drains)} in {waited:.0f} s")
    return notes


class Decommissioner:
    """The `decommission` hook of `scale`: log in to the master and the leaving workers,
    then drain them."""

    def __init__(self, inv: Inventory, cloud: Cloud, reporter: Reporter, *, force: bool) -> None:
        self.inv, self.cloud, self.reporter, self.force = inv, cloud, reporter, force
        self.notes: list[str] = []

    def __call__(self, observed: P.Observed, leaving: Sequence[P.Node]) -> None:
        master = observed.master()
        if not leaving or master is None:
            return
        self.reporter.step(f"decommissioning {', '.join(n.name for n in leaving)}")
        access = Access.from_inventory(self.inv)
        active = [n for n in leaving if n.status == "ACTIVE"]
        try:
            nodes, errors = reach(observed, cloud=self.cloud, access=access,
                                  reporter=self.reporter, timeout=180, workers=active)  # fmt: skip
        except RemoteError as exc:
            if not self.force:
                exc.hint = "pass --force to remove the workers without decommissioning them"
                raise
            self.notes = [f"removed {', '.join(n.name for n in leaving)} without decommission "
                          f"(--force; the master is not reachable: {exc.message})"]  # fmt: skip
            return
        try:
            for failure in errors:
                log.warning("cannot reach %s to decommission it: %s", failure.resource, failure)
            self.notes = drain(
                nodes.master, nodes.workers, leaving, master_ip=master.fixed_ip,
                timeout=self.inv.workers.decommission_timeout, force=self.force,
                on_states=self.reporter.nodes,
            )  # fmt: skip
        finally:
            nodes.close()
