"""The test bed's hypervisor: turns the test project's Nova servers into namespace hosts.

Nova's fake driver marks servers ACTIVE without booting anything. This process watches
Nova as admin (one server list per second, all projects filtered to the test project,
plus one floating IP list from Neutron), boots a host for every ACTIVE server with its
fixed IP, its user_data and its keypair's public key, from the rootfs its Glance image
names (property rootfs.IMAGE_PROPERTY, e.g. `stock-bookworm`; none: the pre-baked tree),
keeps the host's floating IPs in step with Neutron, and kills the host when the server
is gone.

    python -m tests.testbed.hosts.hypervisor run      # foreground (what up.sh starts)
    python -m tests.testbed.hosts.hypervisor start | stop | status
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.testbed import bed

from . import hosts as hostlib
from .rootfs import IMAGE_PROPERTY, rootfs_for, rootfs_path

log = logging.getLogger(__name__)

# 2.3 shows OS-EXT-SRV-ATTR:user_data to admins; 2.10 lets an admin read another
# user's keypair with ?user_id=.
SERVERS_MICROVERSION = "2.3"
KEYPAIR_MICROVERSION = "2.10"
GONE_STATES = {"DELETED", "SOFT_DELETED", "ERROR", "SHUTOFF", "SHELVED_OFFLOADED"}


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
        # Servers already booted once: a VM whose host died does not boot itself again.
        self._booted: set[str] = {h.server_id for h in hostlib.list_hosts()}
        # image id -> rootfs name from its properties; an image's properties do not change
        # under a server, and one Glance call per image is enough.
        self._image_rootfs: dict[str, str | None] = {}
        self._refused: set[str] = set()  # servers whose missing rootfs was logged

    def _rootfs_name(self, image_id: str | None) -> str | None:
        if not image_id:
            return None
        if image_id not in self._image_rootfs:
            resp = self.conn.image.get(f"/images/{image_id}")
            if resp.status_code == 404:
                # Deleted since the server was created: nothing names another tree.
                self._image_rootfs[image_id] = None
            else:
                resp.raise_for_status()
                # Glance v2 shows custom properties as top-level fields.
                self._image_rootfs[image_id] = resp.json().get(IMAGE_PROPERTY) or None
        return self._image_rootfs[image_id]

    def _rootfs(self, spec: ServerSpec) -> Path | None:
        """The tree to boot spec from, or None (logged once) if it is not built: booting
        it would fail anyway, and the server then never comes up, which the product sees."""
        name = self._rootfs_name(spec.image_id)
        try:
            path = rootfs_for(name) if name else self.rootfs
        except ValueError as exc:
            path, problem = None, str(exc)
        else:
            problem = f"rootfs {path} is not built (python -m tests.testbed.hosts.hostbed build)"
        if path is not None and (path / "etc/cloud/cloud.cfg").exists():
            return path
        if spec.server_id not in self._refused:
            self._refused.add(spec.server_id)
            log.error("server %s (%s), image %s: %s; not booting it", spec.name,
                      spec.server_id, spec.image_id, problem)
        return None

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

    def _kill(self, server_id: str) -> None:
        try:
            hostlib.kill_host(server_id)
        except Exception:
            log.exception("killing the host of server %s failed", server_id)
        finally:
            with self._lock:
                self._killing.discard(server_id)
                self._booted.discard(server_id)

    def close(self) -> None:
        self._killer.shutdown(wait=True)

    def tick(self) -> None:
        servers = {s.server_id: s for s in self._servers()}
        fips = self._floating_ips()
        running = {h.server_id: h for h in hostlib.list_hosts()}

        for server_id in running:
            spec = servers.get(server_id)
            if spec is None or spec.status in GONE_STATES:
                with self._lock:
                    if server_id in self._killing:
                        continue
                    self._killing.add(server_id)
                log.info("server %s is gone (%s): killing its host", server_id,
                         spec.status if spec else "deleted")
                self._killer.submit(self._kill, server_id)
        with self._lock:
            for server_id in set(self._booted) - set(servers) - self._killing:
                self._booted.discard(server_id)
        self._refused &= set(servers)

        for spec in servers.values():
            if spec.status != "ACTIVE" or spec.fixed_ip is None:
                continue
            wanted_fips = sorted(fips.get(spec.fixed_ip, []))
            host = running.get(spec.server_id)
            if host is not None:
                if sorted(host.floating_ips) != wanted_fips:
                    log.info("host %s: floating IPs %s -> %s", spec.name,
                             host.floating_ips, wanted_fips)
                    hostlib.set_floating_ips(host, wanted_fips)
                continue
            if spec.server_id in self._booted or spec.server_id in self._killing:
                continue
            rootfs = self._rootfs(spec)
            if rootfs is None:
                continue
            log.info("server %s (%s) is ACTIVE at %s: booting its host from %s", spec.name,
                     spec.server_id, spec.fixed_ip, rootfs.name)
            self._booted.add(spec.server_id)
            hostlib.boot_host(
                spec.name, spec.server_id, fixed_ip=spec.fixed_ip,
                user_data=spec.user_data, public_keys=self._public_key(spec),
                floating_ips=wanted_fips, rootfs=rootfs,
            )

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


def start() -> int:
    """Start `run` in the background with a pid file; idempotent. A hypervisor serving
    another recipe's rootfs (the image changed since it started; the old tree is gone or
    going) is restarted: it could boot nothing."""
    wanted = str(rootfs_path())
    pid = running_pid()
    if pid is not None:
        try:
            serving = _serving_file().read_text().strip()
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
            state = "running" if h.alive() else "dead"
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
        hv = Hypervisor(conn, project_id=project_id, rootfs=rootfs)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                hv.run(stop=stopping)
        finally:
            hv.close()
        log.info("hypervisor stopped")


if __name__ == "__main__":
    main()
