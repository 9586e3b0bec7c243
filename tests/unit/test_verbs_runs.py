"""up, scale and down through the real workflows on a scripted cloud edge: each builds its
run the same way (the inventory's parallelism, the cluster's key directory), and scale
waits for exactly the workers it asked for and refuses a cluster without a master."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner import plan as P
from provisioner import workflows
from provisioner.errors import UserInputError
from provisioner.inventory import load_inventory
from provisioner.render import render_cloud_init
from tests.unit.scripted_cloud import ScriptedProject

ROOT = Path(__file__).resolve().parents[2]
FAST = workflows.Settings(max_parallel=4, poll_min=0.001, poll_max=0.01, active_timeout=5)


@pytest.fixture
def inv(tmp_path, monkeypatch):
    # the cluster's key directory (config_dir) under the test's own directory
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return load_inventory(ROOT / "tests" / "testbed" / "inventory.testbed.toml")


def render(inv):
    return lambda role, ip: render_cloud_init(inv, role=role, master_ip=ip)


def test_scale_refuses_a_cluster_without_a_master_before_anything_changes(inv):
    cloud = ScriptedProject(cluster=inv.cluster.name)
    for dry_run in (True, False):
        with pytest.raises(UserInputError) as err:
            workflows.scale(inv, workers=3, cloud=cloud, user_data=render(inv), dry_run=dry_run)
        assert err.value.message == f"cluster {inv.cluster.name} has no master"
        assert "sparkstack up" in (err.value.hint or "")
    assert [c for c in cloud.calls if c[0] != "list_nodes"] == []


def test_scale_up_then_down_changes_only_the_workers_and_hands_over_the_new_ones(inv):
    cloud = ScriptedProject(cluster=inv.cluster.name)
    workflows.up(inv, cloud=cloud, user_data=render(inv), settings=FAST, until="servers")
    before = {n.name for n in cloud.list_nodes()}
    wanted = inv.workers.count + 2

    cloud.calls.clear()
    handed: list[P.Observed] = []
    hooks = workflows.Hooks(after_servers_active=handed.append)
    res = workflows.scale(inv, workers=wanted, cloud=cloud, user_data=render(inv),
                          settings=FAST, hooks=hooks)  # fmt: skip
    added = {f"{inv.cluster.name}-worker-{i}" for i in (wanted - 1, wanted)}
    assert sorted(cloud.posts()) == sorted(added)
    assert len(handed) == 1 and {w.name for w in handed[0].workers()} >= added
    assert res.observed is not None
    assert {n.name for n in res.observed.nodes} == before | added
    assert all(n.status == "ACTIVE" for n in res.observed.nodes)

    # nothing to create: the hook is not called again
    again = workflows.scale(inv, workers=wanted, cloud=cloud, user_data=render(inv),
                            settings=FAST, hooks=hooks)  # fmt: skip
    assert again.actions == [] and len(handed) == 1

    removed: list[str] = []
    hooks = workflows.Hooks(decommission=lambda _, nodes: removed.extend(n.name for n in nodes))
    res = workflows.scale(inv, workers=inv.workers.count, cloud=cloud, user_data=render(inv),
                          settings=FAST, hooks=hooks)  # fmt: skip
    assert sorted(removed) == sorted(added)
    assert {n.name for n in cloud.list_nodes()} == before


def test_down_deletes_the_servers_and_the_cluster_files_in_its_key_directory(inv, tmp_path):
    cloud = ScriptedProject(cluster=inv.cluster.name)
    cloud.add(f"{inv.cluster.name}-master", P.MASTER, 0)
    cloud.add(f"{inv.cluster.name}-worker-1", P.WORKER, 1)
    key_dir = tmp_path / "sparkstack" / inv.cluster.name
    key_dir.mkdir(parents=True)
    (key_dir / "known_hosts").write_text("")

    res = workflows.down(inv, cloud=cloud, settings=FAST)
    assert cloud.list_nodes() == []
    assert res.deleted[-1] == f"local file {key_dir / 'known_hosts'}"
    assert not key_dir.exists()
    assert workflows.down(inv, cloud=cloud, dry_run=True).actions == []


def stack_cluster(inv, stack: str = "st") -> ScriptedProject:
    """A cluster a Heat stack made (`render --heat`): its servers name the stack."""
    cloud = ScriptedProject(cluster=inv.cluster.name)
    cloud.add(f"{inv.cluster.name}-master", P.MASTER, 0, stack=stack)
    cloud.add(f"{inv.cluster.name}-worker-1", P.WORKER, 1, stack=stack)
    return cloud


def test_down_deletes_a_clusters_heat_stack_before_anything_else(inv):
    cloud = stack_cluster(inv)
    res = workflows.down(inv, cloud=cloud)
    changes = [c for c in cloud.calls if c[0] not in ("list_nodes",)]
    assert changes[0] == ("delete_stack", "st")
    # the stack took its servers: none is deleted one by one behind Heat's back
    assert not [c for c in changes if c[0] == "delete_server"]
    assert "Heat stack st" in res.deleted
    assert any("Heat stack st" in note for note in res.notes)
    assert cloud.names() == []


def test_a_dry_run_down_of_a_stack_says_so_and_deletes_nothing(inv):
    cloud = stack_cluster(inv)
    res = workflows.down(inv, cloud=cloud, dry_run=True)
    assert any("Heat stack st" in note for note in res.notes)
    assert [c for c in cloud.calls if c[0] != "list_nodes"] == []


def test_up_leaves_a_stacks_servers_to_the_stack(inv):
    cloud = stack_cluster(inv)
    for dry_run in (True, False):
        with pytest.raises(UserInputError) as err:
            workflows.up(inv, cloud=cloud, user_data=render(inv), dry_run=dry_run)
        assert "Heat stack st" in err.value.message
        assert "sparkstack scale" in (err.value.hint or "")
    assert [c for c in cloud.calls if c[0] != "list_nodes"] == []


def test_scale_resizes_a_stack_draining_the_workers_that_go_and_handing_over_new_ones(inv):
    cloud = stack_cluster(inv)
    handed: list[P.Observed] = []
    drained: list[str] = []
    def drain(_: P.Observed, nodes) -> None:
        drained.extend(n.name for n in nodes)

    hooks = workflows.Hooks(after_servers_active=handed.append, decommission=drain)
    name = inv.cluster.name

    preview = workflows.scale(inv, workers=3, cloud=cloud, user_data=render(inv), dry_run=True)
    assert any("worker_count 1 -> 3" in note for note in preview.notes)
    assert [c for c in cloud.calls if c[0] != "list_nodes"] == []

    res = workflows.scale(inv, workers=3, cloud=cloud, user_data=render(inv), hooks=hooks)
    assert ("resize_stack", "st 3") in cloud.calls
    assert not cloud.posts()  # Heat makes the servers, not sparkstack
    assert res.created == [f"server {name}-worker-2", f"server {name}-worker-3"]
    assert len(handed) == 1 and drained == []

    cloud.calls.clear()
    res = workflows.scale(inv, workers=1, cloud=cloud, user_data=render(inv), hooks=hooks)
    assert drained == [f"{name}-worker-2", f"{name}-worker-3"]
    # drained first, then the stack shrinks
    kinds = [c[0] for c in cloud.calls if c[0] != "list_nodes"]
    assert kinds == ["resize_stack"]
    assert res.deleted == [f"server {name}-worker-2", f"server {name}-worker-3"]
    assert cloud.names() == [f"{name}-master", f"{name}-worker-1"]
    assert len(handed) == 1  # nothing new to hand over

    again = workflows.scale(inv, workers=1, cloud=cloud, user_data=render(inv), hooks=hooks)
    assert again.actions == [] and again.notes == []


def test_up_says_what_the_flavors_cannot_hold_but_not_for_an_image_builder(inv):
    """The scripted project's flavors have 512 MiB: too little for the bed inventory's two
    users' notebooks (and its 512m executors fit a worker that small only just)."""
    cloud = ScriptedProject(cluster=inv.cluster.name)
    res = workflows.up(inv, cloud=cloud, user_data=render(inv), dry_run=True)
    assert [n.split(" has ")[0].split(":")[0] for n in res.notes] == [
        "master.flavor m1.tiny", "jupyterhub.limits"], res.notes
    assert "so about 0 can work at once" in res.notes[0]
    # The users' limits, "auto" from the flavor: one notebook each (spark.limits.driver_memory
    # 512m plus 512 MiB), as nothing is left after the core's 1536 MiB.
    assert res.notes[1].startswith(
        "jupyterhub.limits: 1024 MiB and 1 CPU per user, 1024 MiB for all users together, "
        "enforced by systemd"), res.notes[1]
    assert 'memory and cpu "auto" from master.flavor m1.tiny (512 MiB, 1 vCPU)' in res.notes[1]
    builder = P.Desired(cluster="builder", workers=0, master_flavor="m1.large",
                        worker_flavor="m1.large", allowed_cidrs=("203.0.113.0/24",))  # fmt: skip
    res = workflows.up(inv, cloud=cloud, user_data=render(inv), dry_run=True, desired=builder)
    assert res.notes == []
