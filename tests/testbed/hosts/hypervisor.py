"""The test bed's hypervisor: turns the test project's Nova servers into namespace hosts.

Nova's fake driver marks servers ACTIVE without booting anything. This process watches
Nova as admin (one server list per second, all projects filtered to the test project,
plus one floating IP list from Neutron), boots a host for every ACTIVE server with its
fixed IP, its user_data and its keypair's public key, from the rootfs its Glance image
names (property rootfs.IMAGE_PROPERTY, e.g. `stock-bookworm`; none: the pre-baked tree;
a snapshot image: its layers stacked on that tree, see snapshots.py), keeps the host's
floating IPs in step with Neutron, stops the host (keeping its disk) when the server is
SHUTOFF, boots it again from that disk when it is started, and removes the host when the
server is gone.

    python -m tests.testbed.hosts.hypervisor run      # foreground (what up.sh starts)
    python -m tests.testbed.hosts.hypervisor start | stop | status
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import logging
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.testbed import bed

from . import hosts as hostlib
from . import snapshots
from .rootfs import IMAGE_PROPERTY, rootfs_for, rootfs_path

log = logging.getLogger(__name__)

# 2.3 shows OS-EXT-SRV-ATTR:user_data to admins; 2.10 lets an admin read another
# user's keypair with ?user_id=.
SERVERS_MICROVERSION = "2.3"
KEYPAIR_MICROVERSION = "2.10"
# A server in one of these has no disk left on the hypervisor: its host goes entirely.
GONE_STATES = {"DELETED", "SOFT_DELETED", "ERROR", "SHELVED_OFFLOADED"}
# A stopped server keeps its disk: its host's processes and network go, its upper dir stays.
STOPPED_STATES = {"SHUTOFF"}
# Ticks between two sweeps of the snapshot layer cache for images deleted from Glance.
PRUNE_EVERY = 60


@dataclass(frozen=True)
class ServerSpec:
    server_id: str
    name: str
    status: str
    fixed_ip: str | None
    # As Nova hands it over: bytes, gzip-compressed when `up` sent it so (cloud-init unpacks).
    user_data: bytes
    key_name: str | None
    user_id: str
    image_id: str | None = None


def _fixed_ip(server: dict[str, Any], network: str) -> str | None:
    for addr in server.get("addresses", {}).get(network, []):
        if addr.get("OS-EXT-IPS:type", "fixed") == "fixed" and addr.get("version", 4) == 4:
            return addr["addr"]
    return None


def _spec(server: dict[str, Any], network: str) -> ServerSpec:
    raw = server.get("OS-EXT-SRV-ATTR:user_data") or ""
    user_data = base64.b64decode(raw) if raw else b""
    return ServerSpec(
        server_id=server["id"], name=server["name"], status=server["status"],
        fixed_ip=_fixed_ip(server, network), user_data=user_data,
        key_name=server.get("key_name"), user_id=server.get("user_id", ""),
        # "" for a server booted from a volume; a dict with the id otherwise.
        image_id=(server.get("image") or {}).get("id"),
    )


class Hypervisor:
    """One reconcile pass per tick: Nova + Neutron state in, host boots and kills out."""

    def __init__(self, conn: Any, *, project_id: str, rootfs: Path,
                 network: str = bed.PRIVATE_NET["name"]) -> None:
        self.conn = conn
        self.project_id = project_id
        self.rootfs = rootfs
        self.network = network
        # Killing a host full of JVMs can take many seconds on a loaded machine: kills
        # run beside the loop so one slow kill delays no other boot or kill.
        self._killer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kill")
        self._killing: set[str] = set()
        self._lock = threading.Lock()
        # Servers already booted once: a VM whose host died does not boot itself again (a
        # stopped one boots again when it is started).
        self._booted: set[str] = {h.server_id for h in hostlib.list_hosts() if not h.stopped}
        # image id -> its Glance record (None: gone); the properties that matter here do
        # not change under a server, and one Glance call per image is enough.
        self._images: dict[str, dict[str, Any] | None] = {}
        self._refused: set[str] = set()  # servers whose missing rootfs was logged
        # Snapshot layers are downloaded and extracted beside the loop (hundreds of MB):
        # image id -> the fetch under way; image id -> why it failed.
        self._fetcher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fetch")
        self._fetching: dict[str, Future[Path]] = {}
        self._fetch_failed: dict[str, str] = {}
        self._ticks = 0

    def _image(self, image_id: str | None) -> dict[str, Any] | None:
        if not image_id:
            return None
        if image_id not in self._images:
            resp = self.conn.image.get(f"/images/{image_id}")
            if resp.status_code == 404:
                # Deleted since the server was created: nothing names another tree.
                self._images[image_id] = None
            else:
                resp.raise_for_status()
                # Glance v2 shows custom properties as top-level fields.
                self._images[image_id] = resp.json()
        return self._images[image_id]

    def _refuse(self, spec: ServerSpec, problem: str) -> None:
        if spec.server_id not in self._refused:
            self._refused.add(spec.server_id)
            log.error("server %s (%s), image %s: %s; not booting it", spec.name,
                      spec.server_id, spec.image_id, problem)

    def _rootfs(self, spec: ServerSpec) -> Path | None:
        """The tree to boot spec from, or None (logged once) if it is not built: booting
        it would fail anyway, and the server then never comes up, which the product sees."""
        name = ((self._image(spec.image_id) or {}).get(IMAGE_PROPERTY)) or None
        try:
            path = rootfs_for(name) if name else self.rootfs
        except ValueError as exc:
            path, problem = None, str(exc)
        else:
            problem = f"rootfs {path} is not built (python -m tests.testbed.hosts.hostbed build)"
        if path is not None and (path / "etc/cloud/cloud.cfg").exists():
            return path
        self._refuse(spec, problem)
        return None

    def _layer(self, image_id: str) -> Path | None:
        """The extracted layer of a snapshot image; None while its fetch runs (started
        here once). A failed fetch raises snapshots.SnapshotError with the reason."""
        if snapshots.is_cached(image_id):
            return snapshots.layer_path(image_id)
        if image_id in self._fetch_failed:
            raise snapshots.SnapshotError(self._fetch_failed[image_id])
        future = self._fetching.get(image_id)
        if future is None:
            log.info("fetching snapshot image %s", image_id)
            self._fetching[image_id] = self._fetcher.submit(snapshots.fetch, self.conn,
                                                            image_id)
            return None
        if not future.done():
            return None
        del self._fetching[image_id]
        try:
            return future.result()
        except Exception as exc:
            self._fetch_failed[image_id] = f"snapshot image {image_id}: {exc}"
            raise snapshots.SnapshotError(self._fetch_failed[image_id]) from exc

    def _lowers(self, spec: ServerSpec) -> list[Path] | None:
        """The overlay's lower dirs for spec, topmost first: its snapshot layers (if its
        image is a snapshot), then the base tree. None: not now (layers still being
        fetched), or never (refused, logged once)."""
        base = self._rootfs(spec)
        if base is None:
            return None
        image = self._image(spec.image_id)
        if image is None or image.get("image_type") != "snapshot":
            return [base]
        chain = [spec.image_id, *snapshots.lower_images(image)]
        layers: list[Path] = []
        pending = False
        for image_id in chain:
            try:
                layer = self._layer(image_id)
            except snapshots.SnapshotError as exc:
                self._refuse(spec, str(exc))
                return None
            pending = pending or layer is None
            if layer is not None:
                layers.append(layer)
        return None if pending else [*layers, base]

    def _prune(self, hosts: list[hostlib.Host], servers: dict[str, ServerSpec]) -> None:
        in_use = [p for h in hosts for p in h.lowers]
        for image_id in snapshots.prune(self.conn, in_use=in_use):
            self._images.pop(image_id, None)
        # A failed fetch is retried for a server that comes later, not in a loop.
        wanted = {s.image_id for s in servers.values()}
        for image_id in set(self._fetch_failed) - wanted:
            del self._fetch_failed[image_id]

    def _servers(self) -> list[ServerSpec]:
        resp = self.conn.compute.get(
            f"/servers/detail?all_tenants=1&project_id={self.project_id}",
            microversion=SERVERS_MICROVERSION,
        )
        resp.raise_for_status()
        return [_spec(s, self.network) for s in resp.json()["servers"]]

    def _floating_ips(self) -> dict[str, list[str]]:
        """fixed IP -> floating IPs associated with it, for the test project."""
        resp = self.conn.network.get(f"/floatingips?project_id={self.project_id}")
        resp.raise_for_status()
        by_fixed: dict[str, list[str]] = {}
        for fip in resp.json()["floatingips"]:
            if fip.get("fixed_ip_address"):
                by_fixed.setdefault(fip["fixed_ip_address"], []).append(
                    fip["floating_ip_address"])
        return by_fixed

    def _public_key(self, spec: ServerSpec) -> list[str]:
        if not spec.key_name:
            return []
        # Read at every boot, never cached: a keypair deleted and made again under the same
        # name (`down`, then `up` of the same cluster) has a new key, as Nova would inject.
        resp = self.conn.compute.get(
            f"/os-keypairs/{spec.key_name}?user_id={spec.user_id}",
            microversion=KEYPAIR_MICROVERSION,
        )
        if resp.status_code == 404:
            log.warning("server %s: keypair %s not found", spec.server_id, spec.key_name)
            return []
        resp.raise_for_status()
        return [resp.json()["keypair"]["public_key"].strip()]

    def _kill(self, server_id: str, keep_disk: bool = False) -> None:
        try:
            hostlib.kill_host(server_id, keep_disk=keep_disk)
        except Exception:
            log.exception("%s the host of server %s failed",
                          "stopping" if keep_disk else "killing", server_id)
        finally:
            with self._lock:
                self._killing.discard(server_id)
                self._booted.discard(server_id)

    def close(self) -> None:
        self._fetcher.shutdown(wait=True, cancel_futures=True)
        self._killer.shutdown(wait=True)

    def tick(self) -> None:
        servers = {s.server_id: s for s in self._servers()}
        fips = self._floating_ips()
        records = hostlib.list_hosts()
        running = {h.server_id: h for h in records}

        for server_id, host in running.items():
            spec = servers.get(server_id)
            if spec is None or spec.status in GONE_STATES:
                keep_disk, what = False, f"gone ({spec.status if spec else 'deleted'})"
            elif spec.status in STOPPED_STATES and not host.stopped:
                keep_disk, what = True, spec.status
            else:
                continue
            with self._lock:
                if server_id in self._killing:
                    continue
                self._killing.add(server_id)
            log.info("server %s is %s: %s its host", server_id, what,
                     "stopping" if keep_disk else "removing")
            self._killer.submit(self._kill, server_id, keep_disk)
        with self._lock:
            for server_id in set(self._booted) - set(servers) - self._killing:
                self._booted.discard(server_id)
        self._refused &= set(servers)
        self._ticks += 1
        if self._ticks % PRUNE_EVERY == 1:
            try:
                self._prune(records, servers)
            except Exception:  # a cache sweep must not hold up boots and kills
                log.exception("sweeping the snapshot layer cache failed")

        for spec in servers.values():
            if spec.status != "ACTIVE" or spec.fixed_ip is None:
                continue
            wanted_fips = sorted(fips.get(spec.fixed_ip, []))
            host = running.get(spec.server_id)
            if host is not None and not host.stopped:
                if sorted(host.floating_ips) != wanted_fips:
                    log.info("host %s: floating IPs %s -> %s", spec.name,
                             host.floating_ips, wanted_fips)
                    hostlib.set_floating_ips(host, wanted_fips)
                continue
            if spec.server_id in self._booted or spec.server_id in self._killing:
                continue
            restart = host is not None and host.stopped
            lowers = self._restart_lowers(host) if restart else None
            lowers = lowers or self._lowers(spec)
            if lowers is None:
                continue
            log.info("server %s (%s) is ACTIVE at %s: %s its host from %s", spec.name,
                     spec.server_id, spec.fixed_ip,
                     "restarting" if restart else "booting",
                     ":".join(p.name for p in lowers))
            self._booted.add(spec.server_id)
            hostlib.boot_host(
                spec.name, spec.server_id, fixed_ip=spec.fixed_ip,
                user_data=spec.user_data, public_keys=self._public_key(spec),
                floating_ips=wanted_fips, rootfs=lowers, keep_disk=restart,
            )

    @staticmethod
    def _restart_lowers(host: hostlib.Host) -> list[Path] | None:
        """A stopped host starts again on the layers it had (kept in the cache while its
        record uses them, even if its image was deleted since, as a VM's disk outlives
        its image); None when they are not all there (a record of an older bed)."""
        lowers = [Path(p) for p in host.lowers]
        return lowers if lowers and all(p.is_dir() for p in lowers) else None

    def run(self, *, interval: float = 1.0, stop: list[bool] | None = None) -> None:
        stop = stop if stop is not None else [False]
        while not stop[0]:
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # one bad poll must not end the bed's hypervisor
                log.exception("reconcile failed; retrying next tick")
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


def _pid_file() -> Path:
    return hostlib.default_state_dir() / "hypervisor.pid"


def log_path() -> Path:
    return hostlib.default_state_dir() / "hypervisor.log"


def running_pid() -> int | None:
    return hostlib.recorded_pid(_pid_file())


def _serving_file() -> Path:
    return _pid_file().with_name("hypervisor.rootfs")


def _code_hash() -> str:
    """The hypervisor's own code: a process started from older code must not keep
    serving (it would stop hosts the old way, or not boot snapshots)."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in ("hypervisor.py", "hosts.py", "snapshots.py", "rootfs.py"):
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def start() -> int:
    """Start `run` in the background with a pid file; idempotent. A hypervisor serving
    another recipe's rootfs (the image changed since it started; the old tree is gone or
    going) is restarted: it could boot nothing; so is one started from older code."""
    wanted = f"{rootfs_path()} {_code_hash()}"
    pid = running_pid()
    if pid is not None:
        try:
            serving = " ".join(_serving_file().read_text().split())
        except OSError:
            serving = ""
        if serving == wanted:
            return pid
        log.info("hypervisor serves %s, not %s: restarting it", serving or "?", wanted)
        stop(kill_hosts=True)
    state = hostlib.default_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[3]
    with log_path().open("ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.testbed.hosts.hypervisor", "run"],
            cwd=repo, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _pid_file().write_text(f"{proc.pid} {hostlib._pid_start(proc.pid)}\n")
    _serving_file().write_text(wanted + "\n")
    return proc.pid


