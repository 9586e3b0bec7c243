"""examples/ci/smoke-deploy.sh against servers that really boot, three ways: all good
(exit 0, the smoke report kept, no password, token or key in anything it printed or kept,
nothing left), smoke failing (a worker's Spark stopped
before it: non-zero at once, naming the stopped daemon, nothing left), and the CI job
cancelled with SIGTERM during `up` (exit 143, and `down` still ran: nothing left)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib

from tests.cloud.test_workflows import cli_env, cluster_resources

from .conftest import wait_for
from .test_cluster import write_inventory

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "ci" / "smoke-deploy.sh"
CLI = f"{sys.executable} -m provisioner.cli"


def _env(tmp_path: Path, clouds_yaml: Path, name: str, **extra: str) -> dict[str, str]:
    inv = write_inventory(tmp_path / "ci-inventory.toml", name="placeholder", users=["alice"])
    inv.write_text(re.sub(r"(?m)^count = 2$", "count = 1", inv.read_text()))
    env = cli_env(tmp_path, clouds_yaml)
    env.update(
        SPARKSTACK_INVENTORY=str(inv),
        SPARKSTACK_CLUSTER_NAME=name,
        SMOKE_REPORT=str(tmp_path / "smoke-report.json"),
        SPARKSTACK=CLI,
    )
    env.update(extra)
    return env


def _left(admin, tmp_path: Path, name: str) -> dict[str, int]:
    found = cluster_resources(admin, name)
    if (tmp_path / "config" / "sparkstack" / name).exists():
        found["local config dir"] = 1
    return found


@pytest.fixture(autouse=True)
def _never_leave_a_cluster(request, tmp_path, clean_project):
    """Whatever a failing test left, removed with the CLI after it (the test has asserted
    on what the script itself left by then)."""
    yield
    inv = tmp_path / "ci-inventory.toml"
    names = {"test_all_good": "ci-good", "test_failing_smoke": "ci-bad", "test_sigterm": "ci-term"}
    name = next(v for k, v in names.items() if request.node.name.startswith(k))
    if inv.exists():
        env = dict(cli_env(tmp_path, clean_project.clouds_yaml), SPARKSTACK_CLUSTER_NAME=name)
        subprocess.run([*CLI.split(), "down", "-i", str(inv), "--yes"], env=env, cwd=ROOT,
                       capture_output=True, timeout=600)  # fmt: skip


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)  # fmt: skip


# Run by the job's own sparkstack just before `down`: what the recipe must never print,
# read while it still exists (the users' passwords from the credentials file, the master's
# secrets from its disk), written to the file named by its second argument.
SECRETS_DUMP = """
import json, sys
from provisioner.keys import config_dir, credentials_path
from tests.e2e.test_cluster import secrets_on
from tests.testbed.hosts import hosts
name, out = sys.argv[1], sys.argv[2]
creds = credentials_path(config_dir(name))
masters = [h for h in hosts.list_hosts() if h.name == name + "-master" and h.alive()]
json.dump({"credentials": creds.read_text() if creds.exists() else "",
           "secrets": [v for h in masters for v in secrets_on(h)]}, open(out, "w"))
