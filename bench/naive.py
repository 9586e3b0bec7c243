"""The reference a user would write with openstacksdk's cloud layer: one
`create_server(wait=True)` after another (each waits for ACTIVE before the next starts),
the same resources as bench/floor.py, deleted the same way (`delete_server(wait=True)`).

    python -m bench.naive create --cloud C --name bench-n --workers 10 --public-key KEY
    python -m bench.naive delete --cloud C --name bench-n
"""

from __future__ import annotations

import argparse

import openstack

from bench.floor import arguments


def create(conn, a: argparse.Namespace) -> None:
    sg = conn.create_security_group(f"{a.name}-sg", "bench")
    for port in (22, 443):
        conn.create_security_group_rule(
            sg.id, port_range_min=port, port_range_max=port, protocol="tcp",
            remote_ip_prefix=a.cidr,
        )
    conn.create_security_group_rule(sg.id, remote_group_id=sg.id, ethertype="IPv4")
    conn.create_security_group_rule(sg.id, remote_group_id=sg.id, ethertype="IPv6")
    conn.create_keypair(f"{a.name}-key", public_key=a.public_key)
    group = conn.create_server_group(f"{a.name}-workers", ["soft-anti-affinity"])
    net = conn.get_network(a.network)
    port = conn.network.create_port(
        name=f"{a.name}-master-port", network_id=net.id, security_group_ids=[sg.id]
    )
    conn.create_server(
        f"{a.name}-master", image=a.image, flavor=a.flavor, key_name=f"{a.name}-key",
        nics=[{"port-id": port.id}], userdata="#cloud-config\n", wait=True, auto_ip=False,
    )
    conn.create_floating_ip(network=a.pool, port=port.id)
    for i in range(1, a.workers + 1):
        conn.create_server(
            f"{a.name}-worker-{i}", image=a.image, flavor=a.flavor, key_name=f"{a.name}-key",
            network=a.network, security_groups=[sg.id], group=group.id,
            userdata="#cloud-config\n", wait=True, auto_ip=False,
        )


def delete(conn, a: argparse.Namespace) -> None:
    for server in conn.list_servers(filters={"name": f"^{a.name}-"}):
        conn.delete_server(server.id, wait=True)
    for port in conn.network.ports(name=f"{a.name}-master-port"):
        for fip in conn.network.ips(port_id=port.id):
            conn.delete_floating_ip(fip.id)
        conn.network.delete_port(port.id)
    conn.delete_keypair(f"{a.name}-key")
    group = conn.get_server_group(f"{a.name}-workers")
    if group:
        conn.delete_server_group(group.id)
    conn.delete_security_group(f"{a.name}-sg")


def main(argv: list[str] | None = None) -> None:
    a = arguments(__doc__.splitlines()[0]).parse_args(argv)
    conn = openstack.connect(cloud=a.cloud)
    (create if a.what == "create" else delete)(conn, a)


if __name__ == "__main__":
    main()
