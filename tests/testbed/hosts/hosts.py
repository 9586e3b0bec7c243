"""Namespace hosts: what a Nova server would be if the fake driver booted anything.

Each host is a network namespace with one veth on the test bridge (its fixed IP, plus
its floating IPs as extra addresses), an overlay of the shared rootfs, and its own
mount, UTS and PID namespaces. Inside, a tiny PID 1 runs cloud-init's four stages in the
order systemd would (init-local, init, modules:config, modules:final) from a NoCloud
seed built out of the server's name, id, user_data and keypair, and starts sshd after
the init stage, as ssh.service would. Nothing of the sandbox's own identity (hostname,
mounts, addresses) is touched.

The root namespace owns the bridge with the gateway addresses of both test networks,
so it reaches every fixed IP and floating IP directly; hosts have no default route and
only ever talk to the bridge range.

A host booted with `init="systemd"` (on the systemd layer, rootfs.ensure_systemd_layer)
runs the real systemd as its PID 1 instead, in cgroups of its own with a cgroup namespace
rooted there, so limits such as MemoryMax= and CPUQuota= on its units are enforced.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .rootfs import rootfs_path

log = logging.getLogger(__name__)

BRIDGE = "sstkbr0"
# Root-side addresses: the gateways of the bed's private and public subnets.
BRIDGE_ADDRESSES = ("10.77.0.1/24", "10.78.0.1/24")
PRIVATE_PREFIX = 24
FLOATING_PREFIX = 24
# Cloud-init modules that touch disks: a namespace host has none of its own.
DISK_MODULES = {"growpart", "resizefs", "disk_setup", "mounts"}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
INITS = ("bed", "systemd")
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_ROOT = Path("/sys/fs/cgroup")

# PID 1 of a host: start the boot script, then reap whatever daemons leave behind
# (Spark's and sshd's children are re-parented to it), like init does.
INIT = """\
import os, subprocess, time
env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LANG": "C.UTF-8", "HOME": "/root"}
subprocess.Popen(["/bin/sh", "/usr/local/sbin/testbed-boot"], env=env)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(1)
"""

# The boot order of Debian's systemd units: cloud-init-local, cloud-init, then ssh
# (ssh.service is ordered after cloud-init.service, which generated its host keys),
# cloud-config, cloud-final.
BOOT = """\
exec >>/var/log/testbed-boot.log 2>&1
echo "boot: $(date -u +%FT%TZ)"
cloud-init init --local; echo "init-local: exit $?"
cloud-init init; echo "init: exit $?"
mkdir -p /run/sshd && chmod 0755 /run/sshd
/usr/sbin/sshd; echo "sshd: exit $?"
cloud-init modules --mode=config; echo "modules:config: exit $?"
cloud-init modules --mode=final; echo "modules:final: exit $?"
echo "booted: $(date -u +%FT%TZ)"
"""

# The host's serial console, recorded outside the host as a hypervisor records a VM's
# serial port: a pty whose slave is bound over the host's /dev/console (where cloud-init
# prints the SSH host key block) and whose master is drained into <host>/console.log,
# which the bed's Nova serves as the server's console output. Not a plain file bound
# there: cloud-init opens /dev/console with "w" and would truncate it at every message.
# Runs in the host's namespaces before the chroot and forks, so the boot goes on once the
# bind is in place; the drainer dies with the host's PID namespace.
CONSOLE = """\
import os, subprocess, sys
target, log = sys.argv[1], sys.argv[2]
master, slave = os.openpty()
subprocess.run(["mount", "--bind", os.ttyname(slave), target], check=True)
if os.fork():
    os._exit(0)
# The slave stays open here too: with no slave open, reading the master fails (EIO).
out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
while True:
    os.write(out, os.read(master, 65536))
