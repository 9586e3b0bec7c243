"""up / scale / down / status: observe -> plan -> preflight -> (dry run stops) -> apply.

Collaborators come in as arguments (the cloud, a progress reporter, a user_data renderer,
hooks for the SSH stage) so the same functions run from the CLI, from tests and from
benchmarks. Every apply runs under one guard: whatever stops it (an error, Ctrl-C), every
resource created so far already carries the cluster's identity, so `up` can complete the
cluster and `down` can remove it, and the message says which.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tenacity

from provisioner import plan as P
from provisioner.cloud import ClusterCloud, Resolved, is_transient
from provisioner.errors import (
    CloudError,
    Interrupted,
    PreflightError,
    SparkstackError,
    UserInputError,
)

log = logging.getLogger(__name__)

UserData = Callable[[str, str], str]  # (role, master_ip) -> cloud-init user_data


class Reporter:
    """Progress sink. The CLI shows it live; tests record it; the default drops it."""

    def step(self, text: str) -> None:
        log.info("%s", text)

    def nodes(self, states: Mapping[str, str]) -> None:
        """Current state of every node being waited on (name -> short text)."""


def _noop(*_: Any) -> None:
    return None


@dataclass
class Hooks:
    """Seams for the SSH stage: after every server is ACTIVE (and the floating IP is
    attached), and before workers are removed (graceful decommission)."""

    after_servers_active: Callable[[P.Observed], None] = _noop
    decommission: Callable[[Sequence[P.Node]], None] = _noop


@dataclass
class Settings:
    """Timing knobs, explicit so tests and benchmarks can tighten them."""

    max_parallel: int = 10
    replace_budget: int = 3  # creates per node (ERROR replacements, lost answers)
    active_timeout: float = 900.0
    delete_timeout: float = 600.0
    poll_min: float = 1.0
    poll_max: float = 5.0


@dataclass
class Result:
    actions: list[P.Action]
    observed: P.Observed | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- local keys


def config_dir(cluster: str, env: Mapping[str, str] | None = None) -> Path:
    """~/.config/sparkstack/<cluster>, respecting XDG_CONFIG_HOME."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "sparkstack" / cluster


def state_dir(cluster: str, env: Mapping[str, str] | None = None) -> Path:
    """~/.local/state/sparkstack/<cluster> (XDG_STATE_HOME): where the log goes."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local" / "state"
    )
    return Path(base) / "sparkstack" / cluster


def generated_key_path(key_dir: Path) -> Path:
    return key_dir / "id_ed25519"


def ensure_generated_key(key_dir: Path) -> str:
    """The cluster's own key pair, made once and kept 0600; returns the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = generated_key_path(key_dir)
    pub = path.with_suffix(".pub")
    if path.exists() and pub.exists():
        return pub.read_text().strip()
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    os.chmod(path, 0o600)
    pub.write_text(public.decode() + " sparkstack\n")
    log.info("generated key pair %s", path)
    return pub.read_text().strip()


def _import_key_path(inv: Any) -> Path:
    return (
        Path(str(inv.ssh.private_key))
        .expanduser()
        .with_name(Path(str(inv.ssh.private_key)).name + ".pub")
    )


# ---------------------------------------------------------------------------- the guard


@contextlib.contextmanager
def _guard(*, verb: str, cluster: str) -> Iterator[None]:
    """Turn whatever stops an apply into a message saying how to finish or undo."""
    if verb == "down":
        hint = f"run `sparkstack down` again to remove what is left of cluster {cluster}"
    else:
        hint = (
            f"cluster {cluster} is partly there: run `sparkstack up` to complete it, "
            "or `sparkstack down` to remove it"
        )
    try:
        yield
    except KeyboardInterrupt:
        log.warning("%s interrupted", verb)
        raise Interrupted(f"{verb} interrupted", step=verb, hint=hint) from None
    except PreflightError:
        raise
    except SparkstackError as exc:
        exc.hint = f"{exc.hint}; {hint}" if exc.hint else hint
        exc.step = exc.step or verb
        raise
    except Exception as exc:
        log.exception("%s failed", verb)
        raise CloudError(f"{verb} failed: {exc}", step=verb, hint=hint) from exc


