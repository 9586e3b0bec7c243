"""image/requirements.txt, what every node's venv is made of, installed for real: from the
package index into a fresh venv, with --require-hashes, as image/provision.sh and the
master's boot do. Needs the package index (PyPI), like building the image."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

IMAGE = Path(__file__).resolve().parents[2] / "image"
# The same flags as image/provision.sh and the master's bootstrap.
INSTALL = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
           "--require-hashes", "--only-binary=:all:", "-r"]  # fmt: skip


def pins(path: Path) -> dict[str, str]:
    found = re.findall(r"(?m)^([A-Za-z0-9_.-]+)==([^ ;\\\n]+)", path.read_text())
    return {name.lower().replace("_", "-"): version for name, version in found}


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    return tmp_path / "venv" / "bin" / "python"


def pip(python: Path, requirements: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *INSTALL, str(requirements)], capture_output=True,
                          text=True, timeout=900, check=False)  # fmt: skip


def test_the_lock_pins_what_requirements_in_asks_for():
    wanted, locked = pins(IMAGE / "requirements.in"), pins(IMAGE / "requirements.txt")
    assert wanted and all(locked.get(name) == version for name, version in wanted.items())
    entries = re.split(r"(?m)^(?=[A-Za-z0-9])", (IMAGE / "requirements.txt").read_text())
    for entry in entries[1:]:
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


@pytest.mark.slow
def test_the_requirements_install_with_hashes_into_a_fresh_venv(venv: Path):
    result = pip(venv, IMAGE / "requirements.txt")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    listed = subprocess.run([str(venv), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed)}
    for name, version in pins(IMAGE / "requirements.in").items():
        assert installed.get(name) == version, name
    check = subprocess.run([str(venv), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout  # every dependency there, at a fitting version
    ok = subprocess.run([str(venv), "-c", "import jupyterhub, jupyterlab, ipykernel, py4j"],
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_a_package_that_does_not_match_its_hash_is_refused(venv: Path, tmp_path: Path):
    text = (IMAGE / "requirements.txt").read_text()
    entry = re.search(r"(?m)^py4j==\S+ \\\n(    --hash=sha256:[0-9a-f]{64}\n?)+", text).group(0)
    wrong = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, entry)
    (tmp_path / "wrong.txt").write_text(wrong)
    result = pip(venv, tmp_path / "wrong.txt")
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.stderr, result.stderr[-2000:]
    # A package whose dependencies are not in the file: refused, nothing comes unpinned.
    alone = re.search(r"(?m)^jupyterhub-idle-culler==\S+ \\\n(    --hash=sha256:[0-9a-f]{64}\n?)+",
                      text).group(0)  # fmt: skip
    (tmp_path / "alone.txt").write_text(alone)
    result = pip(venv, tmp_path / "alone.txt")
    assert result.returncode != 0
    assert "In --require-hashes mode, all requirements must have their versions pinned" in (
        result.stderr
    ), result.stderr[-2000:]


def test_npm_packages_are_exact_versions_with_integrity_from_the_lockfile():
    manifest = json.loads((IMAGE / "npm" / "package.json").read_text())
    lock = json.loads((IMAGE / "npm" / "package-lock.json").read_text())
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in manifest["dependencies"].values())
    packages = {k: v for k, v in lock["packages"].items() if k}
    assert set(manifest["dependencies"]) <= {k.removeprefix("node_modules/") for k in packages}
    for name, entry in packages.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", entry["version"]), name
        assert entry["integrity"].startswith("sha512-"), name
    # The one install of them, for every path (a node's boot, image build, provision.sh):
    # the boot script's proxy step, `npm ci` (the lock, integrity-checked), no scripts.
    boot = (IMAGE.parent / "templates" / "cloud-init" / "_bootstrap.sh.j2").read_text()
    assert "args=(ci --omit=dev --ignore-scripts" in boot
    assert "npm install" not in boot
    assert "proxy" in re.search(r'steps="([^"]*)"', (IMAGE / "provision.sh").read_text())[1]
