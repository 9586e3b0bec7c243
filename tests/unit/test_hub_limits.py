"""Per-user limits: the inventory's keys, the reckoning from the master's size, the
refusal of limits a flavor cannot give, and the spawner the hub's config defines.

The spawner runs here against a stand-in LocalProcessSpawner that records the command it
would start: what it must get right is that command. The real systemd enforcing it runs
in tests/e2e/test_hub_limits.py.
"""

from __future__ import annotations

import asyncio
import sys
import types
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from provisioner import plan as P
from provisioner import workflows
from provisioner.errors import InventoryError, PreflightError
from provisioner.hub import HubPaths, HubSettings, render_config, render_unit
from provisioner.hub.limits import (
    AppliedLimits,
    render_users_slice,
)
from provisioner.inventory import load_inventory, parse_inventory
from provisioner.render import render_cloud_init
from tests.unit.scripted_cloud import ScriptedProject
from tests.unit.test_hub_config import _Recorder

ROOT = Path(__file__).resolve().parents[2]
BED = ROOT / "tests" / "testbed" / "inventory.testbed.toml"
MIB = 1024 * 1024


def _data(**limits) -> dict:
    import tomllib

    data = tomllib.loads(BED.read_text())
    data.setdefault("jupyterhub", {})["limits"] = limits
    return data


def _problems(data: dict) -> list[str]:
    with pytest.raises(InventoryError) as err:
        parse_inventory(data, source="<case>")
    return [line.strip() for line in err.value.message.splitlines()[1:]]


def test_limits_default_to_auto_and_take_sizes_and_cores():
    inv = parse_inventory(_data(), source="<case>")
    assert (inv.jupyterhub.limits.memory_limit_mib(), inv.jupyterhub.limits.cpu_limit()) == (
        None, None)
    inv = parse_inventory(_data(memory="3G", cpu=1.5), source="<case>")
    assert (inv.jupyterhub.limits.memory_limit_mib(), inv.jupyterhub.limits.cpu_limit()) == (
        3072, 1.5)
    inv = parse_inventory(_data(memory="Auto", cpu="auto", ), source="<case>")
    assert inv.jupyterhub.limits.memory == "auto"


@pytest.mark.parametrize(("limits", "expected"), [
    ({"memory": "lots"}, 'jupyterhub.limits.memory: must be "auto" or a size like "2g"'),
    ({"cpu": "two"}, 'jupyterhub.limits.cpu: must be "auto" or a number of cores like 1.5, '
                     'got "two"'),
    ({"cpu": 0}, "jupyterhub.limits.cpu: must be between 0.01 and 4096 cores, got 0"),
    ({"cpu": True}, 'jupyterhub.limits.cpu: must be "auto" or a number of cores'),
    # the bed's driver_memory is 512m: a notebook needs 1024 MiB
    ({"memory": "1000m"}, 'jupyterhub.limits.memory: "1000m" (1000 MiB) is less than one '
                          'notebook needs: spark.limits.driver_memory "512m" plus 512 MiB for '
                          "its JVM, server and kernel = 1024 MiB"),
    ({"memroy": "2g"}, "jupyterhub.limits.memroy"),
])
def test_bad_limits_are_refused_naming_the_key(limits, expected):
    lines = _problems(_data(**limits))
    assert len(lines) == 1 and lines[0].startswith(expected), lines


@pytest.mark.parametrize(("ram", "vcpus", "users", "memory", "cpu", "expected"), [
    # 8 GiB, 4 vCPUs, 2 users: (8192 - 1536) / 2 each, 2 cores each (of 3 spare)
    (8192, 4, 2, None, None, (3328, 2.0, 6656)),
    # one user alone: all the room, and all CPUs but the core's one
    (8192, 4, 1, None, None, (6656, 3.0, 6656)),
    # many users: never less than one notebook (driver 1024 + 512), at least one core
    (4096, 2, 10, None, None, (1536, 1.0, 2560)),
    # a master too small for the core: the room is still one notebook
    (1024, 1, 2, None, None, (1536, 1.0, 1536)),
    # single sign-on by groups alone lists nobody: reckoned as two users
    (8192, 8, 0, None, None, (3328, 4.0, 6656)),
    # the inventory's own values win; the users' slice holds at least one of them
    (8192, 4, 2, 4096, 0.5, (4096, 0.5, 6656)),
    (2048, 4, 2, 2048, None, (2048, 2.0, 2048)),
])
def test_user_limits(ram, vcpus, users, memory, cpu, expected):
    limits = P.user_limits(ram_mib=ram, vcpus=vcpus, users=users, driver_mib=1024,
                           memory_mib=memory, cpu=cpu)
    assert (limits.memory_mib, limits.cpu, limits.users_memory_mib) == expected


