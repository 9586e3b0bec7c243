"""The SSH stage of `up`, through the CLI as a user runs it, on servers that really boot:
host keys read from Nova's console API and pinned, logins through the master, the ready
marker waited on; a node whose boot fails makes `up` exit 4 quoting its log, and `down`
still removes everything."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.hostkeys import fingerprint
from provisioner.hub.config import HubPaths
from provisioner.render import READY_MARKER
from tests.cloud.test_workflows import cli_env, cluster_resources, run_cli
from tests.testbed.hosts import hosts

from .conftest import wait_for
from .test_hub import HostShell

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BED_INVENTORY = ROOT / "tests" / "testbed" / "inventory.testbed.toml"


def inventory(path: Path, *, name: str, workers: int, sha512: str = "") -> Path:
    """The bed's inventory under another cluster name and size (optionally a pinned hash)."""
    text = BED_INVENTORY.read_text()
    text = re.sub(r'(?m)^name = "demo"$', f'name = "{name}"', text)
    text = re.sub(r"(?m)^count = \d+$", f"count = {workers}", text)
    if sha512:  # in place of the bed's own pin
        text = re.sub(r'(?m)^sha512 = ".*"$', f'sha512 = "{sha512}"', text)
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


def test_a_host_key_that_differs_from_the_console_is_refused(hostbed, clean_project, tmp_path):
    """As if someone answered on the master's address: the node's keys change after its
    console printed them; the next SSH stage refuses it, naming both fingerprints."""
    admin = clean_project.admin()
    inv = inventory(tmp_path / "inv.toml", name="sshkey", workers=0)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    try:
        first = run_cli("up", "-i", str(inv), "--until", "ssh", env=env, check=False, timeout=900)
        assert first.returncode == 0, first.stderr
        (host,) = hosts_of(admin, "sshkey")
        shell = HostShell(host)
        old = host.file("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1]
        shell.run(
            "rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub && ssh-keygen -A >/dev/null"
            " && kill -HUP \"$(cat /run/sshd.pid)\""
        )
        new = [p.read_text().split()[1] for p in host.file("/etc/ssh").glob("ssh_host_*.pub")]
        assert new and old not in new
        again = run_cli("up", "-i", str(inv), "--until", "ssh", env=env, check=False)
        err = " ".join(again.stderr.split())
        assert again.returncode == 4, again.stderr
        assert "host key of sshkey-master" in err and "does not match" in err, again.stderr
        assert fingerprint(old) in err, again.stderr  # what the console said
        assert any(fingerprint(k) in err for k in new), again.stderr  # what was offered
    finally:
        run_cli("down", "-i", str(inv), "--yes", env=env, check=False)
    assert cluster_resources(admin, "sshkey") == {}


def test_ctrl_c_in_the_ssh_stage_exits_130_at_once_and_up_completes(
    hostbed, clean_project, tmp_path
):
    admin = clean_project.admin()
    inv = inventory(tmp_path / "inv.toml", name="sshint", workers=1)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli", "up", "-i", str(inv), "--until", "ssh"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        seen = []
        for line in proc.stderr:  # progress lines, one per phase change (not a terminal)
            seen.append(line)
            if "sshint-worker-1: host keys" in line:
                break
        else:
            pytest.fail("up ended before the SSH stage: " + "".join(seen))
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
        took = time.monotonic() - interrupted
        assert proc.returncode == 130, "".join(seen) + rest
        err = " ".join(rest.split())
        assert "up interrupted" in err and "`sparkstack up` to complete it" in err, rest
        assert "Traceback" not in rest
        assert took < 20, f"{took:.1f} s from Ctrl-C to exit"  # the waits stop, not time out

        done = run_cli("up", "-i", str(inv), "--until", "ssh", env=env, check=False, timeout=900)
        assert done.returncode == 0, done.stderr
        assert "all 2 node(s) booted and reachable over SSH" in done.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        run_cli("down", "-i", str(inv), "--yes", env=env, check=False)
    assert cluster_resources(admin, "sshint") == {}


def test_ctrl_c_during_the_hub_install_exits_130_then_up_completes_and_down_cleans(
    hostbed, clean_project, tmp_path
):
    """Ctrl-C while the hub's idempotent steps run on the master: the next `up` finds a
    half-installed hub and finishes it; `down` then leaves nothing (the leak audit of
    `clean_project` checks the credentials file as well)."""
    admin = clean_project.admin()
    inv = inventory(tmp_path / "inv.toml", name="hubint", workers=0)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli", "up", "-i", str(inv)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        seen = []
        for line in proc.stderr:  # progress lines, one per step (not a terminal)
            seen.append(line)
            if "installing JupyterHub on the master" in line:
                break
        else:
            pytest.fail("up ended before the hub install: " + "".join(seen))
        # Into the install's steps, not before the first: the hub's cookie secret, which
        # only its secrets step writes (third of nine, long before the hub starts).
        master = next(h for h in hosts_of(admin, "hubint") if h.name == "hubint-master")
        secret = master.file(HubPaths().cookie_secret)
        wait_for(lambda: secret.exists() or proc.poll() is not None, timeout=300,
                 what="the hub's secrets step on the master")
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
        assert proc.returncode == 130, "".join(seen) + rest
        err = " ".join(rest.split())
        assert "up interrupted" in err and "`sparkstack up` to complete it" in err, rest
        assert "Traceback" not in rest
        assert "hub ready at" not in "".join(seen) + rest  # it really stopped mid-install

        done = run_cli("up", "-i", str(inv), env=env, check=False, timeout=900)
        assert done.returncode == 0, done.stderr
        assert "hub ready at" in done.stderr, done.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        down = run_cli("down", "-i", str(inv), "--yes", env=env, check=False)
    assert down.returncode == 0, down.stderr
    assert cluster_resources(admin, "hubint") == {}
