"""The flat-in-N bench still runs: the real CLI's `up --until servers` and `down` against the
simulated cloud of bench/simcloud.py, and the Nova and Neutron behaviour the product's
multi-create path relies on (names, identity on every server, a floating IP on a port no
server uses yet)."""

from __future__ import annotations

import pytest

from bench import flat_in_n
from bench.simcloud import SimCloud

pytestmark = pytest.mark.slow


def test_quick_bench_creates_one_plus_one_and_removes_them():
    [row] = flat_in_n.measure([1], 0.5)
    assert row["n"] == 1 and row["ratio_up"] == 1.0
    assert row["servers_after_up"] == 2  # master and worker-1
    assert row["servers_after_down"] == 0
    assert row["up_requests"] > 0 and row["down_requests"] > 0
    assert row["up_s"] >= 0.5  # the sim's boot time is waited for, not skipped
    assert row["unknown"] == [] and row["ignored_filters"] == [] and row["sim_errors"] == []


def test_multi_create_names_and_tags_every_server_and_floating_ip_waits_for_its_server(
    tmp_path, monkeypatch
):
    import openstack

    with SimCloud(boot_s=0.2) as sim:
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "clouds.yaml"))
        conn = openstack.connect(cloud=sim.write_clouds_yaml(tmp_path / "clouds.yaml"))
        net = next(conn.network.networks(name="private"))
        ext = next(conn.network.networks(name="public"))
        image = next(conn.image.images(name="debian-12"))
        port = conn.network.create_port(name="m-port", network_id=net.id)
        fip = conn.network.create_ip(floating_network_id=ext.id, port_id=port.id)
        assert fip.fixed_ip_address == port.fixed_ips[0]["ip_address"]
        assert fip.status == "DOWN"  # no server on the port yet
        group = conn.compute.create_server_group(name="g", policy="soft-anti-affinity")
        first = conn.compute.create_server(
            name="w", image_id=image.id, flavor_id="m1.tiny", networks=[{"uuid": net.id}],
            min_count=3, max_count=3, tags=["c"], metadata={"k": "v"},
            scheduler_hints={"group": group.id},
        )  # fmt: skip
        master = conn.compute.create_server(
            name="m", image_id=image.id, flavor_id="m1.tiny", networks=[{"port": port.id}]
        )
        workers = sorted(conn.compute.servers(details=True, tags="c"), key=lambda s: s.name)
        assert [s.name for s in workers] == ["w-1", "w-2", "w-3"]
        assert first.id == workers[0].id  # Nova answers with the first server
        assert all(s.metadata == {"k": "v"} and s.status == "BUILD" for s in workers)
        assert len(next(conn.compute.server_groups()).member_ids) == 3
        with pytest.raises(openstack.exceptions.BadRequestException):
            conn.compute.create_server(
                name="x", image_id=image.id, flavor_id="m1.tiny",
                networks=[{"port": port.id}], min_count=2, max_count=2,
            )  # fmt: skip
        addresses = conn.compute.get_server(master.id).addresses["private"]
        assert fip.floating_ip_address in [a["addr"] for a in addresses]
        assert conn.network.get_ip(fip.id).status == "ACTIVE"
        assert sim.total(service="compute", method="POST") == 4
        assert sim.unknown == [] and sim.errors == []