def test_limits_a_flavor_cannot_give_are_named_with_the_numbers():
    flavor = P.Flavor(name="m1.medium", vcpus=2, ram=4096, disk=20)
    assert P.limits_shortfalls(flavor, memory_mib=2560, cpu=2.0) == []
    assert P.limits_shortfalls(flavor, memory_mib=None, cpu=None) == []
    assert P.limits_shortfalls(None, memory_mib=99999, cpu=99.0) == []
    memory, cpu = P.limits_shortfalls(flavor, memory_mib=3072, cpu=2.5)
    assert memory.startswith(
        "jupyterhub.limits.memory (3072 MiB per user) is more than master.flavor m1.medium "
        "has for notebooks: 4096 MiB less 1536 for the hub, its proxy and the Spark master "
        "= 2560 MiB")
    assert cpu.startswith("jupyterhub.limits.cpu (2.5 per user) is more than master.flavor "
                          "m1.medium has: 2 vCPUs")


def test_up_refuses_limits_the_master_flavor_cannot_give_before_creating_anything(
        tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    inv = load_inventory(BED)
    hub = inv.jupyterhub.model_copy(update={"limits": inv.jupyterhub.limits.model_copy(
        update={"memory": "2g", "cpu": 2.0})})
    inv = inv.model_copy(update={"jupyterhub": hub})
    cloud = ScriptedProject(cluster=inv.cluster.name)  # its flavors: 512 MiB, 1 vCPU

    def user_data(role, ip):
        return render_cloud_init(inv, role=role, master_ip=ip)

    res = workflows.up(inv, cloud=cloud, user_data=user_data, dry_run=True)
    assert [p.split(" (")[0] for p in res.problems] == [
        "jupyterhub.limits.memory", "jupyterhub.limits.cpu"], res.problems
    with pytest.raises(PreflightError) as err:
        workflows.up(inv, cloud=cloud, user_data=user_data)
    assert "nothing was created" in err.value.message
    assert "jupyterhub.limits.memory (2048 MiB per user)" in err.value.message
    assert cloud.posts() == []


# --- the hub's config ---------------------------------------------------------------


class _LocalProcessSpawner:
    """Records what LocalProcessSpawner.start would run, with which preexec_fn."""

    def __init__(self, name: str, cmd: list[str]) -> None:
        self.user = SimpleNamespace(name=name)
        self.cmd = cmd
        self.mem_limit = 0
        self.cpu_limit = 0.0
        self.started: list[list[str]] = []

    async def start(self):
        self.started.append(list(self.cmd))
        return ("127.0.0.1", 12345)


def _settings(tmp_path: Path) -> HubSettings:
    return HubSettings(
        users=("alice", "bob"), admins=("alice",), port=443,
        spark_master_url="spark://10.0.0.5:7077", addresses=("10.0.0.5",),
        paths=HubPaths(config_dir=str(tmp_path / "etc"), state_dir=str(tmp_path / "state")),
    )


def _load(settings: HubSettings, limits: AppliedLimits | None, monkeypatch) -> _Recorder:
    for path in (settings.paths.proxy_token, settings.paths.smoke_token):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("token\n")
    fake = types.ModuleType("jupyterhub.spawner")
    fake.LocalProcessSpawner = _LocalProcessSpawner  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jupyterhub", types.ModuleType("jupyterhub"))
    monkeypatch.setitem(sys.modules, "jupyterhub.spawner", fake)
    c = _Recorder()
    exec(render_config(settings, limits=limits), {"get_config": lambda: c})
    return c


LIMITS = P.UserLimits(memory_mib=2048, cpu=1.5, users_memory_mib=6656)


def test_each_server_runs_in_a_scope_of_its_own_with_the_users_limits(tmp_path, monkeypatch):
    c = _load(_settings(tmp_path), AppliedLimits(LIMITS, enforced=True), monkeypatch)
    assert (c.Spawner.mem_limit, c.Spawner.cpu_limit) == (2048 * MIB, 1.5)
    spawner_class = c.JupyterHub.spawner_class
    assert issubclass(spawner_class, _LocalProcessSpawner)
    base = list(c.Spawner.cmd)
    spawner = spawner_class("root", base)  # an account every machine has
    spawner.mem_limit, spawner.cpu_limit = c.Spawner.mem_limit, c.Spawner.cpu_limit
    assert asyncio.run(spawner.start()) == ("127.0.0.1", 12345)
    (command,) = spawner.started
    at = command.index("--")
    scope, rest = command[:at], command[at + 1:]
    assert scope[:4] == ["/usr/bin/systemd-run", "--scope", "--quiet", "--collect"]
    assert scope[4].startswith("--unit=sparkstack-user-root-")
    assert scope[5:] == ["--slice=sparkstack-users.slice", f"--property=MemoryMax={2048 * MIB}",
                         "--property=CPUQuota=150%"]
    # setpriv becomes the user (groups included: the Spark client group), then the server
    assert rest[:5] == ["/usr/bin/setpriv", "--reuid=0", "--regid=0", "--init-groups", "--"]
    assert rest[5:] == base
    assert spawner.cmd == base, "the prefix is added per start, never kept"
    # a second start gets a scope of its own (a dead one's name may linger a moment)
    asyncio.run(spawner.start())
    assert spawner.started[1][4] != command[4]
    # the hub stays root until systemd-run: the preexec only changes directory
    preexec = spawner.make_preexec_fn("root")
    here = Path.cwd()
    try:
        preexec()
        assert Path.cwd() == Path("/root") or not Path("/root").is_dir()
    finally:
        import os

        os.chdir(here)


def test_without_systemd_the_limits_are_stated_but_servers_spawn_as_before(
        tmp_path, monkeypatch):
    c = _load(_settings(tmp_path), AppliedLimits(LIMITS, enforced=False), monkeypatch)
    assert c.Spawner.mem_limit == 2048 * MIB
    assert not hasattr(c.JupyterHub, "spawner_class")
    assert "NOT enforced" in AppliedLimits(LIMITS, enforced=False).describe()
    c = _load(_settings(tmp_path), None, monkeypatch)
    assert not hasattr(c.Spawner, "mem_limit")


def test_the_users_slice_leaves_the_core_its_memory_and_the_hub_runs_beside_spark(tmp_path):
    text = render_users_slice(LIMITS)
    assert f"MemoryMax={6656 * MIB}" in text.splitlines()
    unit = render_unit(_settings(tmp_path))
    assert "Slice=sparkstack-core.slice" in unit.splitlines()
    assert "OOMScoreAdjust=-500" in unit.splitlines()
    inv = load_inventory(BED)
    master = render_cloud_init(inv, role="master", master_ip="10.0.0.5")
    worker = render_cloud_init(inv, role="worker", master_ip="10.0.0.5")
    assert "Slice=sparkstack-core.slice" in master and "OOMScoreAdjust=-500" in master
    assert "Slice=" not in worker and "OOMScoreAdjust" not in worker


def test_settings_carry_the_inventorys_limits():
    inv = parse_inventory(_data(memory="3g", cpu=2), source="<case>")
    settings = HubSettings.from_inventory(inv, master_ip="10.0.0.5")
    assert (settings.user_memory_mib, settings.user_cpu, settings.driver_mib) == (3072, 2.0, 512)
    settings = replace(settings, user_memory_mib=None)
    assert settings.user_memory_mib is None
