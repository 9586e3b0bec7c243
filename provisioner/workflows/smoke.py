"""`smoke`: prove the cluster works as a user sees it, each check a line with its time.

Workers ALIVE on the Spark master; the hub over HTTPS with its certificate pinned (the
certificate is read from the master over SSH, itself pinned); a dedicated smoke account,
created and removed here and never a person's, spawns its server, starts the PySpark
kernel through the REST and websocket APIs and runs a job whose answer is known; the
application had executors on the workers. Cleans up after itself whatever happens.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import tenacity

from provisioner import plan as P
from provisioner.errors import RemoteError, SparkstackError
from provisioner.hub.config import HubPaths
from provisioner.hub.tls import fingerprint
from provisioner.hubapi import HubApi
from provisioner.inventory.names import SMOKE_USER, SPARK_CLIENT_GROUP
from provisioner.workflows.spark_auth import wait_workers
from provisioner.workflows.ssh_stage import Nodes

log = logging.getLogger(__name__)

JOB = "sc.parallelize(range(100000), 8).map(lambda x: x * x).sum()"
JOB_ANSWER = "333328333350000"
# Who ran the job: executor hosts as the driver's own status tracker sees them.
EXECUTORS = (
    "import json; print(json.dumps(sorted({e.host() for e in "
    "sc._jsc.sc().statusTracker().getExecutorInfos()})), sc.applicationId)"
)
# The token of the hub service that smoke acts as (root-only on the master).
SMOKE_TOKEN_PATH = HubPaths().smoke_token


@dataclass
class Check:
    name: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class SmokeReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.__dict__ for c in self.checks]}


class _Failed(Exception):
    """A check failed; later checks that depend on it are not attempted."""


def expect_answer(answer: str, expected: str) -> None:
    """A kernel's answer to a cell whose answer is known. A check, not an `assert`: it must
    hold under `python -O` too, and a wrong answer is the cluster's failure, not a bug."""
    if answer != expected:
        raise RemoteError(f"the kernel answered {answer!r}, not {expected!r}", step="smoke")


def executor_hosts(output: str, workers: set[str]) -> tuple[str, set[str]]:
    """(application id, the workers that ran its executors) from what EXECUTORS printed;
    a RemoteError when the output is not that, or when no worker ran an executor."""
    hosts_json, _, app_id = output.strip().rpartition(" ")
    try:
        hosts = json.loads(hosts_json)
    except ValueError:
        hosts = None
    if not app_id or not isinstance(hosts, list):
        raise RemoteError(
            f"the kernel printed {output!r}, not the executor hosts and application id",
            step="smoke",
        )
    on = {str(h) for h in hosts} & workers
    if workers and not on:
        raise RemoteError(f"{app_id} had executors only on {hosts_json}", step="smoke")
    return app_id, on


@dataclass
class _Runner:
    report: SmokeReport
    on_check: Callable[[Check], None]

    @contextmanager
    def check(self, name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        start = time.monotonic()
        try:
            yield detail
        except SparkstackError as exc:
            # Only the project's errors are a failed check; anything else is a bug in
            # smoke itself and goes on up as one (exit 1), not as a broken cluster.
            self._add(Check(name, False, time.monotonic() - start, exc.render()))
            raise _Failed(name) from exc
        self._add(Check(name, True, time.monotonic() - start, " ".join(detail)))

    def _add(self, check: Check) -> None:
        self.report.checks.append(check)
        self.on_check(check)


def _poll(fn: Callable[[], Any], *, what: str, timeout: float, interval: float = 1.0) -> Any:
    try:
        return tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda v: not v),
            wait=tenacity.wait_fixed(interval),
            stop=tenacity.stop_after_delay(timeout),
        )(fn)
    except tenacity.RetryError:
        raise RemoteError(f"{what} not within {timeout:.0f} s", step="smoke") from None


