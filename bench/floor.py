"""The cloud's own floor: the least a client must do to get (or remove) what `up` makes.

No checks, no retries, no progress, everything as soon as what it needs exists: look up
image, flavor and networks, create the security group (rules in one bulk POST), keypair
and server group at once, the master port once its group exists, POST every server at the
same moment (the master's once its port exists) with a new floating IP put on the port
meanwhile, then list the servers once a second until all are ACTIVE. `delete` finds them
(by name and by the servers' tag, so it also cleans up after an interrupted `create`), then
deletes servers, floating IP, port, keypair and server group at once, and the security
group once the servers are gone (Neutron keeps it while their ports use it).

    python -m bench.floor create --cloud C --name bench-f --workers 10 [--image ...]
    python -m bench.floor delete --cloud C --name bench-f

Run as a whole process (imports included), the same way the bench runs `sparkstack up`.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import sys
import time

import openstack
import openstack.exceptions

POLL_S = 1.0


def _tags(name: str) -> list[str]:
    return ["sparkstack-bench", f"sparkstack-bench-{name}"]


def create(conn, a: argparse.Namespace) -> None:
    pool = cf.ThreadPoolExecutor(max_workers=max(8, a.workers + 2))
    image = pool.submit(conn.image.find_image, a.image, ignore_missing=False)
    flavor = pool.submit(conn.compute.find_flavor, a.flavor, ignore_missing=False)
    net = pool.submit(conn.network.find_network, a.network, ignore_missing=False)
    ext = pool.submit(conn.network.find_network, a.pool, ignore_missing=False)

    def security_group():
        sg = conn.network.create_security_group(name=f"{a.name}-sg")
        rules = [
            {"security_group_id": sg.id, "direction": "ingress", "ethertype": eth,
             "remote_group_id": sg.id}
            for eth in ("IPv4", "IPv6")
        ] + [
            {"security_group_id": sg.id, "direction": "ingress", "ethertype": "IPv4",
             "protocol": "tcp", "port_range_min": p, "port_range_max": p,
             "remote_ip_prefix": a.cidr}
            for p in (22, 443)
        ]
        list(conn.network.create_security_group_rules(rules))
        return sg

    sg = pool.submit(security_group)
    keypair = pool.submit(
        conn.compute.create_keypair, name=f"{a.name}-key", public_key=a.public_key
    )
    group = pool.submit(
        conn.compute.create_server_group, name=f"{a.name}-workers", policy="soft-anti-affinity"
    )

    master_port = pool.submit(
        lambda: conn.network.create_port(
            name=f"{a.name}-master-port", network_id=net.result().id,
            security_group_ids=[sg.result().id],
        )
    )
    # Neutron puts a floating IP on a port no server uses yet: beside the master's POST
    fip = pool.submit(
        lambda: conn.network.create_ip(
            floating_network_id=ext.result().id, port_id=master_port.result().id
        )
    )
    user_data = base64.b64encode(b"#cloud-config\n").decode()
    keypair.result()

    def server(name: str, networks: list, extra: dict):
        return conn.compute.create_server(
            name=name, image_id=image.result().id, flavor_id=flavor.result().id,
            key_name=f"{a.name}-key", user_data=user_data, networks=networks,
            tags=_tags(a.name), **extra,
        )

    def master():
        return server(f"{a.name}-master", [{"port": master_port.result().id}], {})

    creates = [pool.submit(master)] + [
        pool.submit(
            server, f"{a.name}-worker-{i}", [{"uuid": net.result().id}],
            {"security_groups": [{"name": sg.result().id}],
             "scheduler_hints": {"group": group.result().id}},
        )
        for i in range(1, a.workers + 1)
    ]
    ids = {f.result().id for f in creates}
    fip.result()
    pool.shutdown()
    while True:
        servers = [s for s in conn.compute.servers(tags=_tags(a.name)[1]) if s.id in ids]
        if any(s.status == "ERROR" for s in servers):
            sys.exit("a server went to ERROR")
        if len(servers) == len(ids) and all(s.status == "ACTIVE" for s in servers):
            return
        time.sleep(POLL_S)


def delete(conn, a: argparse.Namespace) -> None:
    pool = cf.ThreadPoolExecutor(max_workers=16)
    # the four lookups at once, as everything else
    servers = pool.submit(lambda: list(conn.compute.servers(tags=_tags(a.name)[1])))
    ports = pool.submit(lambda: list(conn.network.ports(name=f"{a.name}-master-port")))
    groups = pool.submit(
        lambda: [g for g in conn.compute.server_groups() if g.name == f"{a.name}-workers"]
    )
    sgs = pool.submit(lambda: list(conn.network.security_groups(name=f"{a.name}-sg")))

    def port_and_ip(port) -> None:
        for f in conn.network.ips(port_id=port.id):
            conn.network.delete_ip(f.id)
        conn.network.delete_port(port.id)

    # Everything Nova and Neutron let go while the servers exist goes beside them: the
    # floating IP and port, the keypair, the server group. Only the security group waits.
    gone = [pool.submit(conn.compute.delete_server, s.id) for s in servers.result()]
    gone += [pool.submit(port_and_ip, p) for p in ports.result()]
    gone += [pool.submit(conn.compute.delete_keypair, f"{a.name}-key", ignore_missing=True)]
    gone += [pool.submit(conn.compute.delete_server_group, g.id) for g in groups.result()]
    for f in gone:
        f.result()
    ids = {s.id for s in servers.result()}
    while ids & {s.id for s in conn.compute.servers(tags=_tags(a.name)[1])}:
        time.sleep(POLL_S)
    for sg in sgs.result():
        while True:  # a port Nova made may outlive its server a moment
            try:
                conn.network.delete_security_group(sg.id)
                break
            except openstack.exceptions.ConflictException:
                time.sleep(POLL_S / 4)
    pool.shutdown()


def arguments(description: str) -> argparse.ArgumentParser:
    """The command line of floor.py and naive.py: the same cluster, two ways to make it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("what", choices=("create", "delete"))
    p.add_argument("--cloud", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--image", default="debian-12")
    p.add_argument("--flavor", default="m1.tiny")
    p.add_argument("--network", default="private")
    p.add_argument("--pool", default="public")
    p.add_argument("--cidr", default="203.0.113.0/24")
    p.add_argument("--public-key", default="")
    return p


def main(argv: list[str] | None = None) -> None:
    a = arguments(__doc__.splitlines()[0]).parse_args(argv)
    conn = openstack.connect(cloud=a.cloud)
    (create if a.what == "create" else delete)(conn, a)


if __name__ == "__main__":
    main()
