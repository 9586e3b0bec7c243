"""Commands that never talk to a cloud or a node do not load openstacksdk or paramiko:
`render`, `--version` and `--help` start fast, and a broken cloud library cannot break them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.inventory_cases import pinned_example

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from provisioner.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
heavy = sorted(m for m in ("openstack", "keystoneauth1", "paramiko") if m in sys.modules)
print(json.dumps({"codes": codes, "loaded": heavy}))
"""


def probe(*argvs: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(argvs))],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_render_and_version_leave_openstack_and_paramiko_unloaded(tmp_path):
    out = tmp_path / "master.yaml"
    inventory = str(pinned_example(tmp_path / "inventory.toml"))
    result = probe(
        ["--version"],
        ["render", "-i", inventory, "--role", "master", "-o", str(out)],
        ["render", "-i", inventory, "--role", "worker", "--master-ip", "10.0.0.12"],
    )
    assert result == {"codes": [0, 0, 0], "loaded": []}
    assert out.read_text().startswith("#cloud-config")


def test_the_probe_sees_a_cloud_import_when_there_is_one():
    # the same probe, made to import the cloud edge: proves it would notice
    proc = subprocess.run(
        [sys.executable, "-c", "import provisioner.cloud, sys; print('openstack' in sys.modules)"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == "True"