"""

TESTBED_CLOUD_CFG = {
    "datasource_list": ["NoCloud"],
    # The veth is configured from outside; cloud-init must not rewrite it.
    "network": {"config": "disabled"},
}


class HostError(RuntimeError):
    """A host could not be booted or removed; the message names the host and the step."""


@dataclass
class Host:
    name: str
    server_id: str
    fixed_ip: str
    floating_ips: list[str] = field(default_factory=list)
    pid: int = 0
    pid_start: str = ""
    booted_at: float = 0.0
    state_dir: str = ""
    # The overlay's lower dirs, topmost first: snapshot layers, then the base tree.
    lowers: list[str] = field(default_factory=list)
    # Stopped (its server is SHUTOFF): no processes, no network, but the upper dir (the
    # server's disk) and this record stay, as a stopped VM keeps its disk.
    stopped: bool = False
    # PID 1: "bed" (INIT: cloud-init's stages by hand) or "systemd".
    init: str = "bed"
    # The cgroups made for a systemd host, one per hierarchy: only these are ever removed.
    cgroups: list[str] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return netns_name(self.server_id)

    @property
    def veth(self) -> str:
        return veth_name(self.server_id)

    @property
    def dir(self) -> Path:
        return Path(self.state_dir)

    @property
    def upper(self) -> Path:
        """The overlay's upper dir: everything the host wrote, readable from outside."""
        return self.dir / "upper"

    @property
    def console_log(self) -> Path:
        """What the host wrote to its /dev/console: the server's console output."""
        return self.dir / "console.log"

    def file(self, path: str) -> Path:
        """Where a file the host wrote (e.g. /var/log/cloud-init-output.log) lives."""
        return self.upper / path.lstrip("/")

    def alive(self) -> bool:
        return _pid_alive(self.pid, self.pid_start)


def netns_name(server_id: str) -> str:
    return f"sstk-{server_id[:8]}"


def veth_name(server_id: str) -> str:
    # Interface names are at most 15 characters.
    return f"sv{server_id[:8]}"


def default_state_dir() -> Path:
    """Where the host half of the bed keeps its state: inside the bed's state dir."""
    base = os.environ.get("SPARKSTACK_TESTBED_DIR", "/var/lib/sparkstack-testbed")
    return Path(base) / "hostbed"


def hosts_dir(state_dir: Path | None = None) -> Path:
    return (state_dir or default_state_dir()) / "hosts"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise HostError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _pid_start(pid: int) -> str:
    """Start time of a process in clock ticks: with the pid, it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int, start: str) -> bool:
    return pid > 0 and bool(start) and _pid_start(pid) == start


def recorded_pid(pid_file: Path) -> int | None:
    """The process a pid file records (pid + start time), if that very process still runs:
    a recycled pid is never taken for it."""
    try:
        pid_s, start = pid_file.read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid, start) else None


def stop_recorded(pid_file: Path) -> None:
    """End the process a pid file records: SIGTERM, up to 10 s to go, then SIGKILL; the pid
    file goes either way."""
    pid = recorded_pid(pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while recorded_pid(pid_file) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if recorded_pid(pid_file) is not None:
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


def _link_exists(name: str, netns: str | None = None) -> bool:
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", name]
    return _run(*cmd, check=False).returncode == 0


def ensure_bridge() -> None:
    """Create the test bridge with the subnets' gateway addresses; idempotent."""
    if not _link_exists(BRIDGE):
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    present = _run("ip", "-o", "addr", "show", "dev", BRIDGE).stdout
    for addr in BRIDGE_ADDRESSES:
        if f" {addr} " not in present:
            _run("ip", "addr", "add", addr, "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")


def remove_bridge() -> None:
    if _link_exists(BRIDGE):
        _run("ip", "link", "del", BRIDGE)


def _image_file(lowers: Sequence[Path], rel: str) -> Path:
    """The file `rel` as the stacked lower dirs show it: the topmost layer holding it wins
    (snapshot layers never hold the bed's cloud.cfg, see BED_WRITTEN, so this is the
    base tree's unless the guest itself edited it)."""
    for lower in lowers:
        path = lower / rel
        if path.is_file():
            return path
    return lowers[-1] / rel


