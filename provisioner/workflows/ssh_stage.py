"""The SSH stage of `up`: from ACTIVE servers to nodes that answer over SSH with pinned host
keys and have finished their boot (cloud-init's ready marker), every node at once.

Per node: host keys from its console log (or first use) -> TCP 22 -> SSH login -> the ready
or failed marker. The master is reached on its floating IP, workers through the master.
A node that failed or timed out is a RemoteError (exit 4) naming the node, the step from
its failed marker and the tail of its cloud-init output. Imported only when a command
goes past `--until servers`: it loads paramiko (through provisioner.remote).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tenacity

from provisioner import plan as P
from provisioner import remote
from provisioner.errors import RemoteError, UserInputError
from provisioner.hostkeys import HostKey, parse_console
from provisioner.inventory import Inventory
from provisioner.keys import config_dir, generated_key_path
from provisioner.render import FAILED_MARKER, READY_MARKER
from provisioner.workflows.context import Reporter
from provisioner.workflows.ports import Cloud

log = logging.getLogger(__name__)

CLOUD_INIT_LOG = "/var/log/cloud-init-output.log"
LOG_TAIL_LINES = 30

_PROBE = (
    f"if [ -e {READY_MARKER} ]; then echo ready; "
    f"elif [ -e {FAILED_MARKER} ]; then echo failed; else echo waiting; fi"
)


@dataclass(frozen=True)
class Access:
    """How this machine logs in to the cluster's nodes."""

    user: str
    key_file: Path
    trust: str  # "console" | "first-use"
    known_hosts_dir: Path
    # ssh.boot_timeout: how long a node may take from creation to its ready marker.
    boot_timeout: float = 1200.0

    @classmethod
    def from_inventory(cls, inv: Inventory) -> Access:
        cluster_dir = config_dir(inv.cluster.name)
        key = inv.ssh.private_key or generated_key_path(cluster_dir)
        if not Path(key).is_file():
            raise UserInputError(
                f"the cluster's private key {key} is not there",
                resource=inv.cluster.name,
                step="ssh",
                hint="set ssh.private_key to the key of the keypair the servers were "
                "launched with, or run `sparkstack up` to make the cluster's own",
            )
        return cls(
            user=inv.ssh.user,
            key_file=Path(key),
            trust=inv.ssh.host_key_trust,
            known_hosts_dir=cluster_dir,
            boot_timeout=inv.ssh.boot_timeout,
        )

    def host_keys(self) -> remote.HostKeys:
        if self.trust == "first-use":
            return remote.HostKeys.first_use(self.known_hosts_dir)
        return remote.HostKeys.pinned()


@dataclass
class Nodes:
    """Logged-in sessions of a ready cluster, by node name; close() ends them all."""

    master: remote.Session
    workers: dict[str, remote.Session]

    def all(self) -> dict[str, remote.Session]:
        return {self.master.target.name: self.master, **self.workers}

    def close(self) -> None:
        for session in [*self.workers.values(), self.master]:
            session.close()


class _Phases:
    """Each node's phase, shown live (thread-safe: nodes advance in parallel)."""

    def __init__(self, reporter: Reporter, names: list[str]) -> None:
        self.reporter = reporter
        self.states = dict.fromkeys(names, "ACTIVE")
        self.lock = threading.Lock()
        reporter.nodes(dict(self.states))

    def __call__(self, name: str, phase: str) -> None:
        with self.lock:
            self.states[name] = phase
            snapshot = dict(self.states)
        self.reporter.nodes(snapshot)


def timeout_hint(timeout: float) -> str:
    return (f"a node on a stock image installs Java, Python packages and Node.js at boot: "
            f"raise ssh.boot_timeout in the inventory (now {timeout:.0f} s) if its mirrors "
            "are slow, or look at the log above")


def _stop(deadline: float, cancel: threading.Event | None) -> Any:
    return tenacity.stop_after_delay(max(0.0, deadline - time.monotonic())) | (
        tenacity.stop_when_event_set(cancel or threading.Event())
    )


def console_keys(
    cloud: Cloud,
    node: P.Node,
    *,
    deadline: float,
    poll: float = 2.0,
    cancel: threading.Event | None = None,
    timeout_hint: str = "",
) -> list[HostKey]:
    """The host keys cloud-init printed to the node's console: printed late in boot (a
    final-stage module), so poll until the block is there."""

    def read() -> list[HostKey]:
        return parse_console(cloud.console_output(node.id, name=node.name))

    try:
        return tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda keys: not keys),
            wait=tenacity.wait_fixed(poll),
            stop=_stop(deadline, cancel),
        )(read)
    except tenacity.RetryError:
        raise RemoteError(
            "its console log shows no SSH host keys (cloud-init's SSH HOST KEY KEYS block)",
            resource=node.name,
            step="host keys",
            hint="cloud-init prints them once the node's boot script is done; "
            + (f"{timeout_hint}; " if timeout_hint else "")
            + 'if this cloud never shows console logs, set ssh.host_key_trust = "first-use"',
        ) from None


def boot_failure(session: remote.Session, node: str) -> RemoteError:
    """What the node's failed marker and cloud-init log say, as one error."""
    marker = (session.read(FAILED_MARKER, sudo=True) or b"").decode(errors="replace")
    fields = dict(line.split("=", 1) for line in marker.splitlines() if "=" in line)
    tail = log_tail(session)
    return RemoteError(
        f"boot failed in step {fields.get('step', '?')}: {fields.get('reason', marker.strip())}",
        resource=node,
        step="cloud-init",
        log_tail=tail,
        hint=f"the node's {CLOUD_INIT_LOG} has the details (`sparkstack down` removes "
        "the cluster)",
    )


