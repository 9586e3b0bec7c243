"""`sparkstack image build` on the bed: a stock Debian 13 image in, through the bed's
mirrors; a Glance snapshot out (the bed's compute driver packs the builder's disk for
real); a cluster on it installs nothing at boot, passes `smoke`, and `down` leaves nothing.
A build that fails, or is interrupted while the snapshot is being made, leaves no builder
and no half-made image.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.cloud.test_workflows import cli_env, cluster_resources, run_cli
from tests.e2e.test_stock import boot_log, cluster_hosts, write_inventory

pytestmark = [pytest.mark.hosts, pytest.mark.slow]


def images_named(admin, name: str) -> list:
    return [i for i in admin.image.images() if i.name == name]


def builder_gone(admin, cluster: str) -> None:
    left = cluster_resources(admin, f"{cluster}-builder")
    assert left == {}, left


def test_image_build_then_a_cluster_on_it_installs_nothing_smoke_and_down(
    hostbed, clean_project, tmp_path
):
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    name, image = "bake", "sparkstack-test-baked"
    # Debian 13 here, Debian 12 in test_stock: each release's install runs once (Java 21
    # and Python 3.13 here), and the cluster on the image proves what it installed works.
    inv = write_inventory(tmp_path / "inv.toml", name=name, image="debian-13-stock",
                          workers=1)  # fmt: skip
    timings: dict[str, float] = {}
    try:
        t = time.monotonic()
        built = run_cli("image", "build", "-i", str(inv), "--name", image, "--json", env=env,
                        check=False, timeout=1800)  # fmt: skip
        timings["image build"] = time.monotonic() - t
        assert built.returncode == 0, built.stdout + built.stderr
        out = json.loads(built.stdout)
        assert out["image"]["name"] == image
        assert out["inventory"] == f'image = "{image}"'
        props = out["image"]["properties"]
        assert props["spark_version"] and props["java"] == "21"
        assert props["os_distro"] == "debian" and props["os_version"] == "13"
        # the builder is gone with its group, floating IP and keypair
        builder_gone(admin, name)
        [glance] = images_named(admin, image)
        assert glance.status == "active" and glance.size > 0
        assert glance.properties["sparkstack_build"] == "complete"
        lock = "sparkstack_pip_lock_sha256"
        assert glance.properties[lock] == props[lock]

        listed = run_cli("image", "list", "-i", str(inv), "--json", env=env, check=False)
        assert listed.returncode == 0, listed.stderr
        [row] = [i for i in json.loads(listed.stdout)["images"] if i["name"] == image]
        assert row["matches"] is True, row

        inv.write_text(re.sub(r'(?m)^image = ".*"$', f'image = "{image}"', inv.read_text()))
        t = time.monotonic()
        up = run_cli("up", "-i", str(inv), env=env, check=False, timeout=1200)
        timings["up 1+1 on the baked image"] = time.monotonic() - t
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"image {image} is baked for this inventory: nodes install nothing" in up.stderr
        booted = cluster_hosts(name)
        assert len(booted) == 2, booted
        for host in booted.values():
            log = boot_log(host)
            assert "booted from an image baked by sparkstack" in log, host.name
            # nothing was fetched or installed: no apt, pip, npm or Spark download
            assert not re.search(r"sparkstack\[\w+\]: (installing|fetching)", log), host.name
            assert "downloading" not in log.lower(), host.name
            assert "FAILED" not in log, host.name
            # a new machine: the builder's host keys and machine id are not reused
            assert host.file("/etc/ssh/ssh_host_ed25519_key.pub").exists(), host.name

        t = time.monotonic()
        smoke = run_cli("smoke", "-i", str(inv), env=env, check=False, timeout=600)
        timings["smoke"] = time.monotonic() - t
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    finally:
        t = time.monotonic()
        down = run_cli("down", "-i", str(inv), "--yes", env=env, check=False, timeout=600)
        timings["down"] = time.monotonic() - t
        for one in images_named(admin, image):  # the user keeps it; the test does not
            admin.image.delete_image(one.id, ignore_missing=True)
        print("\nimage build timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    assert down.returncode == 0, down.stderr
    assert cluster_resources(admin, name) == {}
    builder_gone(admin, name)


def test_a_failing_install_step_leaves_no_builder_and_names_the_step(
    hostbed, clean_project, tmp_path
):
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    name, image = "bakebad", "sparkstack-test-never"
    inv = write_inventory(tmp_path / "inv.toml", name=name, image="debian-12-stock")
    # A pinned sha512 the mirror's tarball does not have: the builder's spark step refuses it.
    inv.write_text(re.sub(r'(?m)^sha512 = ".*"$', 'sha512 = "' + "ab" * 64 + '"', inv.read_text()))
    built = run_cli("image", "build", "-i", str(inv), "--name", image, env=env, check=False,
                    timeout=1200)  # fmt: skip
    assert built.returncode == 4, built.stdout + built.stderr
    assert "boot failed in step spark" in built.stderr, built.stderr
    assert "sha512 mismatch" in built.stderr, built.stderr
    assert f"the builder {name}-builder and any unfinished image were removed" in built.stderr
    assert "Traceback" not in built.stderr
    assert images_named(admin, image) == []
    builder_gone(admin, name)


def test_ctrl_c_while_the_snapshot_is_made_leaves_no_builder_and_no_image(
    hostbed, clean_project, tmp_path
):
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    name, image = "bakeint", "sparkstack-test-interrupted"
    inv = write_inventory(tmp_path / "inv.toml", name=name, image="debian-12-stock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli", "image", "build", "-i", str(inv),
         "--name", image],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 1200
        for line in proc.stderr:
            seen.append(line)
            # the image exists in Glance from here on, still unfinished
            if f"image {image} (" in line and "is being made" in line:
                proc.send_signal(signal.SIGINT)
                break
            assert time.monotonic() < deadline, "".join(seen[-30:])
        else:
            pytest.fail("the build ended before the snapshot started:\n" + "".join(seen[-30:]))
        rest = proc.communicate(timeout=600)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(seen[-20:]) + rest
    assert "Traceback" not in rest
    assert "any unfinished image were removed" in rest, rest
    assert images_named(admin, image) == []
    builder_gone(admin, name)


def test_a_killed_build_is_removed_by_down(hostbed, clean_project, tmp_path):
    """SIGKILL gives the build no chance to clean up: its builder's local key marks it, and
    `down` of the cluster removes what it left."""
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    name = "bakekill"
    inv = write_inventory(tmp_path / "inv.toml", name=name, image="debian-12-stock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli", "image", "build", "-i", str(inv)],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if "waiting for the builder's boot" in line:
                proc.kill()
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    assert cluster_resources(admin, f"{name}-builder").get("server") == 1
    down = run_cli("down", "-i", str(inv), "--yes", env=env, check=False, timeout=600)
    assert down.returncode == 0, down.stderr
    assert f"delete server {name}-builder-master" in down.stderr, down.stderr
    builder_gone(admin, name)


def test_a_missing_source_image_is_refused_before_anything_exists(
    hostbed, clean_project, tmp_path
):
    admin = clean_project.admin()
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    inv = write_inventory(tmp_path / "inv.toml", name="bakenone", image="debian-12-stock")
    built = run_cli("image", "build", "-i", str(inv), "--from", "no-such-image", env=env,
                    check=False)  # fmt: skip
    assert built.returncode == 2, built.stderr
    assert "image 'no-such-image' not found" in built.stderr
    assert "nothing was created" in built.stderr and "removed" not in built.stderr
    assert "Traceback" not in built.stderr
    builder_gone(admin, "bakenone")