def _write_cloud_cfg(lowers: Sequence[Path], upper: Path) -> None:
    """cloud.cfg of the image minus the disk modules, plus the NoCloud-only settings."""
    cfg = yaml.safe_load(_image_file(lowers, "etc/cloud/cloud.cfg").read_text())
    for key in ("cloud_init_modules", "cloud_config_modules", "cloud_final_modules"):
        cfg[key] = [
            m for m in cfg.get(key, [])
            if (m if isinstance(m, str) else m[0]) not in DISK_MODULES
        ]
    etc_cloud = upper / "etc/cloud"
    (etc_cloud / "cloud.cfg.d").mkdir(parents=True, exist_ok=True)
    (etc_cloud / "cloud.cfg").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (etc_cloud / "cloud.cfg.d/90-testbed.cfg").write_text(yaml.safe_dump(TESTBED_CLOUD_CFG))


def _write_seed(
    upper: Path, *, name: str, server_id: str, user_data: str | bytes, public_keys: list[str]
) -> None:
    """NoCloud seed: meta-data carries the id, the hostname and the keypair's keys."""
    seed = upper / "var/lib/cloud/seed/nocloud"
    seed.mkdir(parents=True, exist_ok=True)
    meta = {"instance-id": server_id, "local-hostname": name}
    if public_keys:
        meta["public-keys"] = list(public_keys)
    (seed / "meta-data").write_text(yaml.safe_dump(meta))
    # Bytes as the cloud delivers them: cloud-init itself unpacks gzip-compressed user_data.
    (seed / "user-data").write_bytes(
        user_data if isinstance(user_data, bytes) else user_data.encode())
    (seed / "vendor-data").write_text("")


# What _prepare_upper writes into every host's upper dir at each boot (relative to it):
# the bed's plumbing, not the guest's state. A snapshot leaves it out (the copy of this
# list in controlplane/console_driver.py must match): the next boot writes its own.
BED_WRITTEN = (
    "var/lib/cloud/seed/nocloud",
    "usr/local/sbin/testbed-init",
    "usr/local/sbin/testbed-boot",
    "etc/cloud/cloud.cfg",
    "etc/cloud/cloud.cfg.d/90-testbed.cfg",
)


def _prepare_upper(
    host: Host, *, lowers: Sequence[Path], user_data: str | bytes, public_keys: list[str]
) -> None:
    for sub in ("upper", "work", "root"):
        (host.dir / sub).mkdir(parents=True, exist_ok=True)
    _write_cloud_cfg(lowers, host.upper)
    _write_seed(host.upper, name=host.name, server_id=host.server_id,
                user_data=user_data, public_keys=public_keys)
    sbin = host.upper / "usr/local/sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    (sbin / "testbed-init").write_text(INIT)
    (sbin / "testbed-boot").write_text(BOOT)
    (host.upper / "etc/hostname").write_text(f"{host.name}\n")