def log_tail(session: remote.Session) -> str:
    out = session.run(
        f"tail -n {LOG_TAIL_LINES} {CLOUD_INIT_LOG}", sudo=True, check=False, timeout=30
    )
    return out.stdout.strip()


def wait_booted(
    session: remote.Session,
    node: str,
    *,
    deadline: float,
    poll: float = 1.0,
    cancel: threading.Event | None = None,
    timeout_hint: str = "",
) -> None:
    """Until the node's boot script wrote its ready marker; its failed marker ends the
    wait at once with what went wrong."""

    def probe() -> str:
        return session.run(_PROBE, timeout=30).stdout.strip()

    try:
        state = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda s: s == "waiting"),
            wait=tenacity.wait_fixed(poll),
            stop=_stop(deadline, cancel),
        )(probe)
    except tenacity.RetryError:
        raise RemoteError(
            "boot did not finish in time (no ready or failed marker)",
            resource=node,
            step="cloud-init",
            log_tail=log_tail(session),
            hint=timeout_hint or "look at the log above",
        ) from None
    if state != "ready":
        raise boot_failure(session, node)


class _Login:
    """Logs in to one node: pin its host keys, wait for TCP and SSH, then for its boot."""

    def __init__(self, *, cloud: Cloud, access: Access, phases: _Phases, timeout: float,
                 cancel: threading.Event) -> None:  # fmt: skip
        self.cloud, self.access, self.phases = cloud, access, phases
        self.deadline, self.cancel = time.monotonic() + timeout, cancel
        self.hint = timeout_hint(timeout)
        self.host_keys = access.host_keys()

    def __call__(self, node: P.Node, address: str, via: remote.Session | None) -> remote.Session:
        if self.access.trust == "console":
            self.phases(node.name, "host keys")
            keys = console_keys(self.cloud, node, deadline=self.deadline, cancel=self.cancel,
                                timeout_hint=self.hint)
            self.host_keys.pin(node.name, keys)
        target = remote.Target(name=node.name, address=address, user=self.access.user)
        remote.wait_tcp(target, deadline=self.deadline, via=via, cancel=self.cancel,
                        on_phase=self.phases)  # fmt: skip
        session = remote.wait_ssh(
            target, key_file=self.access.key_file, host_keys=self.host_keys,
            deadline=self.deadline, via=via, cancel=self.cancel, on_phase=self.phases,
        )  # fmt: skip
        self.phases(node.name, "cloud-init")
        try:
            wait_booted(session, node.name, deadline=self.deadline, cancel=self.cancel,
                        timeout_hint=self.hint)
        except BaseException:
            session.close()
            raise
        self.phases(node.name, "ready")
        return session


def _login_workers(login: _Login, head: remote.Session, workers: Sequence[P.Node]
                   ) -> tuple[dict[str, remote.Session], list[RemoteError]]:  # fmt: skip
    """Every worker at once through the master: their sessions and their failures."""
    sessions: dict[str, remote.Session] = {}
    errors: list[RemoteError] = []
    if not workers:
        return sessions, errors
    pool = cf.ThreadPoolExecutor(max_workers=max(1, min(16, len(workers))))
    try:
        futures = {pool.submit(login, w, w.fixed_ip, head): w for w in workers}
        for fut in cf.as_completed(futures):
            node = futures[fut]
            try:
                sessions[node.name] = fut.result()
            except RemoteError as exc:
                login.phases(node.name, "failed")
                errors.append(exc)
    except BaseException:
        # Interrupted: the other workers' waits end at their next pause, not the deadline.
        login.cancel.set()
        for s in sessions.values():
            s.close()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return sessions, errors


def reach(
    observed: P.Observed,
    *,
    cloud: Cloud,
    access: Access,
    reporter: Reporter,
    timeout: float | None = None,
    workers: Sequence[P.Node] | None = None,
) -> tuple[Nodes, list[RemoteError]]:
    """The master (or its failure, raised) and every worker it can reach: the sessions and
    the workers' failures. `workers` narrows the workers to log in to."""
    master = observed.master()
    if master is None:
        raise RemoteError("the cluster has no master", step="ssh")
    workers = observed.workers() if workers is None else list(workers)
    phases = _Phases(reporter, [master.name, *(w.name for w in workers)])
    login = _Login(cloud=cloud, access=access, phases=phases,
                   timeout=timeout or access.boot_timeout, cancel=threading.Event())  # fmt: skip
    head = login(master, master.floating_ip or master.fixed_ip, None)
    try:
        sessions, errors = _login_workers(login, head, workers)
    except BaseException:
        head.close()
        raise
    return Nodes(master=head, workers=dict(sorted(sessions.items()))), errors


def bring_up(
    observed: P.Observed,
    *,
    cloud: Cloud,
    access: Access,
    reporter: Reporter,
    timeout: float | None = None,
    workers: Sequence[P.Node] | None = None,
) -> Nodes:
    """Every node logged in and booted, or the first failure (the others still finish
    their own waits, so one message can name every failed node)."""
    nodes, errors = reach(observed, cloud=cloud, access=access, reporter=reporter,
                          timeout=timeout, workers=workers)  # fmt: skip
    if errors:
        nodes.close()
        raise _combined(errors)
    return nodes


def _combined(errors: list[RemoteError]) -> RemoteError:
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    others = ", ".join(e.resource or "?" for e in errors[1:])
    first.message = f"{first.message} (also failed: {others})"
    return first
