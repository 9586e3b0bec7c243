"""Things that look like the cluster's but are not, on the real OpenStack bed: a keypair
named like the generated one with someone else's public key, a server and a port
with the cluster's names but none of its tags, and a server group named like the
cluster's that holds someone else's server. `up` refuses naming each and creates
nothing; `down` deletes the real cluster around them, leaves them and says so."""

# ruff: noqa: F811  (pytest fixtures imported from the test bed are named as arguments)
from __future__ import annotations

import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner import workflows
from provisioner.inventory import load_inventory
from provisioner.keys import config_dir, ensure_generated_key
from tests.cloud.test_workflows import (
    FAST,
    cli_env,
    cluster_cloud,
    cluster_resources,
    run_cli,
    user_data_for,
    write_inventory,
)
from tests.testbed import bed
from tests.testbed.fixtures import clean_project, testbed  # noqa: F401

pytestmark = pytest.mark.cloud


@pytest.fixture(autouse=True)
def _xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def someone_elses_key() -> str:
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def remove(user, server, port_id: str = "") -> None:
    """The test's own look-alikes, which sparkstack rightly left."""
    user.compute.delete_server(server.id)
    user.compute.wait_for_delete(server, wait=120)
    if port_id:
        user.network.delete_port(port_id)


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("local_key", [False, True], ids=["no-local-key", "other-local-key"])
def test_a_keypair_with_the_clusters_name_and_another_key_is_never_used(
    local_key, clean_project, tmp_path
):
    name = "kpx"
    user, admin = clean_project.user(), clean_project.admin()
    foreign = someone_elses_key()
    user.compute.create_keypair(name=f"sparkstack-{name}", public_key=foreign)
    if local_key:  # this machine holds a key for the cluster: not that one
        ensure_generated_key(config_dir(name))
    why = "its public key is not this cluster's" if local_key else "this machine holds no key"
    inv = write_inventory(tmp_path / "inv.toml", name=name, workers=1)
    env = cli_env(tmp_path, clean_project.clouds_yaml)

    proc = run_cli("up", "-i", str(inv), "--no-ssh", env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    err = one_line(proc.stderr)
    assert f"keypair sparkstack-{name} ({why}" in err
    assert "is not the cluster's: sparkstack will not use, change or delete it" in err
    assert cluster_resources(admin, name) == {"keypair": 1}  # nothing created

    proc = run_cli("down", "-i", str(inv), "--yes", env=env)
    assert f"left keypair sparkstack-{name}" in one_line(proc.stdout)
    kept = user.compute.find_keypair(f"sparkstack-{name}", ignore_missing=False)
    assert kept.public_key.split()[:2] == foreign.split()[:2]  # unchanged
    user.compute.delete_keypair(kept.name)
    if local_key:  # kept by sparkstack too (not the keypair's key): the test's own, gone
        assert (config_dir(name) / "id_ed25519").exists()
        shutil.rmtree(config_dir(name))


def test_a_server_and_port_with_the_clusters_names_are_never_adopted_or_deleted(
    clean_project, tmp_path
):
    name = "lookx"
    user, admin = clean_project.user(), clean_project.admin()
    net = user.network.find_network(bed.PRIVATE_NET["name"], ignore_missing=False)
    image = user.image.find_image(bed.IMAGE["name"], ignore_missing=False)
    flavor = user.compute.find_flavor("m1.tiny", ignore_missing=False)
    port = user.network.create_port(network_id=net.id, name=f"{name}-master-port")
    server = user.compute.create_server(
        name=f"{name}-master", image_id=image.id, flavor_id=flavor.id,
        networks=[{"uuid": net.id}],
    )  # fmt: skip
    user.compute.wait_for_server(server, wait=120)
    inv = write_inventory(tmp_path / "inv.toml", name=name, workers=0)
    env = cli_env(tmp_path, clean_project.clouds_yaml)

    proc = run_cli("up", "-i", str(inv), "--no-ssh", env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    err = one_line(proc.stderr)
    assert f"server {name}-master ({server.id}) has cluster {name}'s name but is not" in err
    assert f"port {name}-master-port ({port.id}) has cluster {name}'s name" in err
    assert cluster_resources(admin, name) == {"server": 1, "port": 2}  # theirs only

    proc = run_cli("down", "-i", str(inv), "--yes", env=env)
    out = one_line(proc.stdout)
    assert f"left server {name}-master ({server.id})" in out
    assert f"left port {name}-master-port ({port.id})" in out
    assert user.compute.get_server(server.id).name == f"{name}-master"
    assert user.network.get_port(port.id).name == f"{name}-master-port"
    remove(user, server, port.id)


def test_a_server_group_with_the_clusters_name_and_someone_elses_server_is_left_alone(
    clean_project, tmp_path
):
    """A server group carries no identity: one named like the cluster's that holds a
    server of someone else's is theirs. (A member Nova no longer has is not someone
    else's: test_fault_matrix's ERROR test lists one.)"""
    name = "groupx"
    user, admin = clean_project.user(), clean_project.admin()
    group = user.compute.create_server_group(
        name=f"sparkstack-{name}-workers", policies=["soft-anti-affinity"]
    )
    net = user.network.find_network(bed.PRIVATE_NET["name"], ignore_missing=False)
    image = user.image.find_image(bed.IMAGE["name"], ignore_missing=False)
    flavor = user.compute.find_flavor("m1.tiny", ignore_missing=False)
    theirs = user.compute.create_server(
        name="their-box", image_id=image.id, flavor_id=flavor.id,
        networks=[{"uuid": net.id}], scheduler_hints={"group": group.id},
    )  # fmt: skip
    user.compute.wait_for_server(theirs, wait=120)
    assert user.compute.get_server_group(group.id).member_ids == [theirs.id]
    inv = write_inventory(tmp_path / "inv.toml", name=name, workers=1)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    try:
        proc = run_cli("up", "-i", str(inv), "--no-ssh", env=env, check=False)
        assert proc.returncode == 2, proc.stderr
        err = one_line(proc.stderr)
        assert (
            f"server group sparkstack-{name}-workers ({group.id}), whose members are other "
            f"servers has cluster {name}'s name but is not the cluster's" in err
        ), err
        assert cluster_resources(admin, name) == {"server_group": 1}  # theirs only

        proc = run_cli("down", "-i", str(inv), "--yes", env=env)
        assert f"left server group sparkstack-{name}-workers ({group.id})" in one_line(
            proc.stdout
        ), proc.stdout
        assert user.compute.get_server_group(group.id).member_ids == [theirs.id]
    finally:
        remove(user, theirs)
        user.compute.delete_server_group(group.id)


def test_down_removes_the_cluster_and_leaves_a_lookalike_worker_beside_it(clean_project, tmp_path):
    name = "besidex"
    user, admin = clean_project.user(), clean_project.admin()
    inv_path = write_inventory(tmp_path / "inv.toml", name=name, workers=0)
    inv = load_inventory(inv_path)
    workflows.up(inv, cloud=cluster_cloud(inv), user_data=user_data_for(inv), settings=FAST)
    net = user.network.find_network(bed.PRIVATE_NET["name"], ignore_missing=False)
    image = user.image.find_image(bed.IMAGE["name"], ignore_missing=False)
    flavor = user.compute.find_flavor("m1.tiny", ignore_missing=False)
    stray = user.compute.create_server(
        name=f"{name}-worker-1", image_id=image.id, flavor_id=flavor.id,
        networks=[{"uuid": net.id}],
    )  # fmt: skip
    user.compute.wait_for_server(stray, wait=120)
    env = cli_env(tmp_path, clean_project.clouds_yaml)

    proc = run_cli("down", "-i", str(inv_path), "--yes", env=env)
    out = one_line(proc.stdout)
    assert f"deleted server {name}-master" in out
    assert f"left server {name}-worker-1 ({stray.id})" in out
    # only the stray server and its own port are left
    assert cluster_resources(admin, name) == {"server": 1, "port": 1}
    assert user.compute.get_server(stray.id).status == "ACTIVE"
    remove(user, stray)