def smoke(
    nodes: Nodes,
    *,
    observed: P.Observed,
    port: int,
    on_check: Callable[[Check], None] = lambda c: None,
    timeout: float = 300,
) -> SmokeReport:
    master = observed.master()
    if master is None:
        raise RemoteError("the cluster has no master", step="smoke", hint="run `sparkstack up`")
    workers = {w.fixed_ip for w in observed.workers()}
    report = SmokeReport()
    run = _Runner(report, on_check)
    try:
        with run.check(f"{len(workers)} Spark worker(s) ALIVE on the master") as d:
            alive = wait_workers(nodes, master_ip=master.fixed_ip, workers=workers, timeout=120)
            d.append(", ".join(sorted(alive & workers)))

        with run.check("hub answers over HTTPS (certificate pinned)") as d:
            cert = nodes.master.read(HubPaths().cert, sudo=True)
            if cert is None:
                raise RemoteError("the hub has no certificate: run `sparkstack up`", step="smoke")
            token = (nodes.master.read(SMOKE_TOKEN_PATH, sudo=True) or b"").decode().strip()
            api = HubApi(host=master.floating_ip or master.fixed_ip, port=port,
                         fingerprint=fingerprint(cert), token=token)  # fmt: skip
            d.append(f"JupyterHub {api.call('GET', '/hub/api')['version']} at {api.base}")

        _as_smoke_user(run, nodes, api, workers=workers, timeout=timeout)
    except _Failed:
        pass
    return report


def _as_smoke_user(
    run: _Runner, nodes: Nodes, api: HubApi, *, workers: set[str], timeout: float
) -> None:
    user = SMOKE_USER
    try:
        with run.check(f"smoke account {user} spawns its server") as d:
            nodes.master.run(
                # in the Spark client group: its kernel's driver needs the cluster's secret
                f"id -u {user} >/dev/null 2>&1 || useradd --create-home --shell "
                f"/usr/sbin/nologin --groups {SPARK_CLIENT_GROUP} "
                f"--comment 'sparkstack smoke test' {user}",
                sudo=True,
            )
            api.call("POST", f"/hub/api/users/{user}", expect=(201, 409))
            api.call("POST", f"/hub/api/users/{user}/server", expect=(201, 202, 400))
            _poll(
                lambda: (api.call("GET", f"/hub/api/users/{user}").get("servers", {})
                         .get("", {}).get("ready")),
                what=f"{user}'s server ready", timeout=timeout,
            )  # fmt: skip
            d.append("ready")

        with run.check("PySpark kernel starts") as d:
            kernel = api.call(
                "POST", f"/user/{user}/api/kernels", {"name": "pyspark"}, expect=(201,)
            )
            # Answering a cell is what a user waits for; Spark connects behind it, and the
            # first cell that uses Spark (the job below) waits for that.
            answer = api.execute(user, kernel["id"], "print(6 * 7)", timeout=timeout)
            expect_answer(answer, "42")
            d.append(f"{kernel['id'][:8]} answering")

        with run.check(f"job {JOB} = {JOB_ANSWER}") as d:
            answer = api.execute(user, kernel["id"], JOB, timeout=timeout)
            expect_answer(answer, JOB_ANSWER)
            d.append("correct")

        with run.check("the application ran executors on the workers") as d:
            out = api.execute(user, kernel["id"], EXECUTORS, timeout=60)
            app_id, on = executor_hosts(out, workers)
            d.append(f"{app_id} on {', '.join(sorted(on))}")
    finally:
        _remove_smoke_user(nodes, api, user)


def _remove_smoke_user(nodes: Nodes, api: HubApi, user: str) -> None:
    """Best effort, every part: what smoke made must not outlive it."""
    for method, path, expect in (
        ("DELETE", f"/hub/api/users/{user}/server", (202, 204, 400, 404)),
        ("DELETE", f"/hub/api/users/{user}", (204, 404)),
    ):
        try:
            api.call(method, path, expect=expect, timeout=60)
        except SparkstackError as exc:
            log.warning("smoke cleanup: %s", exc.message)
    nodes.master.run(
        f"if id -u {user} >/dev/null 2>&1; then userdel --force --remove {user}; fi",
        sudo=True,
        check=False,
    )