def cgroup_hierarchies() -> list[tuple[str, list[str], Path]]:
    """Every cgroup hierarchy mounted under /sys/fs/cgroup, as (mount point relative to it,
    the `mount` arguments that mount it again, this process's cgroup in it)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, (fstype, _, options) = pre.split(), post.split()[:3]
        if fstype in ("cgroup", "cgroup2") and Path(fields[4]).is_relative_to(CGROUP_ROOT):
            mounts.append((fstype, set(options.split(",")), fields[3], Path(fields[4])))
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        wanted = set(controllers.split(",")) if controllers else set()
        # A v1 hierarchy is the mount with its controllers; "0::" is the cgroup2 one.
        match = next((m for m in mounts
                      if (m[0] == "cgroup2") == (not wanted) and wanted <= m[1]), None)
        if match is None:
            continue
        fstype, _, root, mount_point = match
        if fstype == "cgroup2":
            args = ["-t", "cgroup2", "cgroup2"]
        else:
            # A named hierarchy (name=systemd) has no controller: "none" says so.
            named = all(c.startswith("name=") for c in wanted)
            args = ["-t", "cgroup", "-o", ("none," if named else "") + controllers, "cgroup"]
        rel = os.path.relpath(path, root)
        if rel.startswith(".."):
            raise HostError(f"this process's cgroup {path} is outside {mount_point}")
        found.append((str(mount_point.relative_to(CGROUP_ROOT)), args, mount_point / rel))
    return found


def cgroup_name(server_id: str) -> str:
    return f"sparkstack-testbed-{server_id}"


def _create_cgroups(dirs: Sequence[Path]) -> None:
    for cg in dirs:
        cg.mkdir(exist_ok=True)
        if (cg / "cpuset.cpus").exists():
            # An empty cpuset takes no task: start with the parent's CPUs and memory nodes,
            # and let the cgroups systemd makes inside inherit them.
            for name in ("cpuset.cpus", "cpuset.mems"):
                (cg / name).write_text((cg.parent / name).read_text())
            (cg / "cgroup.clone_children").write_text("1")


def _cgroup_pids(dirs: Sequence[str]) -> set[int]:
    """Every process in these cgroups or below."""
    pids: set[int] = set()
    for cg in dirs:
        for procs in Path(cg).rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _remove_cgroups(server_id: str, dirs: Sequence[str], timeout: float) -> None:
    """Remove a host's cgroups and the ones its systemd made in them, deepest first."""
    deadline = time.monotonic() + timeout
    for cg in dirs:
        if Path(cg).name != cgroup_name(server_id):
            raise HostError(f"host {server_id}: {cg} is not one of its cgroups")
        for sub, _, _ in os.walk(cg, topdown=False):
            while True:
                try:
                    os.rmdir(sub)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY while the last of its processes are still exiting.
                    if time.monotonic() > deadline:
                        raise HostError(f"host {server_id}: cannot remove {sub}: {exc}") from exc
                    time.sleep(0.1)


def _systemd_lines(host: Host, r: Path) -> list[str]:
    """The end of a systemd host's mount script: a read-only /proc/sys, as systemd-nspawn
    gives its containers (the kernel's settings are the machine's, except the network
    namespace's own); then a cgroup namespace rooted in the host's cgroups, which the
    script joined first, with them mounted where systemd looks; then systemd."""
    cgroups = r / "sys/fs/cgroup"
    hierarchies = cgroup_hierarchies()
    inner = []
    if any(rel != "." for rel, _, _ in hierarchies):
        inner.append(f"mount -t tmpfs -o mode=0755 tmpfs {cgroups}")
    for rel, args, _ in hierarchies:
        inner.append(f"mkdir -p {cgroups / rel} && mount {' '.join(args)} {cgroups / rel}")
    # container=: systemd's container interface, so it skips what only a machine does.
    inner.append(f"exec chroot {r} /usr/bin/env -i container=other PATH={HOST_PATH}"
                 " /lib/systemd/systemd")
    return [
        f"mount --bind {r}/proc/sys {r}/proc/sys",
        f"mount -o remount,bind,ro {r}/proc/sys",
        f"mount --bind {r}/proc/sys/net {r}/proc/sys/net",
        f"mount -o remount,bind,rw {r}/proc/sys/net",
        # A cgroup mount shows the hierarchy from the mounting process's cgroup namespace.
        f"exec unshare --cgroup /bin/sh -ec {shlex.quote('; '.join(inner))}",
    ]


