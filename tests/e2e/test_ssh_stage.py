"""The SSH stage of `up`, through the CLI as a user runs it, on servers that really boot:
host keys read from Nova's console API and pinned, logins through the master, the ready
marker waited on; a node whose boot fails makes `up` exit 4 quoting its log, and `down`
still removes everything."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from provisioner.render import READY_MARKER
from tests.cloud.test_workflows import cli_env, cluster_resources, run_cli
from tests.testbed.hosts import hosts

from .conftest import wait_for

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BED_INVENTORY = ROOT / "tests" / "testbed" / "inventory.testbed.toml"


def inventory(path: Path, *, name: str, workers: int, sha512: str = "") -> Path:
    """The bed's inventory under another cluster name and size (optionally a pinned hash)."""
    text = BED_INVENTORY.read_text()
    text = re.sub(r'(?m)^name = "demo"$', f'name = "{name}"', text)
    text = re.sub(r"(?m)^count = \d+$", f"count = {workers}", text)
    if sha512:
        text = text.replace('[spark]\n', f'[spark]\nsha512 = "{sha512}"\n', 1)
    path.write_text(text)
    return path


def hosts_of(admin, cluster: str) -> list[hosts.Host]:
    ids = {s.id for s in admin.compute.servers(all_projects=True) if s.name.startswith(cluster)}
    return [h for h in hosts.list_hosts() if h.server_id in ids]


def test_up_until_ssh_pins_console_keys_and_waits_for_every_node(hostbed, clean_project, tmp_path):
    admin = clean_project.admin()
    inv = inventory(tmp_path / "inv.toml", name="sshok", workers=1)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    started = time.monotonic()
    try:
        proc = run_cli("up", "-i", str(inv), "--until", "ssh", env=env, check=False, timeout=900)
        took = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr
        assert "all 2 node(s) booted and reachable over SSH" in proc.stderr
        # progress named each phase of each node on the way
        for phase in ("host keys", "cloud-init", "ready"):
            assert f"sshok-worker-1: {phase}" in proc.stderr, proc.stderr
        booted = hosts_of(admin, "sshok")
        assert len(booted) == 2
        assert all(h.file(READY_MARKER).exists() for h in booted)
        # nothing of the user's own ssh setup was touched: no known_hosts written anywhere
        assert not (tmp_path / "config" / "sparkstack" / "sshok" / "known_hosts").exists()
        hostbed.timings["up 1+1 --until ssh"] = took

        again = run_cli("up", "-i", str(inv), "--until", "ssh", env=env, check=False)
        assert again.returncode == 0, again.stderr
        assert "nothing to create" in again.stdout
    finally:
        run_cli("down", "-i", str(inv), "--yes", env=env, check=False)
    assert cluster_resources(admin, "sshok") == {}


def test_a_failed_boot_exits_4_naming_the_node_step_and_log(hostbed, clean_project, tmp_path):
    admin = clean_project.admin()
    wrong = "0" * 128  # a pinned hash the tarball does not have: the spark step fails
    inv = inventory(tmp_path / "inv.toml", name="sshbad", workers=0, sha512=wrong)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    booted: list[hosts.Host] = []
    try:
        proc = run_cli("up", "-i", str(inv), "--until", "ssh", env=env, check=False, timeout=900)
        booted = hosts_of(admin, "sshbad")
        err = " ".join(proc.stderr.split())
        assert proc.returncode == 4, proc.stderr
        assert "[cloud-init] sshbad-master: boot failed in step spark" in err, proc.stderr
        assert "--- last lines of the log ---" in proc.stderr
        assert "sha512 MISMATCH" in proc.stderr  # the quoted tail of cloud-init's output
        assert "`sparkstack down` to remove it" in err
    finally:
        down = run_cli("down", "-i", str(inv), "--yes", env=env, check=False)
    assert down.returncode == 0, down.stderr
    assert cluster_resources(admin, "sshbad") == {}
    assert len(booted) == 1
    wait_for(lambda: all(hosts.get_host(h.server_id) is None for h in booted), timeout=60,
             what="the failed node's host to go with its server")
