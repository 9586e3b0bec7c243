"""up / status / scale / down against the test bed's real OpenStack APIs.

Every test asserts what a user would see in the project (servers, ports, floating IPs,
security groups, server groups, keypairs through an admin connection), and the
`clean_project` fixture fails any test that leaves something behind.
"""

# ruff: noqa: F811  (pytest fixtures imported from the test bed are named as arguments)
from __future__ import annotations

import base64
import gzip
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from provisioner import workflows
from provisioner.cloud import ClusterCloud, connect
from provisioner.inventory import cluster_tag, load_inventory
from tests.testbed import bed
from tests.testbed.fixtures import clean_project, testbed  # noqa: F401
from tests.waiting import wait_until

pytestmark = pytest.mark.cloud

ROOT = Path(__file__).resolve().parents[2]

# Fast polling for a cloud whose servers go ACTIVE in seconds.
FAST = workflows.Settings(
    max_parallel=10, poll_min=0.5, poll_max=2.0, active_timeout=180, delete_timeout=180
)


def write_inventory(
    path: Path, *, name: str, workers: int = 1, cloud: str = "sparkstack-test", **extra: str
) -> Path:
    """A small real inventory for the bed (m1.tiny fits debian-12's min_disk/min_ram)."""
    lines = [
        "[cluster]",
        f'name = "{name}"',
        f'cloud = "{cloud}"',
        'image = "debian-12"',
        "[network]",
        'name = "private"',
        'floating_ip_pool = "public"',
        f'floating_ip = "{extra.get("floating_ip", "")}"',
        'allowed_cidrs = ["203.0.113.0/24"]',
        "[master]",
        'flavor = "m1.tiny"',
        "[workers]",
        'flavor = "m1.tiny"',
        f"count = {workers}",
        f'anti_affinity = "{extra.get("anti_affinity", "soft")}"',
        "[spark]",
    ]
    if "checksums" in extra:
        lines.append(f'checksums = ["{extra["checksums"]}"]')
    else:
        # No Spark is installed in these tests (their servers never boot): a pinned hash
        # spares preflight asking Apache's site, which this machine cannot reach.
        lines.append(f'sha512 = "{"ab" * 64}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def user_data_for(inv):
    """The real renderer when it is there; the workflow only carries its output."""
    try:
        from provisioner.render import render_cloud_init
    except ImportError:  # render.py lands separately; its own tests cover it
        return lambda role, ip: f"#cloud-config\n# role={role} master={ip}\n"
    return lambda role, ip: render_cloud_init(inv, role=role, master_ip=ip)


def cluster_cloud(inv):
    """Through the product's own connect(): the fixture points OS_CLIENT_CONFIG_FILE at
    the bed's clouds.yaml and the inventory names the cloud."""
    return ClusterCloud(connect(inv.cluster.cloud), cluster=inv.cluster.name, retry_for=60)


def cluster_resources(admin, cluster: str) -> dict[str, int]:
    """What the project holds for one cluster, counted through the admin API (not through
    the code under test): servers, their ports and the master's, the floating IP, groups,
    keypair. Zero counts are left out, so an empty dict means nothing is left."""
    pid = bed.project_id(admin)
    servers = [
        s
        for s in admin.compute.servers(all_projects=True, project_id=pid)
        if s.name.startswith(f"{cluster}-")
    ]
    ids = {s.id for s in servers}
    ports = [
        p
        for p in admin.network.ports(project_id=pid)
        if p.name == f"{cluster}-master-port" or p.device_id in ids
    ]
    found = {
        "server": len(servers),
        "port": len(ports),
        "floating_ip": sum(
            f.description == f"sparkstack cluster {cluster}"
            for f in admin.network.ips(project_id=pid)
        ),
        "security_group": sum(
            g.name == f"sparkstack-{cluster}" for g in admin.network.security_groups(project_id=pid)
        ),
        "server_group": sum(
            g.name == f"sparkstack-{cluster}-workers"
            for g in admin.compute.server_groups(all_projects=True, project_id=pid)
        ),
        "keypair": sum(
            k.name == f"sparkstack-{cluster}"
            for k in admin.compute.keypairs(user_id=bed.user_id(admin))
        ),
    }
    return {k: v for k, v in found.items() if v}


def run_cli(*args: str, env: dict[str, str], check: bool = True, timeout: float = 300):
    proc = subprocess.run(
        [sys.executable, "-m", "provisioner.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_env(tmp_path: Path, clouds_yaml: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OS_CLIENT_CONFIG_FILE=str(clouds_yaml),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        # `down` saves the hub users' homes first, and refuses when it cannot reach the
        # master; these clusters hold no one's work (a test of the backup drops this).
        SPARKSTACK_NO_BACKUP="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("OS_CLOUD", None)
    return env


@pytest.fixture
def keys(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "config"


def test_lifecycle_up_status_scale_down(clean_project, tmp_path, keys):
    admin = clean_project.admin()
    inv = load_inventory(write_inventory(tmp_path / "inv.toml", name="life", workers=1))
    cloud = cluster_cloud(inv)
    decommissioned: list[list[str]] = []
    handed_over: list[int] = []
    hooks = workflows.Hooks(
        after_servers_active=lambda obs: handed_over.append(len(obs.nodes)),
        decommission=lambda _observed, nodes: decommissioned.append([n.name for n in nodes]),
    )

    res = workflows.up(inv, cloud=cloud, user_data=user_data_for(inv), hooks=hooks, settings=FAST)
    assert cluster_resources(admin, "life") == {
        "server": 2,
        "port": 2,  # the master's own (made first) + the one Nova made for the worker
        "floating_ip": 1,
        "security_group": 1,
        "server_group": 1,
        "keypair": 1,
    }
    assert handed_over == [2]
    nodes = {n.name: n for n in res.observed.nodes}
    assert {n: x.status for n, x in nodes.items()} == {
        "life-master": "ACTIVE",
        "life-worker-1": "ACTIVE",
    }
    master = nodes["life-master"]
    assert master.fixed_ip == res.observed.master_port.detail
    assert master.floating_ip and not nodes["life-worker-1"].floating_ip  # never auto_ip
    key = keys / "sparkstack" / "life" / "id_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600

    # the worker booted with user_data that knows the master's fixed IP (read as admin)
    worker = admin.compute.get_server(nodes["life-worker-1"].id)
    # (gzip-compressed on the wire, as `up` sends it)
    assert master.fixed_ip in gzip.decompress(base64.b64decode(worker.user_data)).decode()

    # status through the CLI, as a user would run it
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    out = json.loads(run_cli("status", "-i", str(tmp_path / "inv.toml"), "--json", env=env).stdout)
    assert sorted(n["name"] for n in out["nodes"]) == ["life-master", "life-worker-1"]
    assert out["floating_ip"] == master.floating_ip

    workflows.scale(inv, workers=3, cloud=cloud, user_data=user_data_for(inv), settings=FAST)
    assert cluster_resources(admin, "life")["server"] == 4
    assert cluster_resources(admin, "life")["port"] == 4
    assert sorted(n.name for n in cloud.list_nodes()) == [
        "life-master",
        "life-worker-1",
        "life-worker-2",
        "life-worker-3",
    ]

    res = workflows.scale(
        inv, workers=1, cloud=cloud, user_data=user_data_for(inv), hooks=hooks, settings=FAST
    )
    assert decommissioned == [["life-worker-3", "life-worker-2"]]
    assert sorted(n.name for n in cloud.list_nodes()) == ["life-master", "life-worker-1"]
    assert cluster_resources(admin, "life")["server"] == 2
    assert cluster_resources(admin, "life")["port"] == 2

    # the CLI with --yes: scaling to the current size changes nothing and says so
    proc = run_cli("scale", "-i", str(tmp_path / "inv.toml"), "-w", "1", "--yes", env=env)
    assert "cluster life already has 1 worker(s)" in proc.stdout
    assert sorted(n.name for n in cloud.list_nodes()) == ["life-master", "life-worker-1"]

    res = workflows.down(inv, cloud=cloud, settings=FAST)
    assert "floating IP " + master.floating_ip in res.deleted
    assert cluster_resources(admin, "life") == {}
    # the key generated for the cluster goes with its keypair: nothing of it is left
    assert f"private key {key}" in res.deleted
    assert not key.exists() and not key.with_suffix(".pub").exists()
    assert not key.parent.exists()
    # idempotent: a second down finds nothing and says so
    proc = run_cli("down", "-i", str(tmp_path / "inv.toml"), "--yes", env=env)
    assert "nothing left of cluster life" in proc.stdout


def test_two_clusters_never_touch_each_other(clean_project, tmp_path, keys):
    admin = clean_project.admin()
    inv_a = load_inventory(write_inventory(tmp_path / "a.toml", name="iso-a", workers=0))
    inv_b = load_inventory(
        write_inventory(tmp_path / "b.toml", name="iso-b", workers=1, anti_affinity="none")
    )
    a, b = cluster_cloud(inv_a), cluster_cloud(inv_b)
    workflows.up(inv_a, cloud=a, user_data=user_data_for(inv_a), settings=FAST)
    workflows.up(inv_b, cloud=b, user_data=user_data_for(inv_b), settings=FAST)
    b_before = b.observe()
    b_counts = cluster_resources(admin, "iso-b")
    assert b_counts["server"] == 2

    workflows.scale(inv_a, workers=2, cloud=a, user_data=user_data_for(inv_a), settings=FAST)
    assert cluster_resources(admin, "iso-a")["server"] == 3
    assert cluster_resources(admin, "iso-a")["server_group"] == 1  # made when first needed
    workflows.scale(inv_a, workers=0, cloud=a, user_data=user_data_for(inv_a), settings=FAST)
    workflows.down(inv_a, cloud=a, settings=FAST)

    assert cluster_resources(admin, "iso-a") == {}
    # Nova applies the tag filter itself (one list per poll returns only this cluster):
    # with iso-b's servers present, a listing by iso-a's tag is empty
    assert list(a.conn.compute.servers(details=True, tags=cluster_tag("iso-a"))) == []
    b_after = b.observe()  # the same servers, ports, groups and floating IP as before
    assert sorted((n.name, n.id) for n in b_after.nodes) == sorted(
        (n.name, n.id) for n in b_before.nodes
    )
    for attr in ("security_group", "server_group", "master_port", "floating_ip", "keypair"):
        assert getattr(b_after, attr) == getattr(b_before, attr), attr
    assert cluster_resources(admin, "iso-b") == b_counts
    workflows.down(inv_b, cloud=b, settings=FAST)
    # down stops waiting once Nova lists its servers DELETED (their ports are gone), a
    # moment before they leave the list
    wait_until(lambda: b.observe().empty, timeout=30, interval=0.5,
               what="iso-b's servers to leave the list")


def test_dry_run_then_up_twice_then_error_replaced_then_down(clean_project, tmp_path):
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    inv_path = write_inventory(tmp_path / "inv.toml", name="twice", workers=2)

    plan = json.loads(run_cli("up", "-i", str(inv_path), "--dry-run", "--json", env=env).stdout)
    assert [a["action"] for a in plan["plan"]].count("create_server") == 3
    assert cluster_resources(admin, "twice") == {}
    # the bed's m1.tiny, as Nova reports it, cannot hold the default 2g executors
    assert any(
        n.startswith("spark.limits.executor_memory 2g does not fit in workers.flavor m1.tiny:")
        for n in plan["notes"]
    ), plan["notes"]
    # with single sign-on, the redirect URI to register before the hub exists
    secret = tmp_path / "oidc-secret"
    secret.write_text("from-the-provider\n")
    sso = tmp_path / "sso.toml"
    sso.write_text(inv_path.read_text().replace('floating_ip = ""', 'floating_ip = "172.24.4.99"')
                   + '[jupyterhub]\nauthenticator = "oidc"\nusers = ["alice"]\n'
                   '[jupyterhub.oidc]\nissuer = "https://login.example.org/realms/x"\n'
                   f'client_id = "spark"\nclient_secret_file = "{secret}"\n')  # fmt: skip
    notes = json.loads(run_cli("up", "-i", str(sso), "--dry-run", "--json", env=env).stdout)[
        "notes"]
    assert ("single sign-on through https://login.example.org/realms/x: register the redirect "
            "URI https://172.24.4.99/hub/oauth_callback for client spark at the provider"
            ) in notes, notes

    run_cli("up", "-i", str(inv_path), "--until", "servers", env=env)
    first = cluster_resources(admin, "twice")
    first_ids = sorted(n.id for n in cluster_cloud(load_inventory(inv_path)).list_nodes())
    second = run_cli("up", "-i", str(inv_path), "--no-ssh", "--json", env=env)
    assert json.loads(second.stdout)["plan"] == []
    assert json.loads(second.stdout)["created"] == []
    assert cluster_resources(admin, "twice") == first
    assert sorted(n.id for n in cluster_cloud(load_inventory(inv_path)).list_nodes()) == first_ids

    # a server forced into ERROR (admin reset-state) is deleted and created again by `up`
    inv = load_inventory(inv_path)
    cloud = cluster_cloud(inv)
    broken = next(n for n in cloud.list_nodes() if n.name == "twice-worker-2")
    admin.compute.reset_server_state(broken.id, "error")
    preview = workflows.up(inv, cloud=cloud, user_data=user_data_for(inv), dry_run=True)
    assert [a.describe() for a in preview.actions] == [
        "delete server twice-worker-2 (ERROR)",
        "create server twice-worker-2 (worker, m1.tiny)",
    ]
    replaced = run_cli("up", "-i", str(inv_path), "--no-ssh", env=env)
    assert "created server twice-worker-2" in replaced.stdout
    nodes = {n.name: n for n in cloud.list_nodes()}
    assert {n.status for n in nodes.values()} == {"ACTIVE"} and len(nodes) == 3
    assert nodes["twice-worker-2"].id != broken.id

    down = run_cli("down", "-i", str(inv_path), "--yes", env=env)
    assert "deleted server twice-master" in down.stdout
    assert "deleted keypair sparkstack-twice" in down.stdout
    assert cluster_resources(admin, "twice") == {}


def test_preflight_lists_every_shortfall_and_creates_nothing(clean_project, tmp_path):
    admin = clean_project.admin()
    pid = bed.project_id(admin)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    inv_path = write_inventory(tmp_path / "inv.toml", name="tight", workers=3)
    # limits relative to what the project uses now, so the expected numbers hold even
    # when something else lives in the project
    used = clean_project.user().compute.get_limits().absolute
    fips_used = len(list(admin.network.ips(project_id=pid)))
    rules_used = len(list(admin.network.security_group_rules(project_id=pid)))
    try:
        admin.set_compute_quotas(
            pid, instances=used.instances_used + 2, cores=used.total_cores_used + 2
        )
        admin.set_network_quotas(pid, floatingip=fips_used, security_group_rule=rules_used + 1)
        proc = run_cli("up", "-i", str(inv_path), env=env, check=False)
    finally:
        bed.reset_quotas(admin)
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())
    for expected in (
        "instances: the plan needs 4, the project has 2 left",
        "cores (vCPUs): the plan needs 4, the project has 2 left",
        "floating IPs: the plan needs 1, the project has 0 left",
        "security group rules: the plan needs 4, the project has 1 left",
        "nothing was created",
    ):
        assert expected in err, err
    assert cluster_resources(admin, "tight") == {}


def test_an_unreachable_checksum_source_stops_preflight_and_creates_nothing(
    clean_project, tmp_path
):
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{probe.getsockname()[1]}/spark"
    inv_path = write_inventory(tmp_path / "inv.toml", name="nosum", workers=1, checksums=closed)
    proc = run_cli("up", "-i", str(inv_path), env=env, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    tarball = "spark-4.3.0-bin-hadoop3.tgz"
    assert f"spark.checksums: could not fetch the sha512 of {tarball} ({closed}/" in err
    assert 'Pin it in the inventory instead: spark.sha512 = "<128 hex digits>"' in err
    assert "nothing was created" in err
    assert err.count("spark.checksums: could not fetch") == 1  # once, not once per role
    assert cluster_resources(admin, "nosum") == {}


def test_acme_opens_80_to_everyone_and_the_rest_only_to_allowed_cidrs(clean_project, tmp_path):
    """Read back through the admin API: HTTP-01 validation comes from anywhere, SSH and the
    hub stay behind network.allowed_cidrs."""
    admin = clean_project.admin()
    inv = load_inventory(write_inventory(tmp_path / "inv.toml", name="acmesg"))
    cloud = cluster_cloud(inv)
    sg_id = cloud.create_security_group(
        name="sparkstack-acmesg", cidrs=["203.0.113.0/24"], ports=(22, 443),
        world_ports=(80,),
    )  # fmt: skip
    try:
        rules = {
            (r.remote_ip_prefix, r.port_range_min, r.ether_type)
            for r in admin.network.security_group_rules(security_group_id=sg_id)
            if r.protocol == "tcp"
        }
        assert rules == {
            ("203.0.113.0/24", 22, "IPv4"),
            ("203.0.113.0/24", 443, "IPv4"),
            ("0.0.0.0/0", 80, "IPv4"),
            ("::/0", 80, "IPv6"),
        }
    finally:
        cloud.delete_security_group(sg_id, name="sparkstack-acmesg")


def _ingress(admin, sg_id: str) -> set[tuple]:
    """The group's ingress rules as Neutron holds them, read as admin."""
    return {
        (r.ether_type, r.protocol, r.port_range_min, r.remote_ip_prefix, bool(r.remote_group_id))
        for r in admin.network.security_group_rules(security_group_id=sg_id)
        if r.direction == "ingress"
    }


def test_a_changed_inventory_brings_the_group_to_it_and_keeps_rules_made_by_hand(
    clean_project, tmp_path
):
    """allowed_cidrs narrowed and moved to IPv6, the hub on another port: the next `up`
    closes what the inventory no longer opens, opens the rest, and leaves a rule someone
    added in Horizon; a third `up` has nothing to do."""
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    inv_path = write_inventory(tmp_path / "inv.toml", name="rules", workers=0)
    run_cli("up", "-i", str(inv_path), "--no-ssh", env=env)
    (sg,) = admin.network.security_groups(name="sparkstack-rules", project_id=bed.project_id(admin))
    own = {("IPv4", None, None, None, True), ("IPv6", None, None, None, True)}
    assert _ingress(admin, sg.id) == own | {
        ("IPv4", "tcp", 22, "203.0.113.0/24", False),
        ("IPv4", "tcp", 443, "203.0.113.0/24", False),
    }
    by_hand = {("IPv4", "tcp", 8080, "192.0.2.0/24", False), ("IPv6", "udp", 5000, None, True)}
    user = clean_project.user()
    user.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", ethertype="IPv4", protocol="tcp",
        port_range_min=8080, port_range_max=8080, remote_ip_prefix="192.0.2.0/24",
    )  # fmt: skip
    (default,) = user.network.security_groups(name="default", project_id=sg.project_id)
    user.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", ethertype="IPv6", protocol="udp",
        port_range_min=5000, port_range_max=5010, remote_group_id=default.id,
    )  # fmt: skip

    text = inv_path.read_text().replace(
        '"203.0.113.0/24"', '"203.0.113.128/25", "2001:db8::/48"'
    )
    inv_path.write_text(text + "[jupyterhub]\nport = 8443\n")
    dry = run_cli("up", "-i", str(inv_path), "--dry-run", env=env).stdout
    flat = " ".join(dry.split())
    assert (
        "update security group sparkstack-rules: close tcp 22 from 203.0.113.0/24; "
        "close tcp 443 from 203.0.113.0/24; open tcp 22 from 203.0.113.128/25; "
        "open tcp 8443 from 203.0.113.128/25; open tcp 22 from 2001:db8::/48; "
        "open tcp 8443 from 2001:db8::/48"
    ) in flat, dry
    assert (
        "sparkstack did not make, left as they are: tcp 8080 from 192.0.2.0/24; "
        f"udp 5000-5010 from group {default.id} (IPv6)"
    ) in flat, dry
    assert ("IPv4", "tcp", 443, "203.0.113.0/24", False) in _ingress(admin, sg.id)  # dry

    applied = json.loads(run_cli("up", "-i", str(inv_path), "--no-ssh", "--json", env=env).stdout)
    assert [a["action"] for a in applied["plan"]] == ["update_security_group"]
    assert applied["changed"] == [applied["plan"][0]["description"].removeprefix("update ")]
    assert _ingress(admin, sg.id) == own | by_hand | {
        ("IPv4", "tcp", 22, "203.0.113.128/25", False),
        ("IPv4", "tcp", 8443, "203.0.113.128/25", False),
        ("IPv6", "tcp", 22, "2001:db8::/48", False),
        ("IPv6", "tcp", 8443, "2001:db8::/48", False),
    }
    again = json.loads(run_cli("up", "-i", str(inv_path), "--no-ssh", "--json", env=env).stdout)
    assert again["plan"] == [] and again["changed"] == []

    run_cli("down", "-i", str(inv_path), "--yes", env=env)
    assert cluster_resources(admin, "rules") == {}