def _mount_script(host: Host, lowers: Sequence[Path]) -> str:
    """Runs as PID 1 of the host's new namespaces: build its root, then become init."""
    r = host.dir / "root"
    lowerdir = ":".join(str(p) for p in lowers)
    # A systemd host's PID 1 (this script: $$ is 1, as its PID namespace numbers it) and
    # all it starts join the host's cgroups first; the `unshare` outside stays out, as
    # systemd could not move a process it cannot see.
    join = [f"echo $$ > {cg}/cgroup.procs" for cg in host.cgroups]
    lines = [
        "set -e",
        *join,
        f"mount -t overlay overlay -o lowerdir={lowerdir},upperdir={host.upper},"
        f"workdir={host.dir / 'work'} {r}",
        f"mount -t proc proc {r}/proc",
        f"mount -t sysfs -o ro sysfs {r}/sys || true",
        f"mount -t tmpfs -o mode=0755,size=16m tmpfs {r}/dev",
    ]
    for dev in DEVICES:
        lines.append(f"touch {r}/dev/{dev} && mount --bind /dev/{dev} {r}/dev/{dev}")
    lines += [
        f"touch {r}/dev/console",
        f"{sys.executable} {host.dir / 'console.py'} {r}/dev/console {host.console_log}",
        f"mkdir -p {r}/dev/pts {r}/dev/shm",
        f"mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts {r}/dev/pts || true",
        f"ln -s pts/ptmx {r}/dev/ptmx",
        f"mount -t tmpfs -o mode=1777 tmpfs {r}/dev/shm",
        f"ln -s /proc/self/fd {r}/dev/fd",
        f"ln -s /proc/self/fd/0 {r}/dev/stdin",
        f"ln -s /proc/self/fd/1 {r}/dev/stdout",
        f"ln -s /proc/self/fd/2 {r}/dev/stderr",
        f"mount -t tmpfs -o mode=0755 tmpfs {r}/run",
        f"hostname {host.name}",
    ]
    if host.init == "systemd":
        lines += _systemd_lines(host, r)
    else:
        lines.append(f"exec chroot {r} /usr/bin/python3 /usr/local/sbin/testbed-init")
    return "\n".join(lines) + "\n"


def _setup_network(host: Host) -> None:
    ns, veth = host.netns, host.veth
    if _run("ip", "netns", "list").stdout.split().count(ns):
        _run("ip", "netns", "del", ns)
    if _link_exists(veth):
        _run("ip", "link", "del", veth)
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _run("ip", "link", "set", veth, "master", BRIDGE, "up")
    _run("ip", "-n", ns, "link", "set", "lo", "up")
    _run("ip", "-n", ns, "addr", "add", f"{host.fixed_ip}/{PRIVATE_PREFIX}", "dev", "eth0")
    _run("ip", "-n", ns, "link", "set", "eth0", "up")
    # A re-created veth has a new MAC: stale neighbour entries would black-hole SSH.
    _run("ip", "neigh", "flush", "to", host.fixed_ip, check=False)
    for fip in host.floating_ips:
        _add_floating_ip(host, fip)


def _add_floating_ip(host: Host, fip: str) -> None:
    # A second address on eth0 in the public range: the root namespace (10.78.0.1 on the
    # bridge) ARPs for it and the host answers, and replies leave by the connected route.
    ipaddress.ip_address(fip)
    _run("ip", "-n", host.netns, "addr", "replace", f"{fip}/{FLOATING_PREFIX}", "dev", "eth0")
    _run("ip", "neigh", "flush", "to", fip, check=False)


def _remove_floating_ip(host: Host, fip: str) -> None:
    _run("ip", "-n", host.netns, "addr", "del", f"{fip}/{FLOATING_PREFIX}", "dev", "eth0",
         check=False)
    _run("ip", "neigh", "flush", "to", fip, check=False)


def _save(host: Host) -> None:
    tmp = host.dir / "host.json.tmp"
    tmp.write_text(json.dumps(asdict(host), indent=2))
    os.replace(tmp, host.dir / "host.json")


