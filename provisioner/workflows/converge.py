"""Waiting on the cloud: create servers and wait until each is ACTIVE, or wait until
deleted servers are gone, with ONE server list per poll for the whole cluster.

The converger needs only four things of the cloud edge (list_nodes, delete_server,
is_transient, and the create function it is given), so unit tests drive it with a scripted
stand-in of that interface and the real-bed tests with the real one.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable, Sequence

import tenacity

from provisioner import plan as P
from provisioner.errors import CloudError
from provisioner.workflows.context import Reporter, Settings
from provisioner.workflows.ports import Servers

log = logging.getLogger(__name__)


class _WaitInProportion(tenacity.wait.wait_base):
    """Poll every poll_min at first, then every `fraction` of the time waited so far, up
    to poll_max. What is lost on average is half an interval, so 0.15 keeps the wait
    within ~8% of the cloud's own time, while the number of lists grows only with the log
    of it (about 17 for a minute): quick clusters are seen at once, slow ones cost few
    requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        s = self.settings
        elapsed = retry_state.seconds_since_start or 0.0
        return min(max(s.poll_fraction * elapsed, s.poll_min), s.poll_max)


def poller(settings: Settings, timeout: float) -> tenacity.Retrying:
    """One shared poll loop: call a condition until it is true (see _WaitInProportion)."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda done: not done),
        wait=_WaitInProportion(settings),
        stop=tenacity.stop_after_delay(timeout),
    )


class Converger:
    """Create servers with bounded concurrency and wait until each is ACTIVE. A server that
    goes ERROR is reported with Nova's fault, deleted and created again within a budget; a
    create whose answer was lost is decided by the next list (the identity is in the
    request); of several servers with one name the planner's choice is kept."""

    def __init__(
        self,
        *,
        cloud: Servers,
        reporter: Reporter,
        settings: Settings,
        create: Callable[[P.CreateServer], str],
        create_many: Callable[[Sequence[P.CreateServer]], str] | None = None,
        gone: set[str] | None = None,
    ) -> None:
        self.cloud = cloud
        self.reporter = reporter
        self.settings = settings
        self.create = create
        self.create_many = create_many
        self.specs: dict[str, P.CreateServer] = {}
        self.attempts: dict[str, int] = {}
        self.inflight: dict[str, cf.Future[str]] = {}
        self.gone: set[str] = gone if gone is not None else set()
        self.states: dict[str, str] = {}
        self.created: list[str] = []
        self.faults: dict[str, str] = {}  # name -> Nova's fault of its last ERROR

    def _submit(self, pool: cf.ThreadPoolExecutor, name: str) -> None:
        used = self.attempts.get(name, 0)
        if used >= self.settings.replace_budget:
            last = self.faults.get(name)
            raise CloudError(
                f"gave up after {used} attempts to create it"
                + (f"; the last went to ERROR: {last}" if last else ""),
                resource=name,
                hint="see the log for each attempt's error",
            )
        self.attempts[name] = used + 1
        self.states[name] = "creating" if used == 0 else f"creating (attempt {used + 1})"
        self.inflight[name] = pool.submit(self.create, self.specs[name])

    def _submit_many(self, pool: cf.ThreadPoolExecutor, names: Sequence[str]) -> None:
        """One POST for several new servers; each name then settles on its own (a lost
        answer or a missing server is created again by name, like any other)."""
        assert self.create_many is not None
        future = pool.submit(self.create_many, [self.specs[n] for n in names])
        for name in names:
            self.attempts[name] = self.attempts.get(name, 0) + 1
            self.states[name] = "creating"
            self.inflight[name] = future

    def _delete(self, node: P.Node, why: str) -> None:
        log.warning("deleting %s (%s): %s", node.name, node.id, why)
        self.cloud.delete_server(node.id, name=node.name)
        self.gone.add(node.id)

    def run(
        self,
        *,
        creates: Sequence[P.CreateServer],
        watch: Sequence[str],
        in_one_request: Sequence[P.CreateServer] = (),
    ) -> list[P.Node]:
        """Create `creates` (those also in `in_one_request` with one multi-create POST);
        wait until every name in watch+creates is ACTIVE."""
        self.specs.update({c.name: c for c in creates})
        names = list(dict.fromkeys([*watch, *(c.name for c in creates)]))
        together = [c.name for c in in_one_request if c.name in self.specs]
        final: dict[str, P.Node] = {}
        pool = cf.ThreadPoolExecutor(max_workers=max(1, self.settings.max_parallel))
        try:
            if together:
                self._submit_many(pool, together)
            for c in creates:
                if c.name not in together:
                    self._submit(pool, c.name)

            def poll() -> bool:
                pending = [f for f in self.inflight.values() if not f.done()]
                if pending:  # no list while POSTs are still going out
                    cf.wait(pending, timeout=self.settings.poll_max)
                # A create answered while the list was on its way may be missing from
                # it: only creates done before the list are judged by it.
                answered = {n for n, f in self.inflight.items() if f.done()}
                nodes = [n for n in self.cloud.list_nodes() if n.id not in self.gone]
                by_name: dict[str, list[P.Node]] = {}
                for n in nodes:
                    by_name.setdefault(n.name, []).append(n)
                done = True
                for name in names:
                    if not self._check(pool, name, by_name.get(name, []), final, answered):
                        done = False
                self.reporter.nodes(dict(self.states))
                return done

            try:
                poller(self.settings, self.settings.active_timeout)(poll)
            except tenacity.RetryError as exc:
                waiting = ", ".join(f"{n}: {s}" for n, s in self.states.items() if s != "ACTIVE")
                raise CloudError(
                    f"servers not ACTIVE after {self.settings.active_timeout:.0f}s ({waiting})",
                    hint="check the cloud's compute service; see the log for details",
                ) from exc
        finally:
            # Ctrl-C or an error: send no new POSTs, but let the ones on the wire finish
            # so every server that exists is one the next `up`/`down` will see.
            pool.shutdown(wait=True, cancel_futures=True)
        return [final[n] for n in names]

    def _settle_create(self, name: str, answered: set[str]) -> bool:
        """False while the create is still on the wire or was answered only after the
        list was asked for; a transient failure is left to the server list to decide,
        any other failure ends the run."""
        fut = self.inflight.get(name)
        if fut is None:
            return True
        if name not in answered:
            self.states[name] = "creating"
            return False
        del self.inflight[name]
        exc = fut.exception()
        if exc is None:
            self.created.append(name)
        elif self.cloud.is_transient(exc):
            log.warning("create %s: %s; the server list decides", name, exc)
        else:
            raise exc
        return True

    def _check(
        self,
        pool: cf.ThreadPoolExecutor,
        name: str,
        servers: list[P.Node],
        final: dict[str, P.Node],
        answered: set[str],
    ) -> bool:
        if not self._settle_create(name, answered):
            return False
        if len(servers) > 1:
            keep, extras = P.keep_one(servers)
            for extra in extras:
                self._delete(extra, "duplicate of the same node")
            servers = [keep]
        if not servers:
            if name not in self.specs:
                raise CloudError("server disappeared while waiting for it", resource=name)
            self._submit(pool, name)
            return False
        node = servers[0]
        if node.status == "ERROR":
            fault = node.fault or "no fault message from Nova"
            self.reporter.step(f"{name} went to ERROR ({fault}); replacing it")
            if name not in self.specs:
                raise CloudError(f"server is in ERROR: {fault}", resource=name)
            self.faults[name] = fault
            self._delete(node, f"ERROR: {fault}")
            self._submit(pool, name)
            return False
        self.states[name] = node.status
        if node.status == "ACTIVE":
            final[name] = node
            return True
        return False


def wait_gone(
    cloud: Servers,
    ids: set[str],
    *,
    settings: Settings,
    reporter: Reporter,
    deleted_is_gone: bool = False,
) -> None:
    """Until no server with one of these ids is listed any more, or (deleted_is_gone)
    until each is listed DELETED: Nova says so once the hypervisor and the network have let
    it go (its ports are deleted), a moment before it leaves the list; its quota is only
    freed then, so this is for when nothing is created next."""
    if not ids:
        return

    names: dict[str, str] = {}

    def poll() -> bool:
        left = [
            n
            for n in cloud.list_nodes()
            if n.id in ids and not (deleted_is_gone and n.status == "DELETED")
        ]
        names.update({n.id: n.name for n in left})
        states = {name: "deleted" for name in names.values()}
        states.update({n.name: f"deleting ({n.status})" for n in left})
        reporter.nodes(states)
        return not left

    try:
        poller(settings, settings.delete_timeout)(poll)
    except tenacity.RetryError as exc:
        raise CloudError(
            f"servers still present after {settings.delete_timeout:.0f}s",
            hint="check the cloud's compute service",
        ) from exc
