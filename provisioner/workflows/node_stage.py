"""After the servers: every node booted and reachable over SSH, the Spark daemons started
with the cluster's secret and, for `up`, the hub installed. The hook `up` and `scale` hand
their ACTIVE servers to, and the Spark step `hub` shares.

paramiko (through ssh_stage) is imported only when the stage runs, so the commands that
stop at `--until servers` never load it.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import TYPE_CHECKING, Any

from provisioner import plan as P
from provisioner.workflows.context import Hooks, Reporter

if TYPE_CHECKING:
    from provisioner.workflows.hub_stage import HubOutcome
    from provisioner.workflows.ssh_stage import Nodes


class NodeStage:
    """Takes ACTIVE servers on to booted nodes over SSH and, with `hub`, to a running hub."""

    def __init__(self, inv: Any, cloud: Any, reporter: Reporter, *, hub: bool) -> None:
        self.inv, self.cloud, self.reporter, self.hub = inv, cloud, reporter, hub
        self.outcome: HubOutcome | None = None  # the hub stage's, for the closing lines

    def __call__(self, observed: P.Observed) -> None:
        from provisioner.workflows.ssh_stage import Access, bring_up

        self.reporter.step("waiting for every node over SSH (host keys, login, boot)")
        access = Access.from_inventory(self.inv)
        nodes = bring_up(observed, cloud=self.cloud, access=access, reporter=self.reporter)
        try:
            self.reporter.step(f"all {len(observed.nodes)} node(s) booted and reachable over SSH")
            done = self._hub_and_daemons(nodes, observed) if self.hub else None
            spark_stage(nodes, observed, inv=self.inv, reporter=self.reporter, done=done)
        finally:
            nodes.close()

    def _hub_and_daemons(self, nodes: Nodes, observed: P.Observed) -> dict[str, str]:
        """The hub installed while the Spark daemons get the secret and start: they need
        nothing from each other (on a cloud, different machines do the work), and the
        hub's users join the secret's group once both are done (spark_stage)."""
        from provisioner.workflows.hub_stage import install_hub
        from provisioner.workflows.spark_auth import ensure_spark_auth

        with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spark") as pool:
            # users=None: hub users' group memberships wait until the hub made them
            daemons = pool.submit(ensure_spark_auth, nodes, users=None)
            try:
                self.outcome = install_hub(
                    nodes, inv=self.inv, observed=observed, reporter=self.reporter
                )
            except BaseException:
                daemons.exception()  # the hub's failure is the one to report
                raise
            return daemons.result()

    def hooks(self) -> Hooks:
        return Hooks(after_servers_active=self)


def spark_stage(
    nodes: Nodes,
    observed: P.Observed,
    *,
    inv: Any,
    reporter: Reporter,
    done: dict[str, str] | None = None,
) -> None:
    """The cluster's secret on every node and its daemons started with it (`done`: that
    happened already, beside the hub), then every worker ALIVE. After the hub: its users
    must exist to join the group that reads the secret."""
    from provisioner.workflows.spark_auth import client_group, ensure_spark_auth, wait_workers

    users = list(inv.jupyterhub.users)
    sso = inv.jupyterhub.authenticator == "oidc"
    if done is None:
        done = ensure_spark_auth(nodes, users=users, sso=sso)
    else:
        client_group(nodes.master, users, sso=sso)
    for what in ("started", "restarted"):
        names = [name for name, did in done.items() if did == what]
        if names:
            reporter.step(f"Spark authentication on; {what} {', '.join(names)}")
    master = observed.master()
    workers = {w.fixed_ip for w in observed.workers()}
    if master is not None and workers:
        reporter.step(f"waiting for {len(workers)} worker(s) to register")
        wait_workers(nodes, master_ip=master.fixed_ip, workers=workers, timeout=300)
        reporter.step("every worker is ALIVE on the Spark master")
