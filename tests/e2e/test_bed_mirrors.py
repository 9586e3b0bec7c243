"""The bed's stock image and mirrors: what a stock-image node would install from.

Cheap checks that boot nothing: the stock rootfs really is stock, the PyPI index serves
every hash of the lock for each supported CPython, the tampered index is refused by pip
--require-hashes, the npm registry satisfies `npm ci` on the lock, over HTTP and over HTTPS
(with the bed's CA only). Traffic goes to the bridge address only (pip and npm run with
--isolated / empty configs, so this machine's own indexes are never asked).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.testbed.fixtures import bed_required, cannot_run_reason
from tests.testbed.hosts import hosts, mirror, npm_mirror, pypi_mirror, rootfs

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mirrors():
    """Build (or reuse) the stock tree and the mirrors; serve them if nobody does yet."""
    reason = cannot_run_reason() or (None if Path("/usr/sbin/debootstrap").exists()
                                     else "debootstrap is not installed")
    if reason:
        if bed_required():
            pytest.fail(f"mirror tests are required here but {reason}", pytrace=False)
        pytest.skip(reason)
    stock = rootfs.ensure_stock_rootfs("bookworm")
    served = mirror.mirror_root()
    pypi_mirror.publish(pypi_mirror.build(), served)
    npm_mirror.publish(npm_mirror.build(), served)
    hosts.ensure_bridge()
    started = [https for https in (False, True) if mirror._running_pid(None, https) is None]
    for https in started:
        mirror.start_server(https=https)
    try:
        yield stock
    finally:
        for https in started:
            mirror.stop_server(https=https)


def test_stock_rootfs_has_none_of_the_node_software(mirrors: Path) -> None:
    status = (mirrors / "var/lib/dpkg/status").read_text()
    installed = {block.split("\n", 1)[0].removeprefix("Package: ")
                 for block in status.split("\n\n") if "Status: install ok installed" in block}
    assert {"cloud-init", "openssh-server", "sudo", "python3", "curl", "systemctl"} <= installed
    assert not {p for p in installed if p.startswith(("openjdk", "nodejs", "npm"))}
    assert not {"python3-venv", "python3-pip"} & installed
    assert not (mirrors / "opt/sparkstack").exists()
    assert not list((mirrors / "var/lib/apt/lists").glob("*_Packages*"))
    sources = (mirrors / "etc/apt/sources.list").read_text()
    assert " bookworm main" in sources and " bookworm-updates main" in sources


@pytest.mark.parametrize("python", pypi_mirror.PYTHON_VERSIONS)
def test_pypi_mirror_serves_the_lock(mirrors: Path, tmp_path: Path, python: str) -> None:
    cmd = pypi_mirror.pip_download_args(python, tmp_path / "wheels", index_url=mirror.pypi_url())
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=pypi_mirror.pip_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list((tmp_path / "wheels").glob("*.whl"))


def test_tampered_pypi_mirror_is_refused(mirrors: Path, tmp_path: Path) -> None:
    cmd = pypi_mirror.pip_download_args("3.11", tmp_path / "wheels",
                                        index_url=mirror.pypi_url(tampered=True))
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=pypi_mirror.pip_env())
    assert proc.returncode != 0
    assert "DO NOT MATCH THE HASHES" in proc.stderr
    assert pypi_mirror.TAMPERED_PACKAGE.replace("-", "_") in proc.stderr.replace("-", "_")


def test_pypi_over_https_needs_the_bed_ca(mirrors: Path, tmp_path: Path) -> None:
    req = tmp_path / "one.txt"
    req.write_text("\n".join(line for line in pypi_mirror.REQUIREMENTS.read_text().split("\n")
                             if line.startswith(("six==", "    --hash=sha256:4721f391"))))
    base = pypi_mirror.pip_download_args("3.11", tmp_path / "d", requirements=req,
                                         index_url=mirror.pypi_url(https=True))
    cert = base.index("--cert") + 1
    # System CAs only; no retries: a certificate error does not go away.
    untrusted = subprocess.run([*base, "--retries", "0"], capture_output=True, text=True,
                          env=pypi_mirror.pip_env())
    assert untrusted.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout + untrusted.stderr
    base[cert] = str(mirror.ca_cert_path())
    trusted = subprocess.run(base, capture_output=True, text=True,
                          env=pypi_mirror.pip_env())
    assert trusted.returncode == 0, trusted.stderr[-3000:]


def _npm_ci(work: Path, registry: str, cafile: Path | None = None,
            retries: bool = True) -> subprocess.CompletedProcess:
    work.mkdir()
    for name in ("package.json", "package-lock.json"):
        shutil.copy(npm_mirror.NPM_DIR / name, work / name)
    empty = work / "empty-npmrc"
    empty.write_text("")
    cmd = ["npm", "ci", "--ignore-scripts", "--omit=dev", "--no-audit", "--no-fund",
           "--update-notifier=false", "--registry", registry, "--cache", str(work / ".npm"),
           "--userconfig", str(empty), "--globalconfig", str(work / "empty-global")]
    if cafile:
        cmd += ["--cafile", str(cafile)]
    if not retries:  # a certificate error does not go away; npm would back off for a minute
        cmd += ["--fetch-retries", "0"]
    (work / "empty-global").write_text("")
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_registry_satisfies_npm_ci(mirrors: Path, tmp_path: Path) -> None:
    proc = _npm_ci(tmp_path / "http", mirror.npm_url())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "http/node_modules/configurable-http-proxy/package.json").exists()
    proc = _npm_ci(tmp_path / "https", mirror.npm_url(https=True), mirror.ca_cert_path())
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _npm_ci(tmp_path / "untrusted", mirror.npm_url(https=True), retries=False)
    assert proc.returncode != 0
