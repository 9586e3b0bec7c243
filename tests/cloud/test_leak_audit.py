"""The leak audit every cloud and e2e test runs through `clean_project` can fail: one
thing of every kind is left behind on purpose, and the audit names each, then removes
them all."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from tests.testbed import bed, leaks
from tests.testbed.fixtures import testbed  # noqa: F401
from tests.testbed.hosts import hosts

pytestmark = pytest.mark.cloud


def test_the_audit_names_every_kind_of_leak_and_removes_it(testbed, tmp_path):  # noqa: F811
    admin, user = testbed.admin(), testbed.user()
    dirs = [tmp_path / "config" / "sparkstack"]
    hosts_state = tmp_path / "hostbed"  # a hosts bed of this test's own, with one record
    audit = {"config_dirs": dirs, "hosts_state": hosts_state}
    before = leaks.take(admin, **audit)
    try:
        private = user.network.find_network(bed.PRIVATE_NET["name"], ignore_missing=False)
        public = user.network.find_network(bed.PUBLIC_NET["name"], ignore_missing=False)
        default = next(iter(user.network.security_groups(name="default")))
        group = user.network.create_security_group(name="leak-sg")
        rule = user.network.create_security_group_rule(
            security_group_id=default.id, direction="ingress", protocol="tcp",
            port_range_min=2222, port_range_max=2222, remote_ip_prefix="198.51.100.0/24",
        )  # fmt: skip
        port = user.network.create_port(network_id=private.id, name="leak-port")
        fip = user.network.create_ip(floating_network_id=public.id)
        keypair = user.compute.create_keypair(name="leak-keypair")
        server_group = user.compute.create_server_group(name="leak-group", policies=["affinity"])
        image = user.image.find_image(bed.IMAGE["name"], ignore_missing=False)
        flavor = user.compute.find_flavor("m1.tiny", ignore_missing=False)
        server = user.compute.create_server(
            name="leak-server", image_id=image.id, flavor_id=flavor.id,
            networks=[{"uuid": private.id}],
        )  # fmt: skip
        key = dirs[0] / "leak" / "id_ed25519"
        key.parent.mkdir(parents=True)
        key.write_text("not really a key\n")
        record = hosts.hosts_dir(hosts_state) / server.id / "host.json"
        record.parent.mkdir(parents=True)
        host = hosts.Host(name="leak-server", server_id=server.id, fixed_ip="10.77.0.99")
        record.write_text(json.dumps(asdict(host)))

        found = leaks.leaked(admin, before, **audit, host_grace=0)
        text = "\n".join(found)
        for expected in (
            f"server {server.id} (leak-server)",
            f"floating_ip {fip.id}",
            f"port {port.id} (leak-port)",
            f"security_group_rule {rule.id} (ingress tcp 2222-2222 from 198.51.100.0/24",
            f"security_group {group.id} (leak-sg)",
            f"server_group {server_group.id} (leak-group)",
            f"keypair {keypair.name}",
            f"namespace host leak-server (server {server.id})",
            f"local file {key}",
        ):
            assert expected in text, text
        # the new group's own default rules belong to it and are not listed apart
        assert text.count("security_group_rule") == 1, text
    finally:
        leaks.clean(admin, before, **audit, host_grace=0)
    assert leaks.leaked(admin, before, **audit, host_grace=0) == []
    assert not record.exists() and not key.exists()
