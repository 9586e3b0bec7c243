"""Nova servers become hosts that really boot: cloud-init, sshd, and the Spark templates.

Each test creates servers through openstacksdk as the test user, exactly as sparkstack
does; the bed's hypervisor boots a namespace host for each, and the test then talks to
the host as a user would (SSH with a pinned host key, HTTP to the Spark master).
"""

from __future__ import annotations

import base64
import json
import logging
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from provisioner.inventory import load_inventory
from provisioner.render import FAILED_MARKER, READY_MARKER, render_cloud_init
from provisioner.workflows.spark_auth import DEFAULTS, with_auth
from tests.testbed import bed
from tests.testbed.hosts import hosts, mirror

from .conftest import (
    connect,
    create_server,
    host_log_tail,
    run,
    ssh_ready,
    wait_for,
)

pytestmark = [pytest.mark.hosts, pytest.mark.cloud, pytest.mark.slow]
log = logging.getLogger(__name__)

INVENTORY = Path(__file__).resolve().parents[1] / "testbed" / "inventory.testbed.toml"
HELLO = """\
#cloud-config
write_files:
  - path: /etc/e2e-hello
    content: "hello from write_files\\n"
runcmd:
  - [sh, -c, "id -un > /var/tmp/e2e-runcmd"]
"""


def _fixed_ip(conn, server_id: str) -> str:
    server = conn.compute.get_server(server_id)
    return next(a["addr"] for a in server.addresses[bed.PRIVATE_NET["name"]]
                if a.get("OS-EXT-IPS:type", "fixed") == "fixed")


def _booted_host(server_id: str) -> hosts.Host | None:
    host = hosts.get_host(server_id)
    return host if host is not None and host.alive() else None


def _host_key_written(host: hosts.Host) -> bool:
    return host.file("/etc/ssh/ssh_host_ed25519_key.pub").exists()


def test_server_becomes_a_host_and_goes_away_with_it(hostbed, clean_project, keypair):
    conn = clean_project.user()
    key_name, key = keypair
    start = time.monotonic()
    server = create_server(conn, name="e2e-hello", user_data=HELLO, key_name=key_name)
    conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
    active = time.monotonic()
    ip = _fixed_ip(conn, server.id)

    host = wait_for(lambda: _booted_host(server.id), timeout=90, what="the server's host")
    assert host.fixed_ip == ip and host.name == "e2e-hello"
    wait_for(lambda: _host_key_written(host) and ssh_ready(ip), timeout=60,
             what=f"sshd on {ip}", on_timeout=lambda: host_log_tail(host))
    client = connect(host, address=ip, key=key)
    ssh_seconds = time.monotonic() - start
    hostbed.timings["server create -> host SSH-ready"] = ssh_seconds
    log.info("server create -> SSH login: %.1f s (ACTIVE after %.1f s, host SSH-ready "
             "%.1f s later)", ssh_seconds, active - start, time.monotonic() - active)
    try:
        rc, out = run(client, "cloud-init status --wait")
        assert rc == 0 and "status: done" in out, out + host_log_tail(host)
        rc, out = run(client, "cat /etc/e2e-hello /var/tmp/e2e-runcmd; hostname")
        assert rc == 0, out
        assert out.split("\n") == ["hello from write_files", "root", "e2e-hello", ""]
    finally:
        client.close()
    assert socket.gethostname() != "e2e-hello", "the host renamed the machine it runs on"

    # The floating IP reaches the host from here, and leaves with its disassociation.
    public = conn.network.find_network(bed.PUBLIC_NET["name"], ignore_missing=False)
    port = next(iter(conn.network.ports(device_id=server.id)))
    fip = conn.network.create_ip(floating_network_id=public.id, port_id=port.id)
    try:
        address = fip.floating_ip_address
        wait_for(lambda: ssh_ready(address), timeout=30, what=f"SSH on floating IP {address}")
        client = connect(host, address=address, key=key)
        try:
            assert run(client, "hostname")[1].strip() == "e2e-hello"
        finally:
            client.close()
    finally:
        conn.network.delete_ip(fip)
    wait_for(lambda: not ssh_ready(address), timeout=30,
             what=f"floating IP {address} to leave the host")

    conn.compute.delete_server(server.id)
    conn.compute.wait_for_delete(server, wait=60, interval=0.5)
    # Killing a host waits for the kernel to reap its processes: slow on a loaded machine.
    wait_for(lambda: hosts.get_host(server.id) is None, timeout=120,
             what="the host of the deleted server to go away")
    assert hosts.netns_name(server.id) not in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not ssh_ready(ip)


