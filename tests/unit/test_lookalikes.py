"""A keypair named like the cluster's is the cluster's only when its public key is the one
this machine holds for it; through the real workflows on a scripted cloud edge."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provisioner import plan as P
from provisioner import workflows
from provisioner.errors import PreflightError
from provisioner.inventory import load_inventory
from provisioner.keys import ensure_generated_key
from provisioner.render import render_cloud_init
from provisioner.workflows.lookalikes import same_key
from tests.unit.scripted_cloud import ScriptedProject

ROOT = Path(__file__).resolve().parents[2]
FAST = workflows.Settings(max_parallel=4, poll_min=0.001, poll_max=0.01, active_timeout=5)


@pytest.fixture
def inv():
    return load_inventory(ROOT / "tests" / "testbed" / "inventory.testbed.toml")


def render(inv):
    return lambda role, ip: render_cloud_init(inv, role=role, master_ip=ip)


def another_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def squatted(inv, key: str) -> ScriptedProject:
    cloud = ScriptedProject(cluster=inv.cluster.name)
    name = f"sparkstack-{inv.cluster.name}"
    cloud.refs["keypair"] = P.Ref(name, name, key)
    return cloud


@pytest.mark.parametrize("local", [False, True], ids=["no-local-key", "other-local-key"])
def test_up_refuses_a_keypair_that_is_not_the_clusters_and_creates_nothing(inv, tmp_path, local):
    if local:
        ensure_generated_key(tmp_path)
    cloud = squatted(inv, another_key())
    with pytest.raises(PreflightError) as err:
        workflows.up(inv, cloud=cloud, user_data=render(inv), settings=FAST, key_dir=tmp_path)
    why = "its public key is not this cluster's" if local else "this machine holds no key for it"
    assert f"keypair sparkstack-demo ({why}) has cluster demo's name" in err.value.message
    assert [c for c in cloud.calls if c[0] != "list_nodes"] == []


def test_up_uses_the_keypair_when_it_holds_this_machines_key(inv, tmp_path):
    own = ensure_generated_key(tmp_path)
    cloud = squatted(inv, own + " a different comment")
    res = workflows.up(inv, cloud=cloud, user_data=render(inv), settings=FAST, key_dir=tmp_path)
    assert not any(isinstance(a, P.CreateKeypair) for a in res.actions)


def test_down_leaves_a_keypair_that_is_not_the_clusters_and_says_so(inv, tmp_path):
    ensure_generated_key(tmp_path)
    cloud = squatted(inv, another_key())
    res = workflows.down(inv, cloud=cloud, settings=FAST, key_dir=tmp_path)
    assert ("delete_keypair", "sparkstack-demo") not in cloud.calls
    assert any(n.startswith("left keypair sparkstack-demo") for n in res.notes)


def test_down_deletes_the_keypair_that_holds_this_machines_key(inv, tmp_path):
    cloud = squatted(inv, ensure_generated_key(tmp_path))
    res = workflows.down(inv, cloud=cloud, settings=FAST, key_dir=tmp_path)
    assert "keypair sparkstack-demo" in res.deleted
    assert not (tmp_path / "id_ed25519").exists()


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("ssh-ed25519 AAAA x@y", "ssh-ed25519 AAAA", True),
        ("ssh-ed25519 AAAA", "ssh-ed25519 AAAB", False),
        ("ssh-ed25519 AAAA", "ssh-rsa AAAA", False),
        ("", "", False),
    ],
)
def test_same_key_compares_type_and_key_not_the_comment(a, b, same):
    assert same_key(a, b) is same
