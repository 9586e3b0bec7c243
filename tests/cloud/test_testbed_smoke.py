"""The test bed is a real OpenStack: what sparkstack does to a cloud works on it.

One walk through everything the product relies on, with plain openstacksdk as the
non-admin test user: keypair, security group and rules, a hard anti-affinity server group,
two servers with user_data, metadata and tags, fixed IPs from the tenant subnet, a floating
IP, and a project that is empty again afterwards. If the bed silently lost a piece (port
binding, the second compute host, user_data, floating IPs), this test is the one that says so.
"""

from __future__ import annotations

import base64
import ipaddress

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.testbed import bed, fixtures
from tests.waiting import wait_until

USER_DATA = "#cloud-config\nwrite_files:\n  - path: /etc/sparkstack-smoke\n    content: ok\n"


def _public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _wait(what: str, check, *, timeout: float = 60, interval: float = 0.5):
    """Poll `check` until it returns something truthy; fail with `what` on timeout."""
    return wait_until(check, timeout=timeout, what=what, interval=interval)


@pytest.mark.cloud
def test_servers_networks_and_cleanup_round_trip(clean_project):
    tb = clean_project
    conn = tb.user()
    admin = tb.admin()
    before = bed.snapshot_project(admin)

    image = conn.image.find_image(bed.IMAGE["name"], ignore_missing=False)
    flavor = conn.compute.find_flavor("m1.tiny", ignore_missing=False)
    private = conn.network.find_network(bed.PRIVATE_NET["name"], ignore_missing=False)
    public = conn.network.find_network(bed.PUBLIC_NET["name"], ignore_missing=False)

    keypair = conn.compute.create_keypair(name="smoke-key", public_key=_public_key())
    sg = conn.network.create_security_group(name="smoke-sg", description="smoke test")
    conn.network.create_security_group_rule(
        security_group_id=sg.id,
        direction="ingress",
        ethertype="IPv4",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="127.0.0.0/8",
    )
    conn.network.create_security_group_rule(
        security_group_id=sg.id,
        direction="ingress",
        ethertype="IPv4",
        protocol="tcp",
        port_range_min=7077,
        port_range_max=7077,
        remote_group_id=sg.id,
    )
    rules = list(conn.network.security_group_rules(security_group_id=sg.id))
    assert {(r.port_range_min, r.remote_group_id) for r in rules if r.direction == "ingress"} == {
        (22, None),
        (7077, sg.id),
    }

    group = conn.compute.create_server_group(name="smoke-group", policy="anti-affinity")

    servers = [
        conn.compute.create_server(
            name=f"smoke-{i}",
            image_id=image.id,
            flavor_id=flavor.id,
            networks=[{"uuid": private.id}],
            key_name=keypair.name,
            security_groups=[{"name": sg.name}],
            user_data=base64.b64encode(USER_DATA.encode()).decode(),
            metadata={"sparkstack-cluster": "smoke", "sparkstack-role": f"worker-{i}"},
            tags=["sparkstack", "smoke"],
            scheduler_hints={"group": group.id},
        )
        for i in (1, 2)
    ]
    servers = [conn.compute.wait_for_server(s, interval=1, wait=180) for s in servers]

    subnet = ipaddress.ip_network(bed.PRIVATE_NET["cidr"])
    fixed = {}
    for i, server in enumerate(servers, start=1):
        assert server.status == "ACTIVE"
        addrs = server.addresses[bed.PRIVATE_NET["name"]]
        ips = [a["addr"] for a in addrs if a.get("OS-EXT-IPS:type") == "fixed"]
        assert len(ips) == 1 and ipaddress.ip_address(ips[0]) in subnet, addrs
        fixed[server.id] = ips[0]
        assert server.metadata == {"sparkstack-cluster": "smoke", "sparkstack-role": f"worker-{i}"}
        assert sorted(server.tags) == ["smoke", "sparkstack"]
        assert server.key_name == "smoke-key"
        assert [g["name"] for g in server.security_groups] == ["smoke-sg"]
    assert len(set(fixed.values())) == 2

    # The admin sees what the product cannot: user_data (microversion >= 2.3) and where
    # the scheduler put each server. Hard anti-affinity needs two distinct fake hosts.
    admin_compute = tb.admin(compute_api_version="2.3")
    for server in servers:
        seen = admin_compute.compute.get_server(server.id)
        assert base64.b64decode(seen.user_data).decode() == USER_DATA
    hosts = {admin.compute.get_server(s.id).compute_host for s in servers}
    assert len(hosts) == 2 and hosts <= set(bed.COMPUTE_HOSTS)
    assert set(conn.compute.get_server_group(group.id).member_ids) == {s.id for s in servers}

    # Floating IP from the external network, attached to the first server's port.
    target = servers[0]
    port = next(iter(conn.network.ports(device_id=target.id)))
    assert port.binding_vif_type != "binding_failed"
    fip = conn.network.create_ip(floating_network_id=public.id)
    assert ipaddress.ip_address(fip.floating_ip_address) in ipaddress.ip_network(
        bed.PUBLIC_NET["cidr"]
    )
    fip = conn.network.update_ip(fip, port_id=port.id)
    assert fip.fixed_ip_address == fixed[target.id]

    def floating_in_addresses():
        addrs = conn.compute.get_server(target.id).addresses[bed.PRIVATE_NET["name"]]
        return any(
            a["addr"] == fip.floating_ip_address and a.get("OS-EXT-IPS:type") == "floating"
            for a in addrs
        )

    _wait("the floating IP to show in the server's addresses", floating_in_addresses)

    # Remove it all, by id, and the project is what it was.
    conn.network.delete_ip(fip)
    for server in servers:
        conn.compute.delete_server(server.id)
    for server in servers:
        conn.compute.wait_for_delete(server, interval=1, wait=120)
    conn.compute.delete_server_group(group.id)
    conn.network.delete_security_group(sg.id)
    conn.compute.delete_keypair(keypair.name)

    after = bed.snapshot_project(admin)
    assert after.new_since(before) == {}
    assert after.ids == before.ids
    # Nothing the servers used is left on the network either (ports went with them).
    assert not list(conn.network.ports(device_id=servers[0].id))
    assert not list(conn.network.ports(device_id=servers[1].id))


# The gate in front of every cloud test: these run everywhere, bed or not.


@pytest.mark.parametrize(
    ("env", "required"),
    [
        ({}, False),
        ({"CI": "true"}, True),
        ({"CI": "TRUE"}, True),
        ({"CI": "false"}, False),
        ({"SPARKSTACK_REQUIRE_CLOUD": "1"}, True),
        ({"SPARKSTACK_REQUIRE_CLOUD": "0"}, False),
    ],
)
def test_ci_turns_a_missing_bed_into_a_failure(monkeypatch, env, required):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("SPARKSTACK_REQUIRE_CLOUD", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert fixtures.bed_required() is required


def test_non_root_is_told_why_the_cloud_tests_skip(monkeypatch):
    monkeypatch.setattr(fixtures.sys, "platform", "linux")
    monkeypatch.setattr(fixtures.os, "geteuid", lambda: 1000)
    assert "root" in fixtures.cannot_run_reason()
    monkeypatch.setattr(fixtures.sys, "platform", "darwin")
    assert "Linux" in fixtures.cannot_run_reason()