def _marker(host: hosts.Host) -> str | None:
    if not host.dir.exists():
        # Not a timeout: say what happened (another test's cleanup deleting the server).
        pytest.fail(f"host {host.name} vanished: its server was deleted outside this test",
                    pytrace=False)
    if host.file(READY_MARKER).exists():
        return "ready"
    if host.file(FAILED_MARKER).exists():
        return "failed"
    return None


def _master_json(ip: str) -> dict:
    with urllib.request.urlopen(f"http://{ip}:8080/json/", timeout=5) as resp:
        return json.load(resp)


def _alive_workers(ip: str) -> list[dict]:
    try:
        data = _master_json(ip)
    except OSError:
        return []
    return [w for w in data.get("workers", []) if w.get("state") == "ALIVE"]


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=2):
            return True
    except OSError:
        return False


def _cluster_servers(conn, *, inv, key_name: str, workers: int, servers: list,
                     ports: list) -> str:
    """Master port first (its IP goes into the workers' user_data), then all servers at
    once, as `sparkstack up` does. What is created is appended to servers and ports at
    once, so the caller deletes it even when a later create fails."""
    network = conn.network.find_network(bed.PRIVATE_NET["name"], ignore_missing=False)
    port = conn.network.create_port(network_id=network.id, name="e2e-master-port")
    ports.append(port)
    master_ip = port.fixed_ips[0]["ip_address"]
    image = conn.image.find_image(bed.IMAGE["name"], ignore_missing=False)
    flavor = conn.compute.find_flavor("m1.small", ignore_missing=False)
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    servers.append(conn.compute.create_server(
        name="e2e-master", image_id=image.id, flavor_id=flavor.id, key_name=key_name,
        networks=[{"port": port.id}],
        user_data=b64(render_cloud_init(inv, role="master", master_ip=master_ip))))
    worker_data = b64(render_cloud_init(inv, role="worker", master_ip=master_ip))
    for i in range(workers):
        servers.append(conn.compute.create_server(
            name=f"e2e-worker-{i + 1}", image_id=image.id, flavor_id=flavor.id,
            key_name=key_name, networks=[{"uuid": network.id}], user_data=worker_data))
    return master_ip


def _delete_all(conn, servers: list, ports: list) -> None:
    for server in servers:
        conn.compute.delete_server(server.id)
    for server in servers:
        conn.compute.wait_for_delete(server, wait=60, interval=0.5)
        wait_for(lambda s=server: hosts.get_host(s.id) is None, timeout=120,
                 what=f"host of {server.name} to go away")
    for port in ports:
        conn.network.delete_port(port.id)


def test_spark_templates_boot_a_cluster(hostbed, clean_project, keypair):
    conn = clean_project.user()
    key_name, key = keypair
    inv = load_inventory(INVENTORY)
    start = time.monotonic()
    servers: list = []
    ports: list = []
    try:
        master_ip = _cluster_servers(conn, inv=inv, key_name=key_name, workers=2,
                                     servers=servers, ports=ports)
        for server in servers:
            conn.compute.wait_for_server(server, status="ACTIVE", wait=120, interval=0.5)
        active = time.monotonic()
        nodes = [wait_for(lambda s=s: _booted_host(s.id), timeout=60, what=f"host {s.name}")
                 for s in servers]
        master = nodes[0]
        assert master.fixed_ip == master_ip
        # Booted, the daemons wait for the cluster's secret (the SSH stage's job in `up`):
        # here it is written by hand, master first, as the SSH stage does.
        for node, role in zip(nodes, ["master", "worker", "worker"], strict=True):
            wait_for(lambda n=node: _marker(n) in ("ready", "failed"), timeout=300,
                     what=f"{node.name} booted", on_timeout=lambda n=node: host_log_tail(n))
            assert "spark=waiting-for-secret" in node.file(READY_MARKER).read_text()
            _give_secret(connect(node, address=node.fixed_ip, key=key), role)

        def all_registered() -> bool:
            failed = [n for n in nodes if _marker(n) == "failed"]
            if failed:
                pytest.fail("node failed:\n" + "\n".join(host_log_tail(n) for n in failed),
                            pytrace=False)
            return len(_alive_workers(master_ip)) == 2

        wait_for(all_registered, timeout=300, interval=0.5, what="2 ALIVE Spark workers",
                 on_timeout=lambda: "\n".join(host_log_tail(n) for n in nodes))
        registered = time.monotonic() - start
        hostbed.timings["server create -> 2 Spark workers ALIVE"] = registered
        log.info("servers created -> 2 workers ALIVE: %.1f s (all ACTIVE after %.1f s)",
                 registered, active - start)

        data = _master_json(master_ip)
        assert data["status"] == "ALIVE"
        assert sorted(w["host"] for w in data["workers"] if w["state"] == "ALIVE") == \
            sorted(n.fixed_ip for n in nodes[1:])
        # The unauthenticated REST submission server is off.
        assert not _port_open(master_ip, 6066)

        for node in nodes:
            wait_for(lambda n=node: _marker(n) == "ready", timeout=120,
                     what=f"{node.name} ready marker", on_timeout=lambda n=node: host_log_tail(n))
            client = connect(node, address=node.fixed_ip, key=key)
            try:
                rc, out = run(client, "ps -o user=,args= -C java")
                assert rc == 0 and out.strip(), out
                for line in out.strip().splitlines():
                    assert line.split()[0] == "spark", line
                rc, out = run(client, "cloud-init status --wait")
                assert "status: done" in out, out + host_log_tail(node)
            finally:
                client.close()
    finally:
        _delete_all(conn, servers, ports)


