"""SIGTERM (a CI runner cancelling a job) and SIGHUP (a closed terminal) in the middle of
an apply, on the real OpenStack bed: the same cleanup and hints as Ctrl-C, exit 128 + the
signal's number, and `down` afterwards leaves nothing."""

# ruff: noqa: F811  (pytest fixtures imported from the test bed are named as arguments)
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.cloud.test_workflows import ROOT, cli_env, cluster_resources, run_cli, write_inventory
from tests.cloud.test_workflows_faults import SERVERS, proxy  # noqa: F401
from tests.testbed.fixtures import clean_project, testbed  # noqa: F401

pytestmark = pytest.mark.cloud


def signal_when(args, env, ready, sig, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli", *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"finished before the signal point: {proc.communicate()}"
            assert time.monotonic() < deadline, "signal point never reached"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_during_up_and_down_is_a_ctrl_c_with_its_own_exit_code(
    sig, proxy, clean_project, tmp_path
):
    admin = clean_project.admin()
    name = f"sig{int(sig)}"
    inv_path = write_inventory(tmp_path / "inv.toml", name=name, workers=1, cloud="proxied")
    env = cli_env(tmp_path, proxy.yaml)
    proc = signal_when(
        ["up", "-i", str(inv_path), "--no-ssh"], env,
        lambda: proxy.total(method="POST", path=SERVERS) >= 1, sig,
    )  # fmt: skip
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 128 + sig, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"up interrupted by {sig.name}" in err
    assert "run `sparkstack up` to complete it, or `sparkstack down` to remove it" in err

    proxy.configure(latency=0.2)  # so the signal lands mid-way through the deletes
    proxy.reset_counts()
    proc = signal_when(
        ["down", "-i", str(inv_path), "--yes"], env,
        lambda: proxy.total(method="DELETE") >= 1, sig,
    )  # fmt: skip
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 128 + sig, proc.stderr
    assert f"down interrupted by {sig.name}" in err
    assert "run `sparkstack down` again" in err
    proxy.configure(latency=0)
    run_cli("down", "-i", str(inv_path), "--yes", env=env)
    assert cluster_resources(admin, name) == {}
