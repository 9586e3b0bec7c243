"""The speed bench still runs (quick mode, 1+1, one round): floor, sparkstack and the
counted pass against the real bed. How fast is bench/'s business, not a test's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testbed.fixtures import clean_project, testbed  # noqa: F401

pytestmark = pytest.mark.cloud

ROOT = Path(__file__).resolve().parents[2]


def test_up_vs_floor_quick_mode_measures_both(clean_project, tmp_path):  # noqa: F811
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.up_vs_floor", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(clean_project.clouds_yaml)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["n"] == 1
    for key in ("floor_up_s", "up_s", "floor_down_s", "down_s"):
        assert row[key] > 0, key
    # the counted pass saw the real requests: two server POSTs each, and deletes
    assert row["up_paths"]["compute POST /v2.1/servers"] == 2
    assert row["floor_paths"]["compute POST /v2.1/servers"] == 2
    assert row["down_paths"]["compute DELETE /v2.1/servers/{id}"] == 2
    assert 0 < row["up_requests"] <= 45
    assert "1+1" in proc.stdout
