"""A server's console output through the real Nova API is its host's real console.

On a real cloud a client learns a new server's SSH host keys from the block cloud-init
prints to the serial console, read with `os-getConsoleOutput`. The bed's compute driver
serves the console of the namespace host booted for the server, so that path is tested
end to end: the key in the console must be the key sshd on the host really uses.
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.testbed.hosts import hosts

from .conftest import create_server, host_log_tail, wait_for

pytestmark = [pytest.mark.hosts, pytest.mark.cloud, pytest.mark.slow]
log = logging.getLogger(__name__)

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
# What nova.virt.fake.FakeDriver answers for every server.
CANNED = "FAKE CONSOLE OUTPUT"
USER_DATA = """\
#cloud-config
runcmd:
  - [sh, -c, "echo console test > /var/tmp/e2e-console"]
"""


def _console(conn, server_id: str) -> str:
    output = conn.compute.get_server_console_output(server_id)["output"]
    if CANNED in output:
        pytest.fail("the console output is FakeDriver's canned text: nova-compute does not "
                    f"run the bed's console driver\n{output}", pytrace=False)
    return output


def _host_key_block(output: str) -> list[str] | None:
    """The lines between cloud-init's markers, once the whole block is there."""
    if BEGIN not in output or END not in output.split(BEGIN, 1)[1]:
        return None
    block = output.split(BEGIN, 1)[1].split(END, 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_console_output_carries_the_hosts_real_ssh_host_keys(hostbed, clean_project, keypair):
    conn = clean_project.user()
    key_name, _ = keypair
    server = create_server(conn, name="e2e-console", user_data=USER_DATA, key_name=key_name)
    try:
        conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
        active = time.monotonic()
        # The host may not have booted yet: then the console is empty, as a real cloud's
        # is while a VM's console log does not exist yet; never the canned text.
        log.info("console right after ACTIVE: %d characters", len(_console(conn, server.id)))

        host: hosts.Host | None = None

        def block() -> list[str] | None:
            nonlocal host
            host = host or hosts.get_host(server.id)
            return _host_key_block(_console(conn, server.id))

        keys = wait_for(block, timeout=120, interval=0.5, what="the host key block in the "
                        "server's console output",
                        on_timeout=lambda: f"console:\n{_console(conn, server.id)}\n"
                        + host_log_tail(host))
        seconds = time.monotonic() - active
        hostbed.timings["server ACTIVE -> host key block in console output"] = seconds
        log.info("server ACTIVE -> host key block in the console output: %.1f s", seconds)

        host = hosts.get_host(server.id)
        assert host is not None
        real = host.file("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        shown = [line.split()[:2] for line in keys if line.startswith("ssh-ed25519 ")]
        assert shown == [real], f"console block {keys} does not carry the host's key {real}"
        # The block came through the host's console device, and the API's tail works on it.
        assert BEGIN in host.console_log.read_text(errors="replace")
        tail = conn.compute.get_server_console_output(server.id, length=200)["output"]
        assert _host_key_block(tail) == keys
    finally:
        conn.compute.delete_server(server.id)
        conn.compute.wait_for_delete(server, wait=60, interval=0.5)
        wait_for(lambda: hosts.get_host(server.id) is None, timeout=120,
                 what="the host of the deleted server to go away")