# ---------------------------------------------------------------------------- waiting


def _poller(settings: Settings, timeout: float) -> tenacity.Retrying:
    """One shared poll loop: call a condition until it is true, backing off to poll_max."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda done: not done),
        wait=tenacity.wait_exponential(multiplier=settings.poll_min, max=settings.poll_max),
        stop=tenacity.stop_after_delay(timeout),
    )


class _Converger:
    """Create servers with bounded concurrency and wait until each is ACTIVE, with ONE
    server list per poll for the whole cluster. A server that goes ERROR is reported with
    Nova's fault, deleted and created again within a budget; a create whose answer was
    lost is decided by the next list (the identity is in the request)."""

    def __init__(
        self,
        *,
        cloud: ClusterCloud,
        reporter: Reporter,
        settings: Settings,
        create: Callable[[P.CreateServer], str],
    ) -> None:
        self.cloud = cloud
        self.reporter = reporter
        self.settings = settings
        self.create = create
        self.specs: dict[str, P.CreateServer] = {}
        self.attempts: dict[str, int] = {}
        self.inflight: dict[str, cf.Future[str]] = {}
        self.gone: set[str] = set()  # ids we deleted (may still be listed a moment)
        self.states: dict[str, str] = {}
        self.created: list[str] = []

    def _submit(self, pool: cf.ThreadPoolExecutor, name: str) -> None:
        used = self.attempts.get(name, 0)
        if used >= self.settings.replace_budget:
            raise CloudError(
                f"gave up after {used} attempts to create it",
                resource=name,
                hint="see the log for each attempt's error",
            )
        self.attempts[name] = used + 1
        self.states[name] = "creating" if used == 0 else f"creating (attempt {used + 1})"
        self.inflight[name] = pool.submit(self.create, self.specs[name])

    def _delete(self, node: P.Node, why: str) -> None:
        log.warning("deleting %s (%s): %s", node.name, node.id, why)
        self.cloud.delete_server(node.id, name=node.name)
        self.gone.add(node.id)

    def run(
        self,
        *,
        creates: Sequence[P.CreateServer],
        watch: Sequence[str],
    ) -> list[P.Node]:
        """Create `creates`; wait until every name in watch+creates is ACTIVE."""
        self.specs.update({c.name: c for c in creates})
        names = list(dict.fromkeys([*watch, *(c.name for c in creates)]))
        final: dict[str, P.Node] = {}
        pool = cf.ThreadPoolExecutor(max_workers=max(1, self.settings.max_parallel))
        try:
            for c in creates:
                self._submit(pool, c.name)

            def poll() -> bool:
                pending = [f for f in self.inflight.values() if not f.done()]
                if pending:  # no list while POSTs are still going out
                    cf.wait(pending, timeout=self.settings.poll_max)
                nodes = [n for n in self.cloud.list_nodes() if n.id not in self.gone]
                by_name: dict[str, list[P.Node]] = {}
                for n in nodes:
                    by_name.setdefault(n.name, []).append(n)
                done = True
                for name in names:
                    if not self._check(pool, name, by_name.get(name, []), final):
                        done = False
                self.reporter.nodes(dict(self.states))
                return done

            try:
                _poller(self.settings, self.settings.active_timeout)(poll)
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

    def _check(
        self,
        pool: cf.ThreadPoolExecutor,
        name: str,
        servers: list[P.Node],
        final: dict[str, P.Node],
    ) -> bool:
        fut = self.inflight.get(name)
        if fut is not None:
            if not fut.done():
                self.states[name] = "creating"
                return False
            del self.inflight[name]
            exc = fut.exception()
            if exc is None:
                self.created.append(name)
            elif is_transient(exc):
                log.warning("create %s: %s; the server list decides", name, exc)
            else:
                raise exc
        if len(servers) > 1:
            keep = sorted(servers, key=P.rank)[0]
            for extra in servers:
                if extra is not keep:
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
            self._delete(node, f"ERROR: {fault}")
            self._submit(pool, name)
            return False
        self.states[name] = node.status
        if node.status == "ACTIVE":
            final[name] = node
            return True
        return False


def _wait_gone(
    cloud: ClusterCloud, ids: set[str], *, settings: Settings, reporter: Reporter
) -> None:
    if not ids:
        return

    names: dict[str, str] = {}

    def poll() -> bool:
        left = [n for n in cloud.list_nodes() if n.id in ids]
        names.update({n.id: n.name for n in left})
        states = {name: "deleted" for name in names.values()}
        states.update({n.name: f"deleting ({n.status})" for n in left})
        reporter.nodes(states)
        return not left

    try:
        _poller(settings, settings.delete_timeout)(poll)
    except tenacity.RetryError as exc:
        raise CloudError(
            f"servers still present after {settings.delete_timeout:.0f}s",
            hint="check the cloud's compute service",
        ) from exc


# ---------------------------------------------------------------------------- preflight


def _preflight(
    *,
    inv: Any,
    cloud: ClusterCloud,
    desired: P.Desired,
    observed: P.Observed,
    actions: list[P.Action],
) -> tuple[Resolved | None, list[str]]:
    """Every reason the plan cannot run, collected before anything is created."""
    resolved, problems = cloud.resolve(desired)
    if resolved is not None:
        used = [resolved.flavors[k] for k in {desired.master_flavor, desired.worker_flavor}]
        problems += P.image_flavor_shortfalls(resolved.image, used)
    if not desired.floating_ip_pool and any(
        isinstance(a, P.AttachFloatingIP) and not a.address for a in actions
    ):
        problems.append("network.floating_ip_pool is empty and no network.floating_ip is given")
    if any(isinstance(a, P.CreateKeypair) and a.source == "import" for a in actions):
        pub = _import_key_path(inv)
        if not pub.is_file():
            problems.append(f"public key {pub} (for ssh.private_key) not found")
    if desired.keypair:
        kp = cloud.call(
            "read keypair",
            lambda: cloud.conn.compute.find_keypair(desired.keypair, ignore_missing=True),
        )
        if kp is None:
            problems.append(f"keypair {desired.keypair!r} (ssh.keypair) not found")
    creating = (P.CreateServer, P.CreateMasterPort, P.CreateSecurityGroup, P.AttachFloatingIP)
    if resolved is not None and any(isinstance(a, creating) for a in actions):
        need = P.needs(actions, flavors=resolved.flavors, observed=observed, desired=desired)
        problems += P.quota_shortfalls(need, cloud.quotas())
    return resolved, problems


def _checked(
    *,
    inv: Any,
    cloud: ClusterCloud,
    desired: P.Desired,
    observed: P.Observed,
    actions: list[P.Action],
    dry_run: bool,
) -> tuple[Result, Resolved | None]:
    """Preflight shared by up and scale: a dry run reports the problems, a real run refuses."""
    resolved, problems = _preflight(
        inv=inv, cloud=cloud, desired=desired, observed=observed, actions=actions
    )
    if problems and not dry_run:
        raise refusal(problems, desired.cluster)
    return Result(actions=actions, observed=observed, problems=problems), resolved


def refusal(problems: list[str], cluster: str) -> PreflightError:
    listed = "\n".join(f"  - {p}" for p in problems)
    return PreflightError(
        f"cluster {cluster} cannot be created as planned; nothing was created:\n{listed}",
        step="preflight",
        hint="fix each item above (inventory, quota, image, flavor or network), then retry",
    )


# ---------------------------------------------------------------------------- workflows


def status(inv: Any, *, cloud: ClusterCloud) -> P.Observed:
    return cloud.observe()


def up(
    inv: Any,
    *,
    cloud: ClusterCloud,
    user_data: UserData,
    reporter: Reporter | None = None,
    hooks: Hooks | None = None,
    settings: Settings | None = None,
    key_dir: Path | None = None,
    dry_run: bool = False,
    until: str = "all",
) -> Result:
    """Create what is missing until every server is ACTIVE and the floating IP is on the
    master; then (unless until == "servers") hand over to the SSH stage hook."""
    reporter = reporter or Reporter()
    hooks = hooks or Hooks()
    settings = settings or Settings(max_parallel=inv.cluster.max_parallel_creates)
    desired = P.desired_from_inventory(inv)
    key_dir = key_dir or config_dir(desired.cluster)
    reporter.step(f"looking at cluster {desired.cluster}")
    observed = cloud.observe()
    actions = P.plan_up(desired, observed)
    result, resolved = _checked(
        inv=inv,
        cloud=cloud,
        desired=desired,
        observed=observed,
        actions=actions,
        dry_run=dry_run,
    )
    if dry_run:
        return result
    assert resolved is not None
    with _guard(verb="up", cluster=desired.cluster):
        _apply_up(
            inv,
            cloud=cloud,
            desired=desired,
            observed=observed,
            actions=actions,
            resolved=resolved,
            user_data=user_data,
            reporter=reporter,
            settings=settings,
            key_dir=key_dir,
            result=result,
        )
        reporter.step("reading the cluster back")
        result.observed = cloud.observe()
        reporter.step("every server is ACTIVE and the floating IP is attached")
        if until != "servers":
            hooks.after_servers_active(result.observed)
    return result


def _apply_up(
    inv: Any,
    *,
    cloud: ClusterCloud,
    desired: P.Desired,
    observed: P.Observed,
    actions: list[P.Action],
    resolved: Resolved,
    user_data: UserData,
    reporter: Reporter,
    settings: Settings,
    key_dir: Path,
    result: Result,
) -> None:
    sg_id = observed.security_group.id if observed.security_group else ""
    group_id = observed.server_group.id if observed.server_group else ""
    port = observed.master_port
    for a in actions:
        if isinstance(a, P.CreateSecurityGroup):
            reporter.step(a.describe())
            sg_id = cloud.create_security_group(name=a.name, cidrs=a.allowed_cidrs, ports=a.ports)
            result.created.append(f"security group {a.name}")
        elif isinstance(a, P.CreateKeypair):
            reporter.step(a.describe())
            if a.source == "generate":
                public = ensure_generated_key(key_dir)
                result.notes.append(f"private key: {generated_key_path(key_dir)}")
            else:
                public = _import_key_path(inv).read_text().strip()
            cloud.create_keypair(name=a.name, public_key=public)
            result.created.append(f"keypair {a.name}")
        elif isinstance(a, P.CreateServerGroup):
            reporter.step(a.describe())
            group_id = cloud.create_server_group(name=a.name, policy=a.policy)
            result.created.append(f"server group {a.name}")
        elif isinstance(a, P.CreateMasterPort):
            reporter.step(a.describe())
            port = cloud.create_master_port(
                name=a.name, network_id=resolved.network_id, security_group_id=sg_id
            )
            result.created.append(f"port {a.name} ({port.detail})")
        elif isinstance(a, P.DeleteServer):
            reporter.step(a.describe())
            cloud.delete_server(a.id, name=a.name)
            result.deleted.append(f"server {a.name}")
    assert port is not None
    master_ip = port.detail
    creates = [a for a in actions if isinstance(a, P.CreateServer)]
    _converge(
        cloud=cloud,
        desired=desired,
        resolved=resolved,
        creates=creates,
        watch=[P.server_name(desired.cluster, r, i) for r, i in desired.wanted()],
        user_data=user_data,
        master_ip=master_ip,
        port_id=port.id,
        sg_id=sg_id,
        group_id=group_id,
        reporter=reporter,
        settings=settings,
        result=result,
        deleted_ids={a.id for a in actions if isinstance(a, P.DeleteServer)},
    )
    for a in actions:
        if isinstance(a, P.AttachFloatingIP):
            reporter.step(a.describe())
            address = cloud.attach_floating_ip(
                address=a.address,
                port_id=port.id,
                external_network_id=resolved.external_network_id,
            )
            reporter.step(f"floating IP {address} is on the master")
            result.notes.append(f"floating IP: {address}")
            if not a.address:
                result.created.append(f"floating IP {address}")


def _converge(
    *,
    cloud: ClusterCloud,
    desired: P.Desired,
    resolved: Resolved,
    creates: list[P.CreateServer],
    watch: list[str],
    user_data: UserData,
    master_ip: str,
    port_id: str,
    sg_id: str,
    group_id: str,
    reporter: Reporter,
    settings: Settings,
    result: Result,
    deleted_ids: set[str],
) -> list[P.Node]:
    rendered: dict[str, str] = {}

    def ud(role: str) -> str:
        if role not in rendered:  # render once per role, not once per server
            rendered[role] = user_data(role, master_ip)
        return rendered[role]

    for role in {c.role for c in creates}:
        ud(role)

    def create(spec: P.CreateServer) -> str:
        master = spec.role == P.MASTER
        return cloud.create_server(
            name=spec.name,
            role=spec.role,
            index=spec.index,
            resolved=resolved,
            flavor=spec.flavor,
            key_name=desired.keypair_name,
            user_data=rendered[spec.role],
            port_id=port_id if master else "",
            security_group_id="" if master else sg_id,
            server_group_id="" if master else group_id,
        )

    if creates:
        reporter.step(f"creating {len(creates)} server(s), {settings.max_parallel} at a time")
    else:
        reporter.step("checking that every server is ACTIVE")
    conv = _Converger(cloud=cloud, reporter=reporter, settings=settings, create=create)
    conv.gone |= deleted_ids
    nodes = conv.run(creates=creates, watch=watch)
    result.created += [f"server {n}" for n in conv.created]
    return nodes


def scale(
    inv: Any,
    *,
    workers: int,
    cloud: ClusterCloud,
    user_data: UserData,
    reporter: Reporter | None = None,
    hooks: Hooks | None = None,
    settings: Settings | None = None,
    dry_run: bool = False,
) -> Result:
    """Add workers from the same template, or remove the highest-index ones after the
    graceful-decommission hook."""
    if workers < 0:
        raise UserInputError("--workers must be 0 or more")
    reporter = reporter or Reporter()
    hooks = hooks or Hooks()
    settings = settings or Settings(max_parallel=inv.cluster.max_parallel_creates)
    desired = P.desired_from_inventory(inv, workers=workers)
    observed = cloud.observe()
    master = observed.master()
    if master is None or observed.master_port is None or observed.security_group is None:
        raise UserInputError(
            f"cluster {desired.cluster} has no master",
            hint="run `sparkstack up` first",
        )
    actions = P.plan_scale(desired, observed)
    result, resolved = _checked(
        inv=inv,
        cloud=cloud,
        desired=desired,
        observed=observed,
        actions=actions,
        dry_run=dry_run,
    )
    if dry_run:
        return result
    assert resolved is not None
    with _guard(verb="scale", cluster=desired.cluster):
        by_name = {n.name: n for n in observed.nodes}
        group_id = observed.server_group.id if observed.server_group else ""
        removed: set[str] = set()
        for a in actions:
            if isinstance(a, P.Decommission):
                reporter.step(a.describe())
                hooks.decommission([by_name[n] for n in a.names if n in by_name])
            elif isinstance(a, P.DeleteServer):
                reporter.step(a.describe())
                cloud.delete_server(a.id, name=a.name)
                removed.add(a.id)
                result.deleted.append(f"server {a.name}")
            elif isinstance(a, P.CreateServerGroup):
                reporter.step(a.describe())
                group_id = cloud.create_server_group(name=a.name, policy=a.policy)
                result.created.append(f"server group {a.name}")
        _wait_gone(cloud, removed, settings=settings, reporter=reporter)
        creates = [a for a in actions if isinstance(a, P.CreateServer)]
        _converge(
            cloud=cloud,
            desired=desired,
            resolved=resolved,
            creates=creates,
            watch=[P.server_name(desired.cluster, P.WORKER, i) for i in range(1, workers + 1)],
            user_data=user_data,
            master_ip=observed.master_port.detail or master.fixed_ip,
            port_id=observed.master_port.id,
            sg_id=observed.security_group.id,
            group_id=group_id,
            reporter=reporter,
            settings=settings,
            result=result,
            deleted_ids=removed,
        )
        result.observed = cloud.observe()
        if creates:
            hooks.after_servers_active(result.observed)
    return result


def down(
    inv: Any,
    *,
    cloud: ClusterCloud,
    reporter: Reporter | None = None,
    settings: Settings | None = None,
    dry_run: bool = False,
    key_dir: Path | None = None,
) -> Result:
    """Delete everything that carries the cluster's identity: servers first (and wait
    until they are gone), then floating IP, port, security group, server group, keypair,
    and the private key generated for it (useless once its keypair is gone)."""
    reporter = reporter or Reporter()
    settings = settings or Settings(max_parallel=inv.cluster.max_parallel_creates)
    desired = P.desired_from_inventory(inv)
    key_dir = key_dir or config_dir(desired.cluster)
    observed = cloud.observe()
    actions = P.plan_down(desired, observed)
    result = Result(actions=actions, observed=observed)
    if dry_run or not actions:
        return result
    with _guard(verb="down", cluster=desired.cluster):
        servers = [a for a in actions if isinstance(a, P.DeleteServer)]
        if servers:
            reporter.step(f"deleting {len(servers)} server(s)")
            with cf.ThreadPoolExecutor(max_workers=max(1, settings.max_parallel)) as pool:
                list(pool.map(lambda a: cloud.delete_server(a.id, name=a.name), servers))
            _wait_gone(cloud, {a.id for a in servers}, settings=settings, reporter=reporter)
            result.deleted += [f"server {a.name}" for a in servers]
        for a in actions:
            if isinstance(a, P.DeleteServer):
                continue
            reporter.step(a.describe())
            if isinstance(a, P.DeleteFloatingIP):
                cloud.delete_floating_ip(a.id, address=a.address)
                result.deleted.append(f"floating IP {a.address}")
            elif isinstance(a, P.DeletePort):
                cloud.delete_port(a.id, name=a.name)
                result.deleted.append(f"port {a.name}")
            elif isinstance(a, P.DeleteSecurityGroup):
                cloud.delete_security_group(a.id, name=a.name)
                result.deleted.append(f"security group {a.name}")
            elif isinstance(a, P.DeleteServerGroup):
                cloud.delete_server_group(a.id, name=a.name)
                result.deleted.append(f"server group {a.name}")
            elif isinstance(a, P.DeleteKeypair):
                cloud.delete_keypair(a.name)
                result.deleted.append(f"keypair {a.name}")
                removed = remove_generated_key(key_dir)
                if removed:
                    result.deleted.append(f"private key {removed}")
    return result


def remove_generated_key(key_dir: Path) -> Path | None:
    """Delete the key pair files ensure_generated_key made, and their folder if that
    leaves it empty; a key the user named in the inventory is never under key_dir."""
    path = generated_key_path(key_dir)
    if not path.exists():
        return None
    path.unlink()
    path.with_suffix(".pub").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: something else of the user's is there
        key_dir.rmdir()
    return path


def elapsed_since(start: float) -> str:
    s = int(time.monotonic() - start)
    return f"{s // 60}:{s % 60:02d}"
