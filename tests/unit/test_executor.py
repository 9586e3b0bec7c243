"""The executor and preflight through the real workflows, on a scripted cloud edge: an
apply does exactly what the dry run lists, in that order; user_data is rendered and sized
in preflight; a bug is not reported as a cloud failure."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from provisioner import plan as P
from provisioner import workflows
from provisioner.commands.common import user_data_renderer
from provisioner.errors import PreflightError, UnexpectedError
from provisioner.inventory import load_inventory
from provisioner.render import MAX_USER_DATA_BASE64, render_cloud_init
from tests.unit.scripted_cloud import ScriptedProject

ROOT = Path(__file__).resolve().parents[2]
FAST = workflows.Settings(max_parallel=4, poll_min=0.001, poll_max=0.01, active_timeout=5)


@pytest.fixture
def inv():
    return load_inventory(ROOT / "tests" / "testbed" / "inventory.testbed.toml")


def render(inv):
    return lambda role, ip: render_cloud_init(inv, role=role, master_ip=ip)


def test_apply_runs_the_actions_in_the_order_the_dry_run_lists_them(inv, tmp_path):
    cloud = ScriptedProject(cluster=inv.cluster.name)
    preview = workflows.up(inv, cloud=cloud, user_data=render(inv), dry_run=True)
    assert cloud.calls == [("list_nodes", "")]  # a dry run only looks

    cloud.calls.clear()
    workflows.up(inv, cloud=cloud, user_data=render(inv), settings=FAST, key_dir=tmp_path)
    changes = [c for c in cloud.calls if c[0] != "list_nodes"]
    # batch by batch as the plan lists them; within a batch the order is free
    batches = [
        [(a.kind, getattr(a, "name", getattr(a, "address", ""))) for a in b]
        for b in P.batches(preview.actions)
    ]
    # security group, keypair, server group and master port; floating IP and servers
    assert [len(b) for b in batches] == [4, 1 + 1 + inv.workers.count]
    at = 0
    for batch in batches:
        assert sorted(changes[at : at + len(batch)]) == sorted(batch)
        at += len(batch)
    assert at == len(changes)
    # the workers of a new cluster go out in one request, the master in its own
    assert sorted(cloud.requests) == sorted([("demo-master", 1), ("demo-worker", 2)])

    cloud.calls.clear()
    again = workflows.up(inv, cloud=cloud, user_data=render(inv), settings=FAST, key_dir=tmp_path)
    assert again.actions == []
    assert [c for c in cloud.calls if c[0] != "list_nodes"] == []


def test_dry_run_renders_every_role_and_reports_its_size(inv):
    cloud = ScriptedProject(cluster=inv.cluster.name)
    res = workflows.up(inv, cloud=cloud, user_data=render(inv), dry_run=True)
    assert set(res.user_data_sizes) == {"master", "worker"}
    for size in res.user_data_sizes.values():
        assert 1000 < size < MAX_USER_DATA_BASE64


def test_oversized_user_data_is_refused_before_anything_exists(inv):
    cloud = ScriptedProject(cluster=inv.cluster.name)

    def oversized(role: str, ip: str) -> str:
        text = render_cloud_init(inv, role=role, master_ip=ip)
        # Random bytes: user_data goes out gzip-compressed, so repeated text would fit.
        noise = random.Random(7).randbytes(54_000).hex() if role == "worker" else ""
        return text + "".join(f"#{noise[i:i + 79]}\n" for i in range(0, len(noise), 79))

    with pytest.raises(PreflightError) as err:
        workflows.up(inv, cloud=cloud, user_data=oversized, settings=FAST)
    assert "worker user_data is" in err.value.message
    assert "over Nova's limit" in err.value.message
    assert "nothing was created" in err.value.message
    assert [c for c in cloud.calls if c[0] != "list_nodes"] == []

    res = workflows.up(inv, cloud=cloud, user_data=oversized, dry_run=True)
    assert any("worker user_data" in p for p in res.problems)
    assert "master" in res.user_data_sizes and "worker" not in res.user_data_sizes


def test_a_bug_is_an_unexpected_error_not_a_cloud_failure(inv, tmp_path):
    cloud = ScriptedProject(cluster=inv.cluster.name, fail_on="create_master_port")
    with pytest.raises(UnexpectedError) as err:
        workflows.up(inv, cloud=cloud, user_data=render(inv), settings=FAST, key_dir=tmp_path)
    assert err.value.exit_code == 1
    assert err.value.message.startswith("unexpected error, please report")
    assert "ValueError: scripted bug in create_master_port" in err.value.message
    assert "`sparkstack down` to remove it" in (err.value.hint or "")


def test_a_missing_private_key_is_refused_before_anything_exists(inv, tmp_path):
    missing = tmp_path / "nope"
    inv = inv.model_copy(update={"ssh": inv.ssh.model_copy(update={"private_key": missing})})
    cloud = ScriptedProject(cluster=inv.cluster.name)
    with pytest.raises(PreflightError) as err:
        workflows.up(inv, cloud=cloud, user_data=render(inv), settings=FAST)
    assert f"private key {missing} (ssh.private_key) not found" in err.value.message
    assert [c for c in cloud.calls if c[0] != "list_nodes"] == []


def test_an_unreachable_checksum_source_is_a_preflight_error_and_nothing_is_created(inv):
    """An inventory that pins no hash: the renderer `up` uses asks spark.checksums (here a
    loopback port nothing listens on) during preflight, which then refuses, saying how
    to pin the hash, before anything exists; a dry run lists the same problem."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/spark"
    spark = inv.spark.model_copy(
        update={"sha512": None, "mirror": "https://mirror.example.org/spark", "checksums": [closed]}
    )
    inv = inv.model_copy(update={"spark": spark})
    cloud = ScriptedProject(cluster=inv.cluster.name)

    with pytest.raises(PreflightError) as err:
        workflows.up(inv, cloud=cloud, user_data=user_data_renderer(inv), settings=FAST)

    message = " ".join(err.value.message.split())
    assert f"spark.checksums: could not fetch the sha512 of {spark.tarball_name()} ({closed}/" in (
        message
    )
    assert 'Pin it in the inventory instead: spark.sha512 = "<128 hex digits>"' in message
    assert message.count("could not fetch") == 1  # one cause, not one per role
    assert "nothing was created" in message
    assert [c for c in cloud.calls if c[0] != "list_nodes"] == []

    res = workflows.up(inv, cloud=cloud, user_data=user_data_renderer(inv), dry_run=True)
    assert [p for p in res.problems if "spark.checksums" in p] != []
