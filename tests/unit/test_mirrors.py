"""[mirrors]: bad settings are named by key before anything exists; good ones reach the
node's settings file and the dry run exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioner import render as R
from provisioner.errors import InventoryError
from provisioner.inventory import parse_inventory
from tests.unit.inventory_cases import (
    PINNED_SHA512,
    edge_inventories,
    mirrors_ca_bundle,
    pinned_example,
    with_changes,
)
from tests.unit.toml_writer import toml_document

FETCHED = R.SparkHash(sha512="cd" * 64, source="fetched (test)")


def problems(changes: dict) -> list[str]:
    with pytest.raises(InventoryError) as err:
        parse_inventory(with_changes(changes), source="inv.toml")
    return [line.strip() for line in err.value.message.splitlines()[1:]]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"mirrors.pypi": "pypi.internal/simple"},
         'mirrors.pypi: must be an http:// or https:// URL, got "pypi.internal/simple"'),
        ({"mirrors.npm": "ftp://npm.internal/"},
         'mirrors.npm: must be an http:// or https:// URL, got "ftp://npm.internal/"'),
        ({"mirrors.apt_mirror": "http://deb.internal/debian\n"},
         'mirrors.apt_mirror: must not contain control characters such as newlines or tabs, '
         'got "http://deb.internal/debian\\n"; remove the \\n'),
        ({"mirrors.pypi": "https://bob:secret@pypi.internal/simple"},
         "mirrors.pypi: must not carry a user name or password: it would be readable by "
         "every process on the nodes (user_data); allow the nodes by address instead"),
        ({"mirrors.https_proxy": "proxy.internal:3128"},
         'mirrors.https_proxy: must name its scheme, like "http://proxy.example.org:3128", '
         'got "proxy.internal:3128"'),
        ({"mirrors.http_proxy": "http://proxy.internal:99999"},
         'mirrors.http_proxy: has a bad port number: "http://proxy.internal:99999"'),
        ({"mirrors.apt_proxy": "http://cache.internal:3142/acng"},
         'mirrors.apt_proxy: a proxy URL has no path, got "http://cache.internal:3142/acng"'),
        ({"mirrors.pypi": "https://pypi.internal/simple?x=1"},
         'mirrors.pypi: must have no ?query or #fragment, got "https://pypi.internal/simple?x=1"'),
        ({"mirrors.no_proxy": ["ok.internal", "bad host"]},
         'mirrors.no_proxy[1]: not a host, domain, IP or CIDR for no_proxy: "bad host"'),
        ({"mirrors.npm": 3}, "mirrors.npm: must be a string, got integer 3"),
        ({"mirrors.pypy": "https://pypi.internal/simple"},
         "mirrors.pypy: unknown key (did you mean 'pypi'?)"),
        ({"ssh.boot_timeout": 10}, "ssh.boot_timeout: must be >= 60, got 10"),
    ],
    ids=lambda v: str(v)[:50],
)  # fmt: skip
def test_a_bad_mirror_setting_is_named_by_its_key(changes, expected):
    assert problems(changes) == [expected]


def test_a_ca_bundle_must_be_a_readable_pem_of_certificates(tmp_path: Path):
    missing = tmp_path / "nope.pem"
    assert problems({"mirrors.ca_bundle": str(missing)}) == [
        f'mirrors.ca_bundle: "{missing}" not found']  # fmt: skip
    assert problems({"mirrors.ca_bundle": str(tmp_path)}) == [
        f'mirrors.ca_bundle: "{tmp_path}" is a directory']  # fmt: skip
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert problems({"mirrors.ca_bundle": str(junk)}) == [
        f'mirrors.ca_bundle: "{junk}" holds no PEM certificate (-----BEGIN CERTIFICATE-----)']
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (message,) = problems({"mirrors.ca_bundle": str(broken)})
    assert message.startswith(f'mirrors.ca_bundle: "{broken}" certificate 1 does not parse')
    huge = tmp_path / "huge.pem"
    huge.write_bytes(mirrors_ca_bundle().read_bytes() * 40)
    (message,) = problems({"mirrors.ca_bundle": str(huge)})
    assert "fit in user_data" in message


def dry_run(data: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """`up --dry-run` through the whole CLI, as a user runs it, with no cloud configured at
    all (so nothing could be created)."""
    inv = tmp_path / "inv.toml"
    inv.write_text(toml_document(data))
    return subprocess.run(
        [sys.executable, "-m", "provisioner.cli", "up", "-i", str(inv), "--dry-run"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip


def test_every_bad_mirror_key_exits_2_through_the_cli_before_any_cloud_call(tmp_path):
    data = with_changes({
        "spark.sha512": PINNED_SHA512,
        "mirrors.pypi": "not a url",
        "mirrors.http_proxy": "proxy:3128",
        "mirrors.ca_bundle": str(tmp_path / "missing.pem"),
    })  # fmt: skip
    result = dry_run(data, tmp_path)
    assert result.returncode == 2, result.stderr
    for key in ("mirrors.pypi", "mirrors.http_proxy", "mirrors.ca_bundle"):
        assert key in result.stderr
    assert "Traceback" not in result.stderr
    # a path with a carriage return stays on its key's line
    data["mirrors"]["ca_bundle"] = str(tmp_path / "\r")
    again = dry_run(data, tmp_path)
    assert again.returncode == 2
    (line,) = [line for line in again.stderr.splitlines() if "mirrors.ca_bundle" in line]
    assert line.strip().startswith("mirrors.ca_bundle: must not contain control characters")
    assert line.endswith("remove the \\r"), again.stderr


def test_the_mirrors_reach_the_nodes_settings_and_the_ca_its_trust_store():
    inv = edge_inventories()["mirrors"]
    master = yaml.safe_load(R.render_cloud_init(inv, role="master", for_api=True,
                                                spark_hash=FETCHED))  # fmt: skip
    files = {f["path"]: f["content"] for f in master["write_files"]}
    conf = files[R.CONF_PATH]
    for line in (
        "SPARKSTACK_APT_PROXY=http://apt-cache.internal:3142",
        "SPARKSTACK_APT_MIRROR=https://deb.internal/debian",
        "SPARKSTACK_APT_SECURITY_MIRROR=https://deb.internal/debian-security",
        "SPARKSTACK_PYPI_URL=https://pypi.internal/simple/",
        "SPARKSTACK_NPM_URL=https://npm.internal/",
        "SPARKSTACK_HTTP_PROXY=http://proxy.internal:3128",
        "SPARKSTACK_NO_PROXY=localhost,127.0.0.1,::1,.internal,10.0.0.0/8",
        "SPARKSTACK_EXTRA_CA=yes",
        "SPARKSTACK_LOCK_PYTHONS='3.11 3.12 3.13'",
    ):
        assert line + "\n" in conf, line
    certs = sorted(p for p in files if p.startswith("/usr/local/share/ca-certificates/"))
    assert certs == [f"/usr/local/share/ca-certificates/sparkstack-mirrors-{i}.crt"
                     for i in (1, 2)]  # fmt: skip
    assert "".join(files[p] for p in certs) == mirrors_ca_bundle().read_text()
    # A worker gets the same sources and CA, and nothing of the master's locks.
    worker = yaml.safe_load(R.render_cloud_init(inv, role="worker", master_ip="10.0.0.5",
                                                spark_hash=FETCHED))  # fmt: skip
    wfiles = {f["path"]: f["content"] for f in worker["write_files"]}
    assert "SPARKSTACK_PYPI_URL=https://pypi.internal/simple/\n" in wfiles[R.CONF_PATH]
    assert [p for p in wfiles if p.startswith("/usr/local/share/ca-")] == certs
    assert not [p for p in wfiles if p.startswith("/etc/sparkstack/locks/")]


def test_without_mirrors_every_tool_keeps_its_default():
    inv = edge_inventories()["pinned-sha512"]
    conf = yaml.safe_load(R.render_cloud_init(inv, role="master"))["write_files"][0]["content"]
    for key in ("APT_PROXY", "APT_MIRROR", "PYPI_URL", "NPM_URL", "HTTP_PROXY", "HTTPS_PROXY"):
        assert f"SPARKSTACK_{key}=''\n" in conf
    assert "SPARKSTACK_EXTRA_CA=no\n" in conf


def test_the_dry_run_lists_where_new_nodes_fetch_from():
    inv = edge_inventories()["mirrors"]
    rows = dict(inv.mirrors.sources(spark_url=inv.spark.tarball_url()))
    assert rows["apt (Java, Python venv, Node.js)"] == (
        "archive https://deb.internal/debian, security https://deb.internal/debian-security, "
        "through http://apt-cache.internal:3142")
    assert rows["Python packages (master)"] == "https://pypi.internal/simple/"
    assert rows["npm packages (master)"] == "https://npm.internal/"
    assert rows["Spark"].startswith("https://mirror.internal/spark/spark-4.3.0/")
    assert rows["extra trusted CAs"].endswith("(2 certificates)")
    plain = dict(edge_inventories()["example"].mirrors.sources(spark_url="x"))
    assert plain["Python packages (master)"] == "pip's default index"


def test_the_lock_covers_the_pythons_its_header_names():
    """The header the boot reads its supported Pythons from is the lock tool's own."""
    from provisioner.locks import locks

    lock = locks()
    assert lock.pythons == ("3.11", "3.12", "3.13")
    assert lock.npm_cli.integrity.startswith("sha512-")
    assert json.loads(lock.npm_lock.data)["lockfileVersion"] == 3


def test_pinned_example_still_loads_with_its_empty_mirrors(tmp_path):
    path = pinned_example(tmp_path / "inv.toml")
    inv = parse_inventory(with_changes({}), source=str(path))
    assert inv.mirrors.pypi is None and inv.mirrors.no_proxy == []
    assert inv.ssh.boot_timeout == 1200
