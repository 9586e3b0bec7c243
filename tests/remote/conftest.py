"""Real OpenSSH servers for the SSH edge (provisioner/remote.py).

Each sshd here is Debian's /usr/sbin/sshd with its own host keys, config and
authorized_keys in a temporary directory, bound to a 127.0.0.x high port or inside a
network namespace created here, run as root in the foreground (-D -e) and stopped by its
pid. Everything started or created is stopped or removed at teardown, also on failure.

Without sshd (or root, or network namespaces) the tests skip saying why; under CI they
fail instead, so a broken runner cannot pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provisioner.hostkeys import HostKey
from tests.ci import in_ci

SSHD = Path("/usr/sbin/sshd")
# Debian's sshd refuses to start without its privilege separation directory; the packaged
# service creates it (RuntimeDirectory=sshd), a bare sshd does not.
PRIVSEP_DIR = Path("/run/sshd")


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"the SSH tests must run under CI, but {reason}", pytrace=False)
    pytest.skip(reason)


def _missing() -> str | None:
    if not SSHD.exists():
        return f"{SSHD} is missing (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is missing (apt-get install openssh-client)"
    if os.geteuid() != 0:
        return "sshd is run as root, and these tests are not"
    return None


@pytest.fixture(autouse=True, scope="session")
def _sshd_usable() -> Iterator[None]:
    reason = _missing()
    if reason:
        skip_or_fail(reason)
    created = not PRIVSEP_DIR.exists()
    if created:
        PRIVSEP_DIR.mkdir(mode=0o755)
    yield
    if created:
        with contextlib.suppress(OSError):  # left alone if something else now uses it
            PRIVSEP_DIR.rmdir()


def keygen(path: Path, key_type: str) -> HostKey:
    """A fresh key pair at `path` (+ .pub); its public half."""
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "root@test",
                    "-f", str(path)], check=True)
    key_type_field, b64, *_ = path.with_name(path.name + ".pub").read_text().split()
    return HostKey(key_type_field, b64)


@dataclass
class ClientKey:
    path: Path
    public: HostKey


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> ClientKey:
    directory = tmp_path_factory.mktemp("client")
    path = directory / "id_ed25519"
    return ClientKey(path, keygen(path, "ed25519"))


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    address: str
    port: int
    host_keys: list[HostKey]
    directory: Path
    process: subprocess.Popen
    netns: str | None = None

    @property
    def log(self) -> str:
        return (self.directory / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        # Per-connection sshd processes outlive the listener; they are ours too.
        children = _descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # the command name (field 2) may contain spaces; ppid follows its ")"
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


@dataclass
class SshdFactory:
    root: Path
    client_key: ClientKey
    started: list[Sshd] = field(default_factory=list)

    def start(self, address: str = "127.0.0.1", port: int | None = None, *,
              netns: str | None = None, forwarding: bool = False,
              key_types: tuple[str, ...] = ("ed25519", "ecdsa")) -> Sshd:
        port = port or free_port(address)
        directory = self.root / f"sshd-{len(self.started)}"
        directory.mkdir()
        keys = [keygen(directory / f"ssh_host_{t}_key", t) for t in key_types]
        (directory / "authorized_keys").write_text(
            f"{self.client_key.public.key_type} {self.client_key.public.base64} test\n")
        host_key_lines = "".join(f"HostKey {directory}/ssh_host_{t}_key\n" for t in key_types)
        (directory / "sshd_config").write_text(
            f"ListenAddress {address}:{port}\n"
            f"{host_key_lines}"
            f"AuthorizedKeysFile {directory}/authorized_keys\n"
            # the temp directory sits under /tmp (1777), which StrictModes rejects
            "StrictModes no\n"
            "UsePAM no\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
            f"AllowTcpForwarding {'yes' if forwarding else 'no'}\n"
            "PidFile none\n"
            "UseDNS no\n"
            "LogLevel VERBOSE\n"
        )
        command = [str(SSHD), "-D", "-e", "-f", str(directory / "sshd_config")]
        if netns:
            command = ["ip", "netns", "exec", netns, *command]  # ip execs sshd: same pid
        log = (directory / "sshd.log").open("wb")
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        sshd = Sshd(address, port, keys, directory, process, netns)
        self.started.append(sshd)
        deadline = time.monotonic() + 5
        while "Server listening on" not in sshd.log:
            if process.poll() is not None or time.monotonic() > deadline:
                sshd.stop()
                pytest.fail(f"sshd on {address}:{port} did not start:\n{sshd.log}",
                            pytrace=False)
            time.sleep(0.02)
        return sshd

    def stop_all(self) -> None:
        for sshd in reversed(self.started):
            sshd.stop()


@pytest.fixture
def sshd_factory(tmp_path: Path, client_key: ClientKey) -> Iterator[SshdFactory]:
    factory = SshdFactory(tmp_path, client_key)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def sshd(sshd_factory: SshdFactory) -> Sshd:
    return sshd_factory.start("127.0.0.2")


@dataclass
class JumpNet:
    """Two namespaces: the master's, reachable from here, and the worker's, reachable only
    from the master's (the host has no route to it), like a worker without a floating IP."""

    master_ns: str
    worker_ns: str
    master_address: str  # on the link between this host and the master namespace
    master_inner: str  # the master's end of the master-worker link
    worker_address: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _free_octet() -> int:
    used = "".join(subprocess.run(["ip", "-4", *what], capture_output=True, text=True).stdout
                   for what in (["-o", "addr"], ["route"]))
    for _ in range(50):
        octet = secrets.randbelow(250) + 1
        if f"198.18.{octet}." not in used and f"198.19.{octet}." not in used:
            return octet
    raise RuntimeError("no free 198.18/198.19 subnet for the test namespaces")


