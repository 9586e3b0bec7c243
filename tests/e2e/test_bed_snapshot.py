"""Server snapshots on the bed: Nova's createImage uploads the host's disk, and a server
booted from the image boots that disk.

The product will snapshot a configured node and boot later nodes from the image, so the
bed must do what a cloud does: a stopped server keeps its disk, the snapshot carries what
the server wrote and deleted (whiteouts, opaque directories) but not the old instance's
NoCloud seed, inherits the base image's properties, and a server booted from it runs
cloud-init again as a new instance. A snapshot the driver cannot take leaves no usable
image behind.
"""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

import pytest

from tests.testbed.hosts import hosts, snapshots
from tests.testbed.hosts.rootfs import IMAGE_PROPERTY

from .conftest import connect, create_server, host_log_tail, run, ssh_ready, wait_for

pytestmark = [pytest.mark.hosts, pytest.mark.cloud, pytest.mark.slow]

STOCK_IMAGE = "debian-12-stock"
FIRST = """\
#cloud-config
runcmd:
  - [sh, -c, "echo first > /var/tmp/e2e-first-boot"]
"""
SECOND = """\
#cloud-config
runcmd:
  - [sh, -c, "echo second > /var/tmp/e2e-second-boot"]
"""
# On the first server: a new file, a base-tree file deleted (a whiteout in the layer) and a
# base-tree directory replaced by one with other contents (an opaque directory).
CHANGES = ("echo kept > /var/tmp/e2e-snapshot && rm /etc/motd"
           " && rm -rf /etc/skel && mkdir /etc/skel && touch /etc/skel/only-this")


def _booted_host(server_id: str) -> hosts.Host | None:
    host = hosts.get_host(server_id)
    return host if host is not None and host.alive() else None


def _fixed_ip(conn: Any, server_id: str) -> str:
    server = conn.compute.get_server(server_id)
    return next(a["addr"] for addrs in server.addresses.values() for a in addrs
                if a.get("OS-EXT-IPS:type", "fixed") == "fixed")


def _ssh_up(conn: Any, server_id: str, key: Any):
    """Wait for the server's host, its own SSH host key and sshd; an SSH client."""
    host = wait_for(lambda: _booted_host(server_id), timeout=90, what="the server's host")
    ip = _fixed_ip(conn, server_id)
    # is_file: a host booted from a snapshot deletes the old host keys first (whiteouts in
    # its upper dir) before it writes its own.
    pub = host.file("/etc/ssh/ssh_host_ed25519_key.pub")
    wait_for(lambda: pub.is_file() and ssh_ready(ip), timeout=120, what=f"sshd on {ip}",
             on_timeout=lambda: host_log_tail(host))
    return host, connect(host, address=ip, key=key)


def _glance(admin: Any, image_id: str) -> dict[str, Any] | None:
    """The image as Glance v2 shows it (custom properties as fields); None when gone."""
    resp = admin.image.get(f"/images/{image_id}")
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.json()


def _settled(admin: Any, image_id: str) -> dict[str, Any] | None:
    image = _glance(admin, image_id)
    if image is None or image["status"] in ("active", "killed", "deleted"):
        return image or {"status": "gone"}
    return None


def _delete_server(conn: Any, server: Any) -> None:
    conn.compute.delete_server(server.id, ignore_missing=True)
    conn.compute.wait_for_delete(server, wait=60, interval=0.5)
    # A stopped host keeps its disk, a deleted server's host does not.
    wait_for(lambda: hosts.get_host(server.id) is None, timeout=120,
             what=f"the host of deleted server {server.name} to go away")


def _delete_image(admin: Any, image_id: str) -> None:
    admin.image.delete_image(image_id, ignore_missing=True)
    wait_for(lambda: _glance(admin, image_id) is None, timeout=60,
             what=f"image {image_id} to be deleted")


def _stop(conn: Any, server: Any) -> hosts.Host:
    conn.compute.stop_server(server)
    conn.compute.wait_for_server(server, status="SHUTOFF", wait=60, interval=0.5)
    # Stopped: no processes, but the disk (upper dir) and a record stay.
    stopped = wait_for(lambda: (h := hosts.get_host(server.id)) and h.stopped and h,
                       timeout=60, what=f"the host of {server.name} to stop")
    assert not stopped.alive() and stopped.upper.is_dir()
    return stopped


