"""The path a new user takes: a stock Debian cloud image (no Java, no venv, no Node.js, no
Spark), on a cloud without internet, with the inventory naming its mirrors.

The bed's stock images are built like Debian's genericcloud ones; its namespace hosts
have no route but the bed's bridge, so every package comes through the bed's mirrors
(apt-cacher-ng, a PEP 503 index and an npm registry of exactly the locks' files, over
HTTPS with the bed's own CA, which the inventory's mirrors.ca_bundle makes the nodes
trust). `up` -> hub ready -> `smoke` -> `up` again changes nothing -> `down` leaves
nothing; and a mirror that substitutes one wheel, or an apt proxy that does not answer,
fails the master's boot within minutes, naming the package or the proxy.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.cloud.test_workflows import cli_env, cluster_resources, run_cli
from tests.testbed.hosts import hosts, mirror
from tests.testbed.hosts.pypi_mirror import TAMPERED_PACKAGE

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
STOCK_INVENTORY = ROOT / "tests" / "testbed" / "inventory.stock.toml"


def write_inventory(path: Path, *, name: str, image: str, workers: int = 2,
                    pypi: str | None = None) -> Path:  # fmt: skip
    text = STOCK_INVENTORY.read_text()
    text = re.sub(r'(?m)^name = "demo-stock"$', f'name = "{name}"', text)
    text = re.sub(r'(?m)^image = ".*"$', f'image = "{image}"', text)
    text = re.sub(r"(?m)^count = \d+$", f"count = {workers}", text)
    # The bed's own addresses, from the bed's code rather than the file's copy of them.
    text = re.sub(r'(?m)^pypi = ".*"$', f'pypi = "{pypi or mirror.pypi_url(https=True)}"', text)
    text = re.sub(r'(?m)^npm = ".*"$', f'npm = "{mirror.npm_url(https=True)}"', text)
    text = re.sub(r'(?m)^apt_proxy = ".*"$', f'apt_proxy = "{mirror.apt_proxy_url()}"', text)
    text = re.sub(r'(?m)^ca_bundle = ".*"$', f'ca_bundle = "{mirror.ca_cert_path()}"', text)
    path.write_text(text)
    return path


def cluster_hosts(name: str) -> dict[str, hosts.Host]:
    return {h.name: h for h in hosts.list_hosts() if h.name.startswith(f"{name}-")}


def boot_log(host: hosts.Host) -> str:
    return host.file("/var/log/cloud-init-output.log").read_text(errors="replace")


def no_route_out(host: hosts.Host) -> str:
    """What the kernel of the host's namespace says about a route to the internet; asking
    sends nothing."""
    result = subprocess.run(
        ["ip", "netns", "exec", f"sstk-{host.server_id[:8]}", "ip", "route", "get", "1.1.1.1"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


# Debian 13's install (Java 21, Python 3.13) runs in test_image_build, whose builder boots
# the stock Debian 13 image through the same mirrors and whose cluster then runs `smoke`.
@pytest.mark.parametrize(("image", "java"), [("debian-12-stock", "openjdk-17-jre-headless")])
def test_up_on_a_stock_image_through_mirrors_smoke_again_and_down(
    hostbed, clean_project, tmp_path, image, java
):
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    name = "st12"
    # One worker shows what every worker installs; a second would only add load.
    inv = write_inventory(tmp_path / "inv.toml", name=name, image=image, workers=1)
    timings: dict[str, float] = {}
    try:
        dry = run_cli("up", "-i", str(inv), "--dry-run", env=env, check=False)
        assert dry.returncode == 0, dry.stderr
        assert f"Python packages (master): {mirror.pypi_url(https=True)}" in dry.stdout
        assert f"through {mirror.apt_proxy_url()}" in dry.stdout

        t = time.monotonic()
        up = run_cli("up", "-i", str(inv), env=env, check=False, timeout=1200)
        timings["up 1+1 on a stock image"] = time.monotonic() - t
        assert up.returncode == 0, up.stdout + up.stderr
        assert "every worker is ALIVE on the Spark master" in up.stderr
        assert "hub packages: unchanged" in up.stderr  # the boot installed them already

        booted = cluster_hosts(name)
        assert len(booted) == 2, booted
        for host in booted.values():
            # the only way out is the bed's bridge: nothing could come from the internet
            assert "Network is unreachable" in no_route_out(host), host.name
            log = boot_log(host)
            assert f"installing {java}" in log, host.name
            assert "FAILED" not in log, host.name
        master = boot_log(booted[f"{name}-master"])
        assert f"installing the venv's packages from {mirror.pypi_url(https=True)}" in master
        assert f"fetching npm from {mirror.npm_url(https=True)}" in master
        assert booted[f"{name}-master"].file("/opt/sparkstack/venv/bin/jupyterhub").exists()
        # workers need Java, Python and Spark only
        for worker in (h for n, h in booted.items() if "-worker-" in n):
            assert not worker.file("/opt/sparkstack/venv/bin/jupyterhub").exists()
            assert not worker.file("/usr/bin/node").exists()

        t = time.monotonic()
        smoke = run_cli("smoke", "-i", str(inv), env=env, check=False, timeout=600)
        timings["smoke"] = time.monotonic() - t
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr

        t = time.monotonic()
        again = run_cli("up", "-i", str(inv), env=env, check=False, timeout=600)
        timings["up again"] = time.monotonic() - t
        assert again.returncode == 0, again.stderr
        assert "already as the inventory says; nothing changed" in again.stderr
        assert "create server" not in again.stderr
    finally:
        t = time.monotonic()
        down = run_cli("down", "-i", str(inv), "--yes", env=env, check=False, timeout=600)
        timings["down"] = time.monotonic() - t
        print(f"\n{image} timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    assert down.returncode == 0, down.stderr
    assert cluster_resources(admin, name) == {}


@pytest.mark.parametrize(
    ("case", "step", "named"),
    [
        # the tampered index serves another wheel under the same name, with a hash of its
        # own in the index: pip checks the lock's hash, refuses it, and `up` says which
        ("substituted wheel", "python", TAMPERED_PACKAGE),
        # an apt proxy nobody answers for (the bed's own address, a closed port)
        ("dead apt proxy", "base", "apt-get update could not fetch the package lists "
                                   "through http://10.77.0.1:9"),
    ],
)
def test_a_bad_mirror_fails_the_masters_boot_in_bounded_time_naming_it(
    hostbed, clean_project, tmp_path, case, step, named
):
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    name = "tamper" if step == "python" else "deadapt"
    inv = write_inventory(tmp_path / "inv.toml", name=name, image="debian-12-stock",
                          workers=0, pypi=mirror.pypi_url(tampered=True, https=True))
    if step == "base":
        inv.write_text(re.sub(r'(?m)^apt_proxy = ".*"$', 'apt_proxy = "http://10.77.0.1:9"',
                              inv.read_text()))
    try:
        started = time.monotonic()
        up = run_cli("up", "-i", str(inv), env=env, check=False, timeout=1200)
        took = time.monotonic() - started
        assert up.returncode == 4, up.stdout + up.stderr
        assert f"boot failed in step {step}" in up.stderr, up.stderr
        assert named in up.stderr, up.stderr
        if step == "python":
            assert "does not match its sha256 in the lock" in up.stderr, up.stderr
        assert "Traceback" not in up.stderr
        # well within ssh.boot_timeout: the node's own bounds ended it, not the wait
        assert took < 300, took
        # nothing of the hub was installed: pip installs all or nothing
        master = cluster_hosts(name)[f"{name}-master"]
        assert not master.file("/opt/sparkstack/venv/bin/jupyterhub").exists()
    finally:
        down = run_cli("down", "-i", str(inv), "--yes", env=env, check=False, timeout=600)
    assert down.returncode == 0, down.stderr
    assert cluster_resources(admin, name) == {}