def stop(*, kill_hosts: bool = True) -> None:
    hostlib.stop_recorded(_pid_file())
    if kill_hosts:
        hostlib.kill_all()
        # No host boots from a snapshot layer any more; images deleted since are not
        # looked up one by one (the control plane may be down already).
        snapshots.remove_all()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed.hosts.hypervisor")
    parser.add_argument("action", choices=["run", "start", "stop", "status"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.action == "start":
        sys.stdout.write(f"hypervisor pid {start()}, log {log_path()}\n")
    elif args.action == "stop":
        stop()
    elif args.action == "status":
        pid = running_pid()
        sys.stdout.write(f"hypervisor: {f'pid {pid}' if pid else 'not running'}\n")
        for h in hostlib.list_hosts():
            state = "stopped" if h.stopped else "running" if h.alive() else "dead"
            sys.stdout.write(f"  {h.name} {h.server_id} {h.fixed_ip} "
                             f"{','.join(h.floating_ips) or '-'} {state}\n")
        sys.exit(0 if pid else 1)
    else:
        stopping = [False]

        def _on_term(signum: int, frame: object) -> None:
            stopping[0] = True

        signal.signal(signal.SIGTERM, _on_term)
        signal.signal(signal.SIGINT, _on_term)
        conn = bed.admin_connection()
        project_id = bed.project_id(conn)
        rootfs = rootfs_path()
        log.info("watching project %s; rootfs %s", project_id, rootfs)
        snapshots.remove_partials()
        hv = Hypervisor(conn, project_id=project_id, rootfs=rootfs)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                hv.run(stop=stopping)
        finally:
            hv.close()
        log.info("hypervisor stopped")


if __name__ == "__main__":
    main()
