"""Fixtures for end-to-end tests: Nova servers that boot as namespace hosts.

`hostbed` (session) brings up the host half of the test bed on top of the OpenStack
half (`testbed`): rootfs (built or reused), Spark mirror, bridge, hypervisor. What it
started it stops at the end, and no host outlives the session.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest

from tests.testbed import bed
from tests.testbed.fixtures import bed_required, cannot_run_reason, clean_project, testbed
from tests.testbed.hosts import hostbed as hostbed_mod
from tests.testbed.hosts import hosts
from tests.waiting import wait_until

__all__ = ["clean_project", "testbed"]


def wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll until `condition()` is truthy and return it; fail the test naming `what`."""
    return wait_until(condition, timeout=timeout, what=what, interval=interval,
                      on_timeout=on_timeout)


@dataclass
class HostBed:
    timings: dict[str, float]

    def host(self, server_id: str) -> hosts.Host | None:
        return hosts.get_host(server_id)


@pytest.fixture(scope="session")
def hostbed(testbed) -> Iterator[HostBed]:
    reason = cannot_run_reason() or (None if Path("/usr/sbin/debootstrap").exists()
                                     else "debootstrap is not installed")
    if reason:
        if bed_required():
            pytest.fail(f"host tests are required here but {reason}", pytrace=False)
        pytest.skip(reason)
    was_up = hostbed_mod.is_up()
    timings = hostbed_mod.up()
    try:
        yield HostBed(timings=timings)
    finally:
        if was_up:
            # Someone else's bed: leave it running, but take our hosts with us (the
            # servers were deleted by then; the hypervisor removes their hosts).
            hosts.kill_all()
        else:
            hostbed_mod.down()


def host_key(host: hosts.Host) -> paramiko.PKey:
    """The host's ed25519 key, read out of band from its overlay (what a console log
    would print on a real cloud), so SSH can pin it instead of trusting on first use."""
    path = host.file("/etc/ssh/ssh_host_ed25519_key.pub")
    key_type, blob = path.read_text().split()[:2]
    return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))


def ssh_ready(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def connect(host: hosts.Host, *, address: str, key: paramiko.PKey,
            user: str = "debian") -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.get_host_keys().add(address, "ssh-ed25519", host_key(host))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(address, username=user, pkey=key, timeout=10, allow_agent=False,
                   look_for_keys=False)
    return client


def run(client: paramiko.SSHClient, command: str, *, timeout: float = 120) -> tuple[int, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode() + stderr.read().decode()
    return stdout.channel.recv_exit_status(), out


@pytest.fixture
def keypair(clean_project) -> Iterator[tuple[str, paramiko.PKey]]:
    """A Nova keypair of the test user with its private key, deleted afterwards."""
    key = paramiko.RSAKey.generate(2048)
    conn = clean_project.user()
    name = f"e2e-{int(time.time() * 1000)}"
    conn.compute.create_keypair(name=name, public_key=f"{key.get_name()} {key.get_base64()}")
    yield name, key
    conn.compute.delete_keypair(name, ignore_missing=True)


def create_server(conn: Any, *, name: str, user_data: str, key_name: str,
                  flavor: str = "m1.small", image: str = bed.IMAGE["name"]) -> Any:
    image = conn.image.find_image(image, ignore_missing=False)
    flavor_ = conn.compute.find_flavor(flavor, ignore_missing=False)
    network = conn.network.find_network(bed.PRIVATE_NET["name"], ignore_missing=False)
    return conn.compute.create_server(
        name=name, image_id=image.id, flavor_id=flavor_.id,
        networks=[{"uuid": network.id}], key_name=key_name,
        # The compute API takes user_data base64-encoded.
        user_data=base64.b64encode(user_data.encode()).decode(),
    )


def host_log_tail(host: hosts.Host | None, path: str = "/var/log/cloud-init-output.log",
                  lines: int = 40) -> str:
    if host is None:
        return "(no host)"
    try:
        text = host.file(path).read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc})"
    return f"--- {host.name}:{path} ---\n" + "\n".join(text.splitlines()[-lines:])


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The hub tests' shared host (tests/e2e/test_hub.py) goes once no next test uses it."""
    uses = "hub_host" in getattr(item, "fixturenames", ())
    if uses and (nextitem is None or "hub_host" not in getattr(nextitem, "fixturenames", ())):
        from .test_hub import release_hub_host

        release_hub_host()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from .test_hub import release_hub_host

    release_hub_host()