def _snapshot(conn: Any, admin: Any, server: Any, name: str, images: list[str]) -> dict:
    """createImage of a stopped server; the image as Glance shows it once active."""
    image_id = conn.compute.create_server_image(server, name=name).id
    images.append(image_id)
    settled = wait_for(lambda: _settled(admin, image_id), timeout=180, interval=1,
                       what=f"snapshot image {name} to be uploaded")
    assert settled["status"] == "active", settled
    assert settled["image_type"] == "snapshot"
    assert settled["instance_uuid"] == server.id
    assert settled[IMAGE_PROPERTY] == "stock-bookworm"  # inherited from the base image
    assert (settled["disk_format"], settled["container_format"]) == ("raw", "bare")
    assert settled["size"] > 0
    after = conn.compute.get_server(server.id)
    assert after.status == "SHUTOFF" and after.task_state is None
    return settled


def _layer_members(admin: Any, image_id: str) -> dict[str, tarfile.TarInfo]:
    resp = admin.image.get(f"/images/{image_id}/file")
    resp.raise_for_status()
    with tarfile.open(fileobj=io.BytesIO(resp.content)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _check(client: Any, checks: dict[str, str]) -> None:
    for command, expected in checks.items():
        rc, out = run(client, command)
        assert (rc, out.strip()) == (0, expected), (command, out)


def test_a_stopped_server_starts_again_on_its_disk(hostbed, clean_project, keypair):
    conn = clean_project.user()
    key_name, key = keypair
    server = create_server(conn, name="e2e-snap-restart", user_data=FIRST,
                           key_name=key_name, image=STOCK_IMAGE)
    try:
        conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
        host, client = _ssh_up(conn, server.id, key)
        try:
            rc, out = run(client, "cloud-init status --wait && echo on-disk > /var/tmp/mine")
            assert rc == 0, out + host_log_tail(host)
        finally:
            client.close()
        booted_at = host.booted_at
        _stop(conn, server)
        conn.compute.start_server(server)
        conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
        host, client = _ssh_up(conn, server.id, key)
        assert host.booted_at > booted_at and not host.stopped
        try:
            rc, out = run(client, "cloud-init status --wait")
            assert rc == 0 and "status: done" in out, out + host_log_tail(host)
            # The same instance on the same disk: nothing per-instance runs again.
            _check(client, {"cat /var/tmp/mine": "on-disk",
                            "cat /var/lib/cloud/data/instance-id": server.id,
                            "grep -c '^boot:' /var/log/testbed-boot.log": "2"})
        finally:
            client.close()
    finally:
        _delete_server(conn, server)


def test_snapshot_of_a_stopped_server_boots_its_disk(hostbed, clean_project, keypair):
    conn, admin = clean_project.user(), clean_project.admin()
    key_name, key = keypair
    first = create_server(conn, name="e2e-snap-first", user_data=FIRST, key_name=key_name,
                          image=STOCK_IMAGE)
    servers = [first]
    images: list[str] = []
    try:
        conn.compute.wait_for_server(first, status="ACTIVE", wait=60, interval=0.5)
        host, client = _ssh_up(conn, first.id, key)
        try:
            rc, out = run(client, "cloud-init status --wait")
            assert rc == 0 and "status: done" in out, out + host_log_tail(host)
            rc, out = run(client, f"sudo sh -c '{CHANGES}'")
            assert rc == 0, out
        finally:
            client.close()

        stopped = _stop(conn, first)
        assert stopped.file("/var/tmp/e2e-snapshot").read_text() == "kept\n"
        image = _snapshot(conn, admin, first, "e2e-snap-image", images)
        assert snapshots.LOWER_IMAGES_PROPERTY not in image  # a base image below it

        # The layer: what the server wrote and deleted, not the bed's seed and init.
        members = _layer_members(admin, image["id"])
        assert members["./var/tmp/e2e-snapshot"].isfile()
        whiteout = members["./etc/motd"]
        assert whiteout.ischr() and (whiteout.devmajor, whiteout.devminor) == (0, 0)
        assert members["./etc/skel"].pax_headers.get(
            "SCHILY.xattr.trusted.overlay.opaque") == "y"
        assert not [n for n in members if n.startswith("./var/lib/cloud/seed/nocloud")]
        assert "./usr/local/sbin/testbed-boot" not in members
        assert "./etc/cloud/cloud.cfg.d/90-testbed.cfg" not in members

        _delete_server(conn, first)

        second = create_server(conn, name="e2e-snap-second", user_data=SECOND,
                               key_name=key_name, image=image["id"])
        servers.append(second)
        conn.compute.wait_for_server(second, status="ACTIVE", wait=60, interval=0.5)
        host, client = _ssh_up(conn, second.id, key)
        assert host.lowers[0] == str(snapshots.layer_path(image["id"]))
        try:
            rc, out = run(client, "cloud-init status --wait")
            assert rc == 0 and "status: done" in out, out + host_log_tail(host)
            _check(client, {
                "cat /var/tmp/e2e-snapshot": "kept",
                "test -e /etc/motd && echo present || echo absent": "absent",
                "ls -A /etc/skel": "only-this",
                # cloud-init saw a new instance: new id, per-instance modules ran again.
                "cat /var/lib/cloud/data/instance-id": second.id,
                "cat /var/tmp/e2e-second-boot": "second",
                "cat /var/tmp/e2e-first-boot": "first",
                "hostname": "e2e-snap-second",
            })
            rc, out = run(client, "sudo sh -c 'echo layered > /var/tmp/e2e-second-layer'")
            assert rc == 0, out
        finally:
            client.close()

        # A snapshot of a server booted from a snapshot: its layer on top of the older one.
        _stop(conn, second)
        chained = _snapshot(conn, admin, second, "e2e-snap-chained", images)
        assert snapshots.lower_images(chained) == [image["id"]]
        third = create_server(conn, name="e2e-snap-third", user_data=FIRST,
                              key_name=key_name, image=chained["id"])
        servers.append(third)
        conn.compute.wait_for_server(third, status="ACTIVE", wait=60, interval=0.5)
        host, client = _ssh_up(conn, third.id, key)
        assert host.lowers[:2] == [str(snapshots.layer_path(chained["id"])),
                                   str(snapshots.layer_path(image["id"]))]
        try:
            rc, out = run(client, "cloud-init status --wait")
            assert rc == 0 and "status: done" in out, out + host_log_tail(host)
            _check(client, {
                "cat /var/tmp/e2e-snapshot /var/tmp/e2e-second-layer": "kept\nlayered",
                "test -e /etc/motd && echo present || echo absent": "absent",
                "cat /var/lib/cloud/data/instance-id": third.id,
            })
        finally:
            client.close()
    finally:
        for server in servers:
            _delete_server(conn, server)
        for image_id in images:
            _delete_image(admin, image_id)


def test_snapshot_without_a_disk_leaves_no_image(hostbed, clean_project, keypair):
    conn, admin = clean_project.user(), clean_project.admin()
    key_name, _ = keypair
    server = create_server(conn, name="e2e-snap-nodisk", user_data=FIRST, key_name=key_name,
                           image=STOCK_IMAGE)
    image_id = None
    try:
        conn.compute.wait_for_server(server, status="ACTIVE", wait=60, interval=0.5)
        wait_for(lambda: _booted_host(server.id), timeout=90, what="the server's host")
        # The disk goes from under the server (the hypervisor does not boot a server twice).
        hosts.kill_host(server.id)
        assert hosts.get_host(server.id) is None

        image_id = conn.compute.get_server(server.id).create_image(
            conn.compute, "e2e-snap-nodisk-image")
        started = time.monotonic()
        settled = wait_for(lambda: _settled(admin, image_id), timeout=120, interval=1,
                           what="the failed snapshot's image to go")
        assert settled["status"] in ("gone", "killed", "deleted"), settled
        log_line = f"image {image_id} settled as {settled['status']} after " \
                   f"{time.monotonic() - started:.1f} s"
        # The server is as it was, and its actions say the snapshot failed.
        after = wait_for(lambda: (s := conn.compute.get_server(server.id)).task_state is None
                         and s, timeout=60, what="the server's task state to clear")
        assert after.status == "ACTIVE", log_line
        actions = [a for a in conn.compute.server_actions(server.id)
                   if a.action == "createImage"]
        assert actions, log_line
        action = admin.compute.get_server_action(actions[0].request_id, server.id)
        results = [e["result"] for e in (action.events or [])]
        assert "Error" in results, (action, log_line)
    finally:
        _delete_server(conn, server)
        if image_id is not None:
            _delete_image(admin, image_id)