def boot_host(
    name: str,
    server_id: str,
    *,
    fixed_ip: str,
    user_data: str | bytes,
    public_keys: list[str],
    floating_ips: list[str] | None = None,
    rootfs: Path | Sequence[Path] | None = None,
    state_dir: Path | None = None,
    keep_disk: bool = False,
    init: str = "bed",
) -> Host:
    """Boot a host for a server: returns once its PID 1 runs (cloud-init goes on inside).

    An earlier host of the same server is killed first, so a retry starts clean; with
    `keep_disk` its upper dir stays (a stopped server started again boots its own disk).
    `rootfs` is the tree to boot, or the overlay's lower dirs topmost first (snapshot
    layers, then the base tree); it defaults to the cached tree of the current image
    recipe, which must exist.

    `init="systemd"` boots systemd as PID 1: `rootfs` must then hold it, e.g.
    `[rootfs.ensure_systemd_layer(base), base]`; wait for it with `wait_systemd_ready`.
    """
    ipaddress.ip_address(fixed_ip)
    if init not in INITS:
        raise HostError(f"host {server_id}: unknown init {init!r} (known: {', '.join(INITS)})")
    if rootfs is None:
        rootfs = rootfs_path()
    lowers = [rootfs] if isinstance(rootfs, Path) else [Path(p) for p in rootfs]
    if not lowers:
        raise HostError(f"host {server_id}: no lower dirs to boot from")
    base = lowers[-1]
    if not (base / "etc/cloud/cloud.cfg").exists():
        raise HostError(f"no rootfs at {base}: run `python -m tests.testbed.hosts.rootfs`")
    for layer in lowers[:-1]:
        if not layer.is_dir():
            raise HostError(f"host {server_id}: layer {layer} does not exist")
    if init == "systemd" and not any((p / "usr/lib/systemd/systemd").exists() for p in lowers):
        raise HostError(f"host {server_id}: no systemd in {lowers}: boot it on "
                        "rootfs.ensure_systemd_layer(base)")
    ensure_bridge()
    kill_host(server_id, state_dir=state_dir, keep_disk=keep_disk)
    host = Host(name=name, server_id=server_id, fixed_ip=fixed_ip,
                floating_ips=list(floating_ips or []),
                state_dir=str(hosts_dir(state_dir) / server_id),
                lowers=[str(p) for p in lowers], init=init)
    _prepare_upper(host, lowers=lowers, user_data=user_data, public_keys=public_keys)
    _setup_network(host)
    (host.dir / "console.py").write_text(CONSOLE)
    enter_netns = ["ip", "netns", "exec", host.netns]
    namespaces = ["--mount", "--uts", "--pid"]
    if init == "systemd":
        # nsenter, not `ip netns exec`, which mounts a fresh /sys without the cgroup
        # hierarchies the mount script joins.
        enter_netns = ["nsenter", f"--net=/run/netns/{host.netns}"]
        # Without cgroups of its own (and a cgroup namespace rooted there, see
        # _systemd_lines), systemd would make its slices at the machine's cgroup roots.
        # IPC too: systemd-logind removes the IPC objects of users who log out.
        namespaces.append("--ipc")
        dirs = [cg / cgroup_name(server_id) for _, _, cg in cgroup_hierarchies()]
        host.cgroups = [str(cg) for cg in dirs]
        _save(host)  # the record names the cgroups before they exist
        _create_cgroups(dirs)
    script = host.dir / "mount.sh"
    script.write_text(_mount_script(host, lowers))
    # The mount script's own output lands in the console too, like early boot messages.
    try:
        with host.console_log.open("ab") as console:
            # --kill-child: if this unshare is SIGKILLed, its child (the host's PID 1) gets
            # SIGKILL too, which ends every process in the PID namespace.
            proc = subprocess.Popen(
                [*enter_netns, "unshare", *namespaces,
                 "--fork", "--kill-child", "--propagation", "private", "/bin/sh", str(script)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except BaseException:
        kill_host(server_id, state_dir=state_dir, keep_disk=keep_disk)
        raise
    host.pid, host.pid_start, host.booted_at = proc.pid, _pid_start(proc.pid), time.time()
    _save(host)
    log.info("host %s (%s) booting at %s, pid %d", name, server_id, fixed_ip, proc.pid)
    return host


def set_floating_ips(host: Host, floating_ips: list[str]) -> Host:
    """Attach and detach addresses so the host has exactly these floating IPs."""
    for fip in set(host.floating_ips) - set(floating_ips):
        _remove_floating_ip(host, fip)
    for fip in set(floating_ips) - set(host.floating_ips):
        _add_floating_ip(host, fip)
    host.floating_ips = sorted(floating_ips)
    _save(host)
    return host


def init_pid(host: Host) -> int | None:
    """The host's PID 1 as this machine numbers it, once it runs in the host's root: the
    descendant of the recorded `unshare` that is pid 1 of its own PID namespace."""
    todo = [host.pid]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines()
                      if line.startswith("NSpid:")), [])
        if pid != host.pid and nspid[-1:] == ["1"]:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/root") != "/":
                    return pid
            return None
        todo.extend(int(c) for c in children)
    return None