"""


def _run_on_a_terminal(env: dict[str, str]) -> tuple[int, str]:
    """The recipe with stdout and stderr on one pseudo-terminal, as runners that give
    jobs one do (the worst case: sparkstack shows secrets on a terminal); its exit code
    and everything it wrote."""
    reader, writer = os.openpty()
    proc = subprocess.Popen(["bash", str(SCRIPT)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=writer, stderr=writer, start_new_session=True)  # fmt: skip
    os.close(writer)
    chunks, deadline = [], time.monotonic() + 1200
    try:
        while time.monotonic() < deadline:
            if not select.select([reader], [], [], 5)[0]:
                continue
            try:
                chunk = os.read(reader, 1 << 16)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout=60)
    finally:
        os.close(reader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks).decode(errors="replace")


def test_all_good_exits_0_keeps_the_report_and_leaves_nothing(hostbed, clean_project, tmp_path):
    admin = clean_project.admin()
    dump, dumped = tmp_path / "secrets-dump.py", tmp_path / "secrets.json"
    dump.write_text(SECRETS_DUMP)
    shim = tmp_path / "sparkstack-that-reads-the-secrets"
    shim.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = down ]; then\n'
        f'  PYTHONPATH={ROOT} {sys.executable} {dump} "$SPARKSTACK_CLUSTER_NAME" {dumped}'
        " >/dev/null 2>&1\n"
        "fi\n"
        f'exec {CLI} "$@"\n'
    )
    env = _env(tmp_path, clean_project.clouds_yaml, "ci-good", SPARKSTACK=f"bash {shim}",
               COLUMNS="120", LINES="40")  # fmt: skip
    # credentials as a CI secret holds them: the clouds.yaml text, no file of ours
    env["SPARKSTACK_CLOUDS_YAML"] = Path(env.pop("OS_CLIENT_CONFIG_FILE")).read_text()
    t = time.monotonic()
    code, output = _run_on_a_terminal(env)
    hostbed.timings["smoke-deploy.sh, all good (1+1)"] = time.monotonic() - t
    assert code == 0, output[-3000:]
    report = json.loads((tmp_path / "smoke-report.json").read_text())
    assert report["ok"] and report["cluster"] == "ci-good", report
    assert "down: removing cluster ci-good" in output
    assert _left(admin, tmp_path, "ci-good") == {}

    # Nothing secret in what the job printed or keeps: its output, the report, the logs.
    found = json.loads(dumped.read_text())
    passwords = list(tomllib.loads(found["credentials"])["users"].values())
    assert len(passwords) == 1 and len(found["secrets"]) >= 5, found.keys()
    kept = {"the recipe's output": output}
    for path in [tmp_path / "smoke-report.json", *(tmp_path / "state").rglob("*")]:
        if path.is_file():
            kept[str(path.relative_to(tmp_path))] = path.read_text(errors="replace")
    for secret in [*passwords, *found["secrets"]]:
        for where, text in kept.items():
            assert secret not in text, f"a secret ({secret[:3]}...) is in {where}"


def test_failing_smoke_fails_the_job_and_still_leaves_nothing(hostbed, clean_project, tmp_path):
    admin = clean_project.admin()
    # The job's own sparkstack, except that before smoke a worker's Spark is stopped.
    shim = tmp_path / "sparkstack-with-a-broken-worker"
    shim.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = smoke ]; then\n'
        f'  {CLI} ssh -i "$SPARKSTACK_INVENTORY" 1 -- sudo systemctl stop spark-worker || exit 99\n'
        "fi\n"
        f'exec {CLI} "$@"\n'
    )
    env = _env(tmp_path, clean_project.clouds_yaml, "ci-bad", SPARKSTACK=f"bash {shim}")
    done = _run(env)
    assert done.returncode not in (0, 99), done.stderr[-3000:]
    assert (tmp_path / "smoke-report.json").exists(), done.stderr[-3000:]
    report = json.loads((tmp_path / "smoke-report.json").read_text())
    assert report["ok"] is False, report
    failed = [c for c in report["checks"] if not c["ok"]]
    # The stopped daemon is named at the first look, not after the 120 s registration wait.
    assert len(failed) == 1 and "Spark worker(s) ALIVE" in failed[0]["name"], report
    assert "spark-worker is down on ci-bad-worker-1 (inactive)" in failed[0]["detail"], report
    assert failed[0]["seconds"] < 30, report
    assert "down: removing cluster ci-bad" in done.stderr
    assert _left(admin, tmp_path, "ci-bad") == {}


def test_sigterm_during_up_still_runs_down(hostbed, clean_project, tmp_path):
    admin = clean_project.admin()
    env = _env(tmp_path, clean_project.clouds_yaml, "ci-term")
    proc = subprocess.Popen(["bash", str(SCRIPT)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: cluster_resources(admin, "ci-term").get("server"), timeout=180,
                 what="ci-term's servers", interval=0.5)  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    assert "down: removing cluster ci-term" in err
    assert "Traceback" not in err
    assert _left(admin, tmp_path, "ci-term") == {}