@pytest.fixture
def jump_net() -> Iterator[JumpNet]:
    if shutil.which("ip") is None:
        skip_or_fail("ip (iproute2) is missing")
    tag = secrets.token_hex(2)
    octet = _free_octet()
    # 198.18.0.0/15 is reserved for network benchmarks (RFC 2544): not routed anywhere real.
    net = JumpNet(f"sskt-m-{tag}", f"sskt-w-{tag}", f"198.18.{octet}.2",
                  f"198.19.{octet}.1", f"198.19.{octet}.2")
    host_if, master_if = f"sk{tag}h", f"sk{tag}m"
    inner_if, worker_if = f"sk{tag}i", f"sk{tag}w"
    undo: list[Callable[[], None]] = []
    try:
        try:
            _ip("netns", "add", net.master_ns)
        except subprocess.CalledProcessError as e:
            skip_or_fail(f"cannot create a network namespace: {e.stderr.decode().strip()}")
        undo.append(lambda: _ip("netns", "del", net.master_ns))
        _ip("netns", "add", net.worker_ns)
        undo.append(lambda: _ip("netns", "del", net.worker_ns))
        _ip("link", "add", host_if, "type", "veth", "peer", "name", master_if,
            "netns", net.master_ns)
        undo.append(lambda: _ip("link", "del", host_if))
        _ip("addr", "add", f"198.18.{octet}.1/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        # The host's default route would carry the worker's address off this machine; an
        # unreachable route keeps it here and makes the host fail to reach it, as it must.
        _ip("route", "add", "unreachable", f"198.19.{octet}.0/30")
        undo.append(lambda: _ip("route", "del", "unreachable", f"198.19.{octet}.0/30"))
        _ip("-n", net.master_ns, "addr", "add", f"{net.master_address}/30", "dev", master_if)
        _ip("-n", net.master_ns, "link", "set", master_if, "up")
        _ip("-n", net.master_ns, "link", "add", inner_if, "type", "veth", "peer", "name",
            worker_if, "netns", net.worker_ns)
        _ip("-n", net.master_ns, "addr", "add", f"{net.master_inner}/30", "dev", inner_if)
        _ip("-n", net.master_ns, "link", "set", inner_if, "up")
        _ip("-n", net.worker_ns, "addr", "add", f"{net.worker_address}/30", "dev", worker_if)
        _ip("-n", net.worker_ns, "link", "set", worker_if, "up")
        for ns in (net.master_ns, net.worker_ns):
            _ip("-n", ns, "link", "set", "lo", "up")
        yield net
    finally:
        for step in reversed(undo):
            # deleting a namespace also deletes the veth ends in it, and so their peers
            with contextlib.suppress(subprocess.CalledProcessError):
                step()