def enter_argv(host: Host, *argv: str) -> list[str]:
    """The command line that runs `argv` as root in the host's namespaces, cgroups and
    root, with a clean environment (what a root login on the VM would run)."""
    pid = init_pid(host)
    if pid is None:
        raise HostError(f"host {host.server_id}: no PID 1 in its root")
    ns = ["-m", "-u", "-n", "-p"] + (["-i", "-C"] if host.init == "systemd" else [])
    cmd = ["nsenter", "-t", str(pid), *ns, "-r", "-w", "--", "/usr/bin/env", "-i",
           f"PATH={HOST_PATH}", "LANG=C.UTF-8", "HOME=/root", *argv]
    if host.cgroups:
        # Into the host's cgroups first, as a login on it would be: in the machine's own,
        # it would be out of the host's sight and reach (and kill_host's).
        join = "".join(f"echo $$ > {shlex.quote(cg)}/cgroup.procs; " for cg in host.cgroups)
        cmd = ["/bin/sh", "-ec", join + 'exec "$@"', "sh", *cmd]
    return cmd


def enter(host: Host, *argv: str, timeout: float = 60.0, input: bytes | None = None
          ) -> subprocess.CompletedProcess:
    """`enter_argv` run to its end; stdout and stderr come back as bytes."""
    return subprocess.run(enter_argv(host, *argv), input=input, capture_output=True,
                          timeout=timeout, check=False)


def wait_systemd_ready(host: Host, timeout: float = 60.0) -> str:
    """Wait until the systemd of a host booted with `init="systemd"` has finished booting
    (`systemctl is-system-running --wait`); returns "running", or "degraded" if a unit
    failed. Raises HostError naming the failed units otherwise, or if PID 1 is not in the
    host's own cgroups."""
    deadline = time.monotonic() + timeout
    state = "not started"
    while time.monotonic() < deadline and host.alive():
        if init_pid(host) is None:
            time.sleep(0.05)
            continue
        try:
            state = enter(host, "systemctl", "is-system-running", "--wait",
                          timeout=max(0.1, deadline - time.monotonic())).stdout.decode().strip()
        except subprocess.TimeoutExpired:
            state = "still starting"
            break
        # Nothing (or "offline") until systemd listens on its socket.
        if state not in ("", "offline"):
            break
        time.sleep(0.05)
    pid = init_pid(host)
    if pid is None or not host.alive():
        raise HostError(f"host {host.server_id}: PID 1 is gone; see {host.console_log}")
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if cgroup_name(host.server_id) not in line.split(":", 2)[2].split("/"):
            raise HostError(f"host {host.server_id}: PID 1 is in {line}, not in its cgroups")
    if state in ("running", "degraded"):
        return state
    failed = enter(host, "systemctl", "list-units", "--failed", "--plain", "--no-legend",
                   timeout=10).stdout.decode().strip()
    raise HostError(f"host {host.server_id}: systemd is {state!r} after {timeout:.0f} s; "
                    f"failed units: {failed or 'none'}; see {host.console_log}")


