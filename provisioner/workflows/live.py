"""What `status` adds to the cloud's view once the nodes are up: each node's Spark state as
the master sees it, and whether the hub answers. One SSH login (the master), two reads.

Imported only when `status` goes past the cloud: it loads paramiko.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from provisioner import plan as P
from provisioner.errors import SparkstackError
from provisioner.hub.config import UNIT_NAME
from provisioner.hub.shell import Shell, Sudo, q
from provisioner.hub.steps import api_answers
from provisioner.inventory import Inventory
from provisioner.render import VENV
from provisioner.workflows.context import Reporter
from provisioner.workflows.ports import Cloud
from provisioner.workflows.spark_auth import master_status, waiting_for_secret, workers_by_host
from provisioner.workflows.ssh_stage import Access, bring_up

log = logging.getLogger(__name__)


@dataclass
class Live:
    """Spark state by node name ({"state", "cores", "cores_used", "memory_mb",
    "memory_used_mb"}), the hub's state, and why they are unknown if they are."""

    spark: dict[str, dict[str, Any]] = field(default_factory=dict)
    hub: str = "unknown"
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"spark": self.spark, "hub": self.hub, "error": self.error or None}


def _hub_state(master: Shell, port: int) -> str:
    unit = q(UNIT_NAME)
    _, state, _ = master.run(f"systemctl is-active {unit}", check=False, timeout=30)
    if state.strip() != "active":
        known, _, _ = master.run(f"test -x {VENV}/bin/jupyterhub", check=False, timeout=30)
        return "not installed" if known != 0 else "stopped"
    return "running" if api_answers(master, port) else "not answering"


def spark_states(status: dict[str, Any], observed: P.Observed) -> dict[str, dict[str, Any]]:
    """The master's /json/ status per node of `observed` (a worker it does not list: absent)."""
    master = observed.master()
    states: dict[str, dict[str, Any]] = {}
    if master is not None:
        states[master.name] = {"state": str(status.get("status", "?"))}
    entries = workers_by_host(status)
    for w in observed.workers():
        e = entries.get(w.fixed_ip)
        states[w.name] = {"state": "absent"} if e is None else {
            "state": str(e.get("state", "?")),
            "cores": e.get("cores"),
            "cores_used": e.get("coresused"),
            "memory_mb": e.get("memory"),
            "memory_used_mb": e.get("memoryused"),
        }  # fmt: skip
    return states


def live_state(inv: Inventory, *, cloud: Cloud, observed: P.Observed, timeout: float = 30) -> Live:
    """Never raises for an unreachable or half-booted cluster: `error` says why instead."""
    master = observed.master()
    if master is None or master.status != "ACTIVE":
        return Live(error="the master is not ACTIVE")
    try:
        nodes = bring_up(observed, cloud=cloud, access=Access.from_inventory(inv),
                         reporter=Reporter(), timeout=timeout, workers=[])  # fmt: skip
    except SparkstackError as exc:
        log.info("status: master not reachable: %s", exc.render())
        return Live(error=f"master not reachable over SSH: {exc.message}")
    try:
        live = Live(hub=_hub_state(Sudo(nodes.master), inv.jupyterhub.port))
        try:
            live.spark = spark_states(master_status(nodes, master.fixed_ip), observed)
        except (SparkstackError, ValueError) as exc:
            if waiting_for_secret(nodes.master):
                live.error = ("the Spark master is not started: it waits for the cluster's "
                              "secret, which `sparkstack up` brings over SSH")  # fmt: skip
            else:
                live.error = f"the Spark master's status page does not answer: {exc}"
        return live
    finally:
        nodes.close()