def _give_secret(client, role: str) -> None:
    """The managed authentication block in spark-defaults.conf, then the daemon started."""
    try:
        rc, text = run(client, f"sudo cat {DEFAULTS}")
        assert rc == 0, text
        new = with_auth(text, "5e" * 32)
        script = (f"printf %s {shlex.quote(new)} | sudo tee {DEFAULTS} >/dev/null && "
                  f"sudo chown root:spark {DEFAULTS} && sudo chmod 0640 {DEFAULTS} && "
                  f"sudo systemctl start spark-{role}")  # fmt: skip
        rc, out = run(client, script)
        assert rc == 0, out
    finally:
        client.close()


@pytest.fixture
def corrupt_mirror(tmp_path):
    """A second mirror whose tarball is cut short (a half-written upload) but whose
    .sha512 is the real one."""
    good = mirror.tarball_path(mirror.DEFAULT_VERSION)
    bad_dir = tmp_path / f"spark-{mirror.DEFAULT_VERSION}"
    bad_dir.mkdir()
    with good.open("rb") as src, (bad_dir / good.name).open("wb") as dst:
        dst.write(src.read(4 << 20))
    shutil.copy(good.with_name(good.name + ".sha512"), bad_dir)
    port = mirror.PORT + 1
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", mirror.BIND, "--directory",
         str(tmp_path), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _port_open(mirror.BIND, port), timeout=15, what="corrupt mirror")
        yield mirror.mirror_url(port=port)
    finally:
        proc.kill()
        proc.wait()


def test_corrupted_tarball_fails_the_node_with_the_checksum_error(
        hostbed, clean_project, keypair, corrupt_mirror):
    conn = clean_project.user()
    key_name, _ = keypair
    inv = load_inventory(INVENTORY)
    inv = inv.model_copy(update={"spark": inv.spark.model_copy(update={"mirror": corrupt_mirror})})
    server = create_server(conn, name="e2e-bad-mirror", key_name=key_name,
                           user_data=render_cloud_init(inv, role="worker", master_ip="10.77.0.9"))
    try:
        conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
        host = wait_for(lambda: _booted_host(server.id), timeout=90, what="the host")
        wait_for(lambda: _marker(host), timeout=180, what="ready or failed marker",
                 on_timeout=lambda: host_log_tail(host))
        assert _marker(host) == "failed"
        # The failed chain's log is printed once the steps beside it have ended too.
        wait_for(
            lambda: "sha512 MISMATCH" in host.file("/var/log/cloud-init-output.log").read_text(),
            timeout=120, what="the checksum error in the boot log",
            on_timeout=lambda: host_log_tail(host))
        assert not host.file("/opt/spark/bin/spark-class").exists()
        failed = host.file(FAILED_MARKER).read_text()
        assert "step=spark" in failed, failed
    finally:
        conn.compute.delete_server(server.id)
        conn.compute.wait_for_delete(server, wait=60, interval=0.5)
        wait_for(lambda: hosts.get_host(server.id) is None, timeout=120, what="host removal")