def _netns_pids(netns: str) -> list[int]:
    proc = _run("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def _load(path: Path) -> Host | None:
    try:
        return Host(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def get_host(server_id: str, *, state_dir: Path | None = None) -> Host | None:
    return _load(hosts_dir(state_dir) / server_id / "host.json")


def list_hosts(*, state_dir: Path | None = None) -> list[Host]:
    """Every host with a record, booted, dead or stopped (`Host.alive()`, `Host.stopped`
    tell which)."""
    root = hosts_dir(state_dir)
    if not root.is_dir():
        return []
    found = (_load(p) for p in sorted(root.glob("*/host.json")))
    return [h for h in found if h is not None]


def free_ip(candidates: Sequence[str]) -> str:
    """The first of `candidates` no host on this machine holds: any host the bed's own
    state dir records (a stopped one keeps its address), and any live host of the state
    dirs tests keep beside it."""
    taken = {h.fixed_ip for h in list_hosts()}
    for d in default_state_dir().parent.iterdir():
        if (d / "hosts").is_dir():
            taken |= {h.fixed_ip for h in list_hosts(state_dir=d) if h.alive()}
    free = [ip for ip in candidates if ip not in taken]
    if not free:
        raise HostError(f"every candidate address is taken: {', '.join(candidates)}")
    return free[0]


def kill_host(server_id: str, *, state_dir: Path | None = None, timeout: float = 15.0,
              keep_disk: bool = False) -> bool:
    """Kill a host's processes, remove its network and overlay; True if there was one.

    SIGKILL, because `unshare --fork` ignores SIGTERM. Every process still in the host's
    network namespace is killed as well: the namespace is ours, so are they.
    With `keep_disk` (its server was stopped) the state dir stays, upper dir included,
    and the record says `stopped`; otherwise the whole dir goes.
    """
    dir_ = hosts_dir(state_dir) / server_id
    host = _load(dir_ / "host.json")
    if host is None and not dir_.exists():
        return False
    ns, veth = netns_name(server_id), veth_name(server_id)
    if host is not None and host.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(host.pid, signal.SIGKILL)
    cgroups = host.cgroups if host is not None else []
    deadline = time.monotonic() + timeout
    # A systemd host's units may have network namespaces of their own: its cgroups hold
    # every one of its processes.
    while pids := set(_netns_pids(ns)) | _cgroup_pids(cgroups):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HostError(f"host {server_id}: processes {sorted(pids)} survive SIGKILL")
        time.sleep(0.1)
    _remove_cgroups(server_id, cgroups, max(1.0, deadline - time.monotonic()))
    root = str(dir_ / "root")
    # The overlay lives in the host's own mount namespace and dies with it; this only
    # catches a mount leaked into the root namespace by hand.
    for line in reversed(Path("/proc/mounts").read_text().splitlines()):
        target = line.split()[1]
        if target == root or target.startswith(root + "/"):
            _run("umount", "-l", target, check=False)
    if _link_exists(veth):
        _run("ip", "link", "del", veth)
    if ns in _run("ip", "netns", "list").stdout.split():
        _run("ip", "netns", "del", ns)
    if host is not None:
        _run("ip", "neigh", "flush", "to", host.fixed_ip, check=False)
        for fip in host.floating_ips:
            _run("ip", "neigh", "flush", "to", fip, check=False)
    if keep_disk:
        if host is not None:
            host.pid, host.pid_start, host.stopped, host.cgroups = 0, "", True, []
            _save(host)
        log.info("host %s stopped; its disk %s stays", server_id, dir_ / "upper")
        return True
    shutil.rmtree(dir_, ignore_errors=True)
    log.info("host %s removed", server_id)
    return True


def stop_host(server_id: str, *, state_dir: Path | None = None, timeout: float = 15.0) -> bool:
    """What stopping a VM does: processes and network go, the disk (upper dir) stays."""
    return kill_host(server_id, state_dir=state_dir, timeout=timeout, keep_disk=True)


def kill_all(*, state_dir: Path | None = None) -> list[str]:
    """Remove every host (the test bed's shutdown); returns the server ids."""
    root = hosts_dir(state_dir)
    ids = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for server_id in ids:
        kill_host(server_id, state_dir=state_dir)
    return ids
