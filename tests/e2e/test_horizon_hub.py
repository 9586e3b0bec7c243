"""The Horizon path: servers launched by hand with `render`'s documents and a keypair of
the user's own, then `sparkstack hub --master-ip` installs the same hub and Spark
authentication on the worker named with --worker-ip (no Spark daemon runs before it has
the secret, so none has registered with the master); a user logs in and runs a job. On a
stock image: the pasted document has no room for the master's locks, so `hub` brings them
over SSH and installs the hub's packages through the inventory's mirrors."""

from __future__ import annotations

import re
import shutil

import pytest
import tomllib

from provisioner.inventory import load_inventory
from provisioner.render import render_cloud_init
from tests.cloud.test_workflows import cli_env, run_cli
from tests.testbed.hosts import mirror

from .conftest import create_server
from .test_cluster import run_job, write_inventory
from .test_hub import PinnedClient

pytestmark = [pytest.mark.hosts, pytest.mark.slow]


# On the stock image, where `hub` has the most to do: a pre-baked image takes the same path
# with the hub's packages already there, as the shared cluster of test_cluster shows.
IMAGE = "debian-12-stock"


def test_hub_for_a_master_launched_from_horizon_on_a_stock_image(hostbed, clean_project,
                                                                 keypair, tmp_path):  # fmt: skip
    conn = clean_project.user()
    key_name, key = keypair
    key_file = tmp_path / "id_rsa"
    key.write_private_key_file(str(key_file))
    inv_path = write_inventory(tmp_path / "inv.toml", name="hz", users=["alice"])
    text = inv_path.read_text().replace(
        '[ssh]\n', f'[ssh]\nkeypair = "{key_name}"\nprivate_key = "{key_file}"\n', 1
    )
    text += (f'\n[mirrors]\napt_proxy = "{mirror.apt_proxy_url()}"\n'
             f'pypi = "{mirror.pypi_url()}"\nnpm = "{mirror.npm_url()}"\n')  # fmt: skip
    inv_path.write_text(text)
    inv = load_inventory(inv_path)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    servers = []
    try:
        master = create_server(conn, name="hz-master", key_name=key_name, flavor="m1.large",
                               user_data=render_cloud_init(inv, role="master"),
                               image=IMAGE)  # fmt: skip
        servers.append(master)
        master = conn.compute.wait_for_server(master, status="ACTIVE", wait=120, interval=1)
        ip = next(a["addr"] for net in master.addresses.values() for a in net)
        worker = create_server(conn, name="hz-worker", key_name=key_name, flavor="m1.medium",
                               user_data=render_cloud_init(inv, role="worker", master_ip=ip),
                               image=IMAGE)  # fmt: skip
        servers.append(worker)
        worker = conn.compute.wait_for_server(worker, status="ACTIVE", wait=120, interval=1)

        wip = next(a["addr"] for net in conn.compute.get_server(worker.id).addresses.values()
                   for a in net)  # fmt: skip
        # named, not waited for: hub waits for its boot, then gives it the Spark secret
        proc = run_cli("hub", "-i", str(inv_path), "--master-ip", ip, "--worker-ip", wip,
                       env=env, check=False, timeout=900)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        # over plain HTTP here: pip and npm trust the lock's hashes, not the wire
        assert "hub packages: changed (installed over SSH (" in proc.stderr
        assert "1 worker(s):" in proc.stderr
        assert "every worker is ALIVE on the Spark master" in proc.stderr
        assert "hub: https://" in proc.stdout
        creds = tomllib.loads(
            (tmp_path / "config" / "sparkstack" / "hz" / "credentials.toml").read_text()
        )
        fingerprint = creds["hub_certificate_sha256"]
        answer, _, ui = run_job(PinnedClient(ip, 443, fingerprint), ip, 443, fingerprint,
                                "alice", creds["users"]["alice"])  # fmt: skip
        assert answer == "333328333350000"
        # a master set up by `hub` gets the application UIs through the hub as well
        assert re.fullmatch(r"/user/alice/sparkui/\d+/", ui), ui
    finally:
        for server in servers:
            conn.compute.delete_server(server.id, ignore_missing=True)
        for server in servers:
            conn.compute.wait_for_delete(server, wait=120, interval=1)
        # the servers were the test's, not a cluster's: no `down` removes what `hub` wrote
        # for them (credentials, pinned host keys), so the test does, as their owner would
        shutil.rmtree(tmp_path / "config" / "sparkstack" / "hz", ignore_errors=True)
