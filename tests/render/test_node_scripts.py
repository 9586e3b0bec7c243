"""The rendered node scripts, run for real in a throwaway root against a loopback mirror.

These are the bootstrap and installer exactly as `sparkstack render` writes them; only
the mirror (an inventory setting) points at 127.0.0.1. Steps that need the cloud or a real
Spark (package installs, starting the daemons) are left to the hosts test bed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from provisioner.cli import main
from provisioner.inventory import parse_inventory
from provisioner.render import READY_MARKER, render_cloud_init
from provisioner.workflows.spark_auth import DEFAULTS, START, pid_file, with_auth
from tests.ci import in_ci
from tests.render.conftest import (
    PY4J,
    SPARK_VERSION,
    TARBALL,
    Mirror,
    Root,
    daemonless_systemctl,
    fake_spark_tarball,
    gpg_style_line,
    sha512sum_line,
)
from tests.unit.inventory_cases import with_changes
from tests.unit.tools import need

BOOTSTRAP = "/usr/local/sbin/sparkstack-bootstrap"


# For the tests whose node never gets as far as checking a download.
UNUSED_SHA512 = "f" * 128


def node(
    root: Root, *, role: str, mirror_url: str, master_ip: str, sha512: str = UNUSED_SHA512,
    mirrors: dict[str, object] | None = None, **spark: object,
) -> None:  # fmt: skip
    """What cloud-init writes from the document `render` makes for this inventory."""
    changes = {"spark.mirror": mirror_url, "spark.version": SPARK_VERSION, "spark.sha512": sha512}
    changes.update({f"spark.{key}": value for key, value in spark.items()})
    changes.update({f"mirrors.{key}": value for key, value in (mirrors or {}).items()})
    inv = parse_inventory(with_changes(changes), source="test")
    root.write_files(render_cloud_init(inv, role=role, master_ip=master_ip))


def good_sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def assert_unit_passes_systemd_verify(root: Root, unit: str) -> None:
    """systemd's own checker on the rendered unit, with Spark installed where it points."""
    need("systemd-analyze")
    result = root.run(
        # Without a terminal or a journal, systemd would log its findings to the kernel.
        "env", "SYSTEMD_LOG_TARGET=console", "SYSTEMD_LOG_LEVEL=notice",
        "systemd-analyze", "verify", f"/etc/systemd/system/{unit}.service",
    )  # fmt: skip
    ours = [line for line in (result.stdout + result.stderr).splitlines() if unit in line]
    assert ours == [], ours
    assert result.returncode == 0, result.stdout + result.stderr


def files_of(document: str) -> dict[str, str]:
    return {f["path"]: f["content"] for f in yaml.safe_load(document)["write_files"]}


def toml_text(data: dict, prefix: str = "") -> str:
    """A nested dict back to TOML (strings, numbers, booleans, lists of strings)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(lines) + "\n"
    for key, value in tables:
        name = f"{prefix}{key}"
        text += f"\n[{name}]\n" + toml_text(value, prefix=f"{name}.")
    return text


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_corrupt_tarball_is_refused_and_nothing_is_installed(root: Root, mirror: Mirror, host_ip):
    good = fake_spark_tarball()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    url = mirror.publish("corrupt", bytes(bad), sha512sum_line(good))
    node(root, role="worker", mirror_url=url, master_ip=host_ip, sha512=good_sha512(good))

    result = root.run(BOOTSTRAP, "user", "spark", "configure")

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"sha512 MISMATCH for {url}/spark-{SPARK_VERSION}/{TARBALL}" in output
    assert "Refusing to install" in output
    assert listing(root.host_path("/opt")) == []  # no Spark, no leftover download
    failed = root.host_path("/var/lib/sparkstack/failed").read_text()
    assert failed == (
        "step=spark\n"
        f"reason=sha512 mismatch for {url}/spark-{SPARK_VERSION}/{TARBALL}: refused to install "
        "(see the lines above)\n"
    )
    assert not root.host_path("/var/lib/sparkstack/ready").exists()
    # configure never ran: the steps stop at the first failure.
    assert "[configure]" not in output


def test_a_dropped_download_is_refused(root: Root, mirror: Mirror, host_ip):
    good = fake_spark_tarball()
    url = mirror.publish("dropped", good, sha512sum_line(good))
    mirror.truncated.add(f"/dropped/spark-{SPARK_VERSION}/{TARBALL}")
    node(root, role="worker", mirror_url=url, master_ip=host_ip, sha512=good_sha512(good))

    result = root.run(BOOTSTRAP, "spark")

    assert result.returncode != 0
    assert "could not download" in result.stdout + result.stderr
    assert listing(root.host_path("/opt")) == []
    assert "step=spark\n" in root.host_path("/var/lib/sparkstack/failed").read_text()


def test_pinned_sha512_wins_over_the_published_one(root: Root, mirror: Mirror, host_ip):
    good = fake_spark_tarball()
    url = mirror.publish("pinned-wrong", good, sha512sum_line(good))
    node(root, role="worker", mirror_url=url, master_ip=host_ip, sha512="0" * 128)

    result = root.run(BOOTSTRAP, "spark")

    assert result.returncode != 0
    assert "pinned in the inventory" in result.stdout + result.stderr
    assert listing(root.host_path("/opt")) == []
    assert mirror.hits[f"/pinned-wrong/spark-{SPARK_VERSION}/{TARBALL}.sha512"] == 0


def test_worker_installs_verified_spark_and_configures_itself(root: Root, apache: Mirror, host_ip):
    """A mirror the inventory trusts with its own .sha512 (over https; here in the older
    GPG layout): the node reads and checks it."""
    good = fake_spark_tarball()
    url = apache.publish("gpg", good, gpg_style_line(good))
    tarball_path = f"/gpg/spark-{SPARK_VERSION}/{TARBALL}"
    root.trust(apache.ca_file)
    node(root, role="worker", mirror_url=url, master_ip=host_ip, sha512="",
         trust_mirror_checksum=True)  # fmt: skip
    host_hosts = Path("/etc/hosts").read_text()

    result = root.run(BOOTSTRAP, "mirrors", "base", "java", "python", "user", "spark",
                      "configure", "ready")  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    # pre-baked: no apt
    assert "Python venv and tools already present" in result.stdout
    assert "Java already present" in result.stdout
    assert (
        f"sha512 verified (published by the mirror at {url}/spark-{SPARK_VERSION}/{TARBALL}"
        ".sha512 (spark.trust_mirror_checksum))" in result.stdout
    )
    spark = root.host_path("/opt/spark")
    assert (spark / "bin" / "spark-submit").is_file()
    assert (spark / "python" / "lib" / PY4J).is_file()
    # Spark itself belongs to root (daemons and notebooks cannot alter it) ...
    assert {p.stat().st_uid for p in spark.rglob("*")} == {0}
    assert f"version={SPARK_VERSION}\n" in (spark / ".sparkstack-installed").read_text()
    # ... while the daemons' own directories belong to the spark user.
    passwd = root.host_path("/etc/passwd").read_text()
    spark_uid, spark_gid = next(
        (int(x.split(":")[2]), int(x.split(":")[3]))
        for x in passwd.splitlines() if x.startswith("spark:")
    )  # fmt: skip
    assert spark_uid != 0
    for d in ("/var/lib/spark", "/var/lib/spark/work", "/var/log/spark", "/var/lib/spark/run"):
        info = root.host_path(d).stat()
        # Spark's own, not the hub users': its logs, pid files and executors' scratch space
        assert (info.st_uid, info.st_gid, oct(info.st_mode & 0o777)) == (
            spark_uid, spark_gid, "0o750"), d  # fmt: skip

    env = (spark / "conf" / "spark-env.sh").read_text()
    assert f"export SPARK_LOCAL_IP={host_ip}\n" in env
    assert f"export SPARK_MASTER_HOST={host_ip}\n" in env
    assert f"export SPARK_WORKER_CORES={os.cpu_count()}\n" in env
    assert "export SPARK_WORKER_MEMORY=" in env
    assert "export PYSPARK_PYTHON=/opt/sparkstack/venv/bin/python\n" in env
    java_home = env.split("export JAVA_HOME=")[1].split("\n")[0]
    assert Path(java_home, "bin", "java").exists()  # a real JDK path of this machine
    defaults = (spark / "conf" / "spark-defaults.conf").read_text().split("\n")
    for key, value in (
        ("spark.master", f"spark://{host_ip}:7077"),
        ("spark.executor.memory", "2g"),
        ("spark.cores.max", "4"),
        ("spark.master.rest.enabled", "false"),
        ("spark.decommission.enabled", "true"),
        ("spark.worker.cleanup.enabled", "true"),
        ("spark.driver.port", "40000"),
        ("spark.blockManager.port", "41000"),
    ):
        assert f"{key:<50}{value}" in defaults, key
    assert not any(line.startswith("spark.driver.host") for line in defaults)  # master only

    # The venv every node shares, usable by every user.
    venv_python = root.host_path("/opt/sparkstack/venv/bin/python")
    assert venv_python.exists() and os.stat(venv_python).st_mode & 0o005

    hosts = root.host_path("/etc/hosts").read_text()
    hostname = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert f"{host_ip} {hostname} # sparkstack\n" in hosts
    assert not any(
        line.split()[:1] == ["127.0.1.1"] and hostname in line.split()[1:]
        for line in hosts.splitlines()
    )
    assert Path("/etc/hosts").read_text() == host_hosts  # the host itself is untouched
    assert root.host_path("/var/lib/sparkstack/ready").read_text() == (
        f"role=worker\nspark_version={SPARK_VERSION}\nprivate_ip={host_ip}\n"
        "spark=waiting-for-secret\n"
    )

    assert_unit_passes_systemd_verify(root, "spark-worker")

    # Running again (a reboot, a re-run) downloads nothing.
    downloads = apache.hits[tarball_path]
    again = root.run(BOOTSTRAP, "spark")
    assert again.returncode == 0, again.stderr
    assert f"Spark {SPARK_VERSION} is already installed" in again.stdout
    assert apache.hits[tarball_path] == downloads == 1


def test_master_writes_a_kernel_json_with_the_py4j_spark_ships(root: Root, mirror: Mirror, host_ip):
    good = fake_spark_tarball()
    url = mirror.publish("pinned", good, None)  # no .sha512 published: the pin is used
    node(root, role="master", mirror_url=url, master_ip=host_ip, sha512=good_sha512(good))

    result = root.run(BOOTSTRAP, "user", "spark", "configure", "kernel", "ready")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "sha512 verified (pinned in the inventory" in result.stdout
    kernel_file = root.host_path("/usr/local/share/jupyter/kernels/pyspark/kernel.json")
    kernel = json.loads(kernel_file.read_text())
    env = kernel["env"]
    assert env["PYTHONPATH"] == f"/opt/spark/python:/opt/spark/python/lib/{PY4J}"
    assert env["PYSPARK_SUBMIT_ARGS"] == (
        f"--master spark://{host_ip}:7077 --conf spark.driver.host={host_ip} "
        "--conf spark.ui.showConsoleProgress=false --driver-memory 1g pyspark-shell"
    )
    assert Path(env["JAVA_HOME"], "bin", "java").exists()
    assert oct(kernel_file.stat().st_mode & 0o777) == "0o644"
    defaults = root.host_path("/opt/spark/conf/spark-defaults.conf").read_text()
    assert f"{'spark.driver.host':<50}{host_ip}\n" in defaults
    env_sh = root.host_path("/opt/spark/conf/spark-env.sh").read_text()
    assert '-Dspark.deploy.defaultCores=4 -Dspark.master.rest.enabled=false"' in env_sh
    assert "SPARK_WORKER_CORES" not in env_sh
    assert_unit_passes_systemd_verify(root, "spark-master")


def test_master_refuses_to_come_up_under_another_address(root: Root, mirror: Mirror, host_ip):
    node(root, role="master", mirror_url=mirror.base + "/unused", master_ip="203.0.113.7")

    result = root.run(BOOTSTRAP, "configure")

    assert result.returncode != 0
    assert "rendered for master IP 203.0.113.7, but this node's address is" in result.stderr
    assert (
        root.host_path("/var/lib/sparkstack/failed")
        .read_text()
        .startswith("step=configure\nreason=rendered for master IP 203.0.113.7")
    )


def booted_worker(root: Root, mirror: Mirror, address: str) -> None:
    """A worker after its boot script, the daemonless systemctl running its unit (as on the
    hosts test bed) in a network namespace whose only address is the node's."""
    if daemonless_systemctl() is None:
        message = (
            "Debian's daemonless systemctl is not unpacked: apt-get download systemctl && "
            "dpkg-deb -x systemctl_*_all.deb /opt/daemonless-systemctl"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    good = fake_spark_tarball()
    url = mirror.publish("daemons", good, sha512sum_line(good))
    node(root, role="worker", mirror_url=url, master_ip=address, sha512=good_sha512(good))
    installed = root.run(BOOTSTRAP, "user", "spark")  # needs the mirror: host network
    assert installed.returncode == 0, installed.stdout + installed.stderr


def test_boot_enables_the_unit_but_starts_no_daemon_without_the_secret(root: Root, mirror: Mirror):
    """Boot configures and enables, starts nothing (nothing listens on the worker's port),
    says so in the ready marker; a start by hand fails, the unit saying why."""
    address = "10.77.9.2"
    booted_worker(root, mirror, address)
    listening = f"(exec 3<>/dev/tcp/{address}/7078) 2>/dev/null"

    result = root.run(
        "bash",
        "-c",
        f"""
        {BOOTSTRAP} configure service ready || exit 1
        echo "after boot: $(systemctl is-active spark-worker)"
        if {listening}; then echo "open after boot"; fi
        if systemctl start spark-worker 2>/dev/null; then echo "started without the secret"; fi
        if {listening}; then echo "open after a start by hand"; fi
        echo done
        """,
        address=address,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "spark-worker enabled, to start once sparkstack brings the cluster's secret"
        in result.stdout
    )
    assert "after boot: inactive\n" in result.stdout
    assert "open after" not in result.stdout and "started without" not in result.stdout
    assert result.stdout.endswith("done\n")
    # the unit's own refusal, in the unit's log as the daemonless systemctl keeps it
    unit_log = root.host_path("/var/log/journal/spark-worker.service.log").read_text()
    assert f"spark-worker: no cluster secret in {DEFAULTS}; sparkstack up brings it" in unit_log
    assert not root.host_path("/var/log/spark/worker.out").exists()  # never ran
    assert root.host_path(READY_MARKER).read_text() == (
        f"role=worker\nspark_version={SPARK_VERSION}\nprivate_ip={address}\n"
        "spark=waiting-for-secret\n"
    )


def test_the_ssh_stage_starts_the_daemon_once_and_restarts_it_only_for_a_newer_config(
    root: Root, mirror: Mirror
):
    """What ensure_spark_auth runs on a node once the block is written: the daemon fresh
    from boot is started (as spark), a second run leaves it, a newer config restarts it."""
    address = "10.77.9.2"
    booted_worker(root, mirror, address)
    pid = pid_file("worker")
    ssh_stage = " ".join(shlex.quote(a) for a in [
        "bash", "-c", START, "start", "spark-worker", pid, DEFAULTS, READY_MARKER,
        "SPARK_WORKER_PORT",
    ])  # fmt: skip

    result = root.run(
        "bash",
        "-c",
        f"""
        {BOOTSTRAP} configure service ready || exit 1
        # the block as the SSH stage writes it: root:spark 0640
        printf '%s' {shlex.quote(with_auth("", "ab" * 32))} >>{DEFAULTS}
        chgrp spark {DEFAULTS} && chmod 0640 {DEFAULTS}
        echo "first: $({ssh_stage})"
        echo "state: $(systemctl is-active spark-worker)"
        echo "daemon user: $(ps -o user= -p "$(cat {pid})")"
        echo "again: $({ssh_stage})"
        touch {DEFAULTS}
        echo "newer config: $({ssh_stage})"
        echo "marker: $(sed -n 's/^spark=//p' {READY_MARKER})"
        systemctl stop spark-worker
        if (exec 3<>/dev/tcp/{address}/7078) 2>/dev/null; then echo "still listening"; fi
        echo done
        """,
        address=address,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "first: started\nstate: active\ndaemon user: spark\n" in result.stdout
    assert "again: running\nnewer config: restarted\nmarker: authenticated\n" in result.stdout
    assert "still listening" not in result.stdout and result.stdout.endswith("done\n")
    log = root.host_path("/var/log/spark/worker.out").read_text()
    # once for the secret, once for the newer config
    assert log.count(f"started by spark with: spark://{address}:7077\n") == 2, log


def test_an_unforeseen_failure_still_leaves_its_reason(root: Root, mirror: Mirror, host_ip):
    """Not every failure goes through a message of ours: the marker must say what broke."""
    node(root, role="worker", mirror_url=mirror.base + "/unused", master_ip=host_ip)

    result = root.run(BOOTSTRAP, "configure")  # Spark was never installed

    assert result.returncode != 0
    failed = root.host_path("/var/lib/sparkstack/failed").read_text().splitlines()
    assert failed[0] == "step=configure"
    assert failed[1].startswith('reason=exit code 1 from: cat > "$SPARK_HOME/conf/spark-env.sh"')
    assert "FAILED: exit code 1 from:" in result.stderr
    assert not root.host_path("/var/lib/sparkstack/ready").exists()


def render_with_cli(capsys, tmp_path: Path, changes: dict, *, master_ip: str) -> tuple[str, str]:
    """`sparkstack render --role worker` on an inventory with these changes: the document
    and what the command said on stderr."""
    inv_file = tmp_path / "inventory.toml"
    data = with_changes({"spark.version": SPARK_VERSION, **changes})
    inv_file.write_text(toml_text(data))
    out = tmp_path / "worker.yaml"
    code = main(["render", "-i", str(inv_file), "--role", "worker", "--master-ip", master_ip,
                 "-o", str(out)])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 0, err
    return out.read_text(), err


def test_the_hash_comes_from_apaches_site_so_a_mirror_that_replaced_both_files_is_refused(
    root: Root, mirror: Mirror, apache: Mirror, host_ip, tmp_path, capsys, monkeypatch
):
    """The custom mirror serves another tarball and a .sha512 that matches it; the hash
    `render` fetched from Apache's site (over https) is the one the node checks."""
    good = fake_spark_tarball()
    evil = fake_spark_tarball(release="Spark 4.3.0 with something extra\n")
    assert good != evil
    site = apache.publish("dist/spark", good, sha512sum_line(good))
    url = mirror.publish("evil", evil, sha512sum_line(evil))
    monkeypatch.setenv("SSL_CERT_FILE", str(apache.ca_file))  # what this machine trusts
    sha_url = f"{site}/spark-{SPARK_VERSION}/{TARBALL}.sha512"

    document, err = render_with_cli(
        capsys, tmp_path, {"spark.mirror": url, "spark.checksums": [site]}, master_ip=host_ip
    )

    assert f"spark tarball sha512: fetched by sparkstack from {sha_url}" in err
    conf = files_of(document)["/etc/sparkstack/sparkstack.conf"]
    assert f"SPARK_SHA512={good_sha512(good)}\n" in conf
    assert good_sha512(evil) not in document
    root.write_files(document)
    result = root.run(BOOTSTRAP, "spark")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"sha512 MISMATCH for {url}/spark-{SPARK_VERSION}/{TARBALL}" in output
    assert f"(fetched by sparkstack from {sha_url}), got {good_sha512(evil)}" in output
    assert mirror.hits[f"/evil/spark-{SPARK_VERSION}/{TARBALL}.sha512"] == 0  # never asked
    assert listing(root.host_path("/opt")) == []
    assert root.host_path("/var/lib/sparkstack/failed").read_text().startswith("step=spark\n")


def test_a_release_only_the_archive_has_is_verified_with_the_archives_hash(
    root: Root, mirror: Mirror, apache: Mirror, host_ip, tmp_path, capsys, monkeypatch
):
    """The download area no longer lists the release (404): the archive's .sha512, in the
    older GPG layout, is the one written into the document, and the mirror's tarball
    passes it."""
    good = fake_spark_tarball()
    archive = apache.publish("archive/dist/spark", good, gpg_style_line(good))
    url = mirror.publish("plain", good, None)
    monkeypatch.setenv("SSL_CERT_FILE", str(apache.ca_file))
    checksums = [f"{apache.base}/gone/spark", archive]

    document, err = render_with_cli(
        capsys, tmp_path, {"spark.mirror": url, "spark.checksums": checksums}, master_ip=host_ip
    )

    sha_url = f"{archive}/spark-{SPARK_VERSION}/{TARBALL}.sha512"
    assert f"spark tarball sha512: fetched by sparkstack from {sha_url}" in err
    assert apache.hits[f"/gone/spark/spark-{SPARK_VERSION}/{TARBALL}.sha512"] == 1
    root.write_files(document)
    result = root.run(BOOTSTRAP, "spark")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"sha512 verified (fetched by sparkstack from {sha_url})" in result.stdout
    assert (root.host_path("/opt/spark") / "bin" / "spark-submit").is_file()


def test_harden_turns_ssh_passwords_and_root_off_and_keeps_users_off_the_metadata_service(
    root: Root, mirror: Mirror
):
    """The harden step in a network namespace of its own, where the metadata address is a
    web server on loopback: root reaches it, any other user is refused at once."""
    need("nft")
    need("sshd")
    address = "10.77.9.3"
    node(root, role="worker", mirror_url=mirror.base + "/unused", master_ip=address)
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection(('169.254.169.254', 80), timeout=3).close()\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    result = root.run(
        "bash",
        "-c",
        f"""
        ip addr add 169.254.169.254/32 dev lo
        python3 -m http.server --bind 169.254.169.254 80 >/dev/null 2>&1 &
        for _ in $(seq 50); do (exec 3<>/dev/tcp/169.254.169.254/80) 2>/dev/null && break
          sleep 0.1; done
        {BOOTSTRAP} harden || exit 1
        echo "root: $(python3 -c {shlex.quote(probe)})"
        echo "nobody: $(setpriv --reuid=nobody --regid=nogroup --clear-groups \\
          python3 -c {shlex.quote(probe)})"
        sshd -T | grep -E '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) '
        {BOOTSTRAP} harden >/dev/null || exit 1  # again: the rule is replaced, not doubled
        nft list table inet sparkstack_metadata | grep -c 'meta skuid != 0'
        stat -c '%a %U' /etc/sparkstack
        """,
        address=address,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "metadata service (169.254.169.254) reachable by root only" in result.stdout
    assert "root: connected\n" in result.stdout
    assert "nobody: ConnectionRefusedError\n" in result.stdout
    assert "passwordauthentication no\n" in result.stdout
    assert "kbdinteractiveauthentication no\n" in result.stdout
    assert "permitrootlogin no\n" in result.stdout
    assert result.stdout.endswith("4\n755 root\n")
    assert root.host_path("/var/lib/sparkstack/metadata-guard").read_text() == "active\n"
    assert_unit_passes_systemd_verify(root, "sparkstack-metadata-guard")  # for reboots


def test_the_mirrors_step_points_apt_at_the_mirrors_and_trusts_the_ca(root: Root, host_ip):
    """The image's own apt sources (deb822 and one-line) are rewritten to the mirrors, the
    security archive to its own; the proxy and the fetch bounds go to apt's config; the CA
    bundle lands in the system store that apt, pip, npm and curl read. Run twice: the
    same result (the originals are kept and rewritten from, never the rewrites)."""
    from tests.unit.inventory_cases import mirrors_ca_bundle

    sources = root._writable("/etc/apt/sources.list.d/image.sources")
    sources.parent.mkdir(parents=True, exist_ok=True)
    sources.write_text(
        "Types: deb\nURIs: http://deb.example.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://security.example.org/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    one_line = root._writable("/etc/apt/sources.list.d/old.list")
    one_line.write_text("deb [arch=amd64] https://deb.example.org/debian bookworm main\n")
    node(root, role="worker", mirror_url="http://127.0.0.1:1", master_ip=host_ip, mirrors={
        "apt_proxy": "http://10.9.9.9:3142", "https_proxy": "http://10.9.9.8:3128",
        "apt_mirror": "http://mirror.internal/debian",
        "apt_security_mirror": "http://mirror.internal/debian-security",
        "ca_bundle": str(mirrors_ca_bundle()),
    })  # fmt: skip

    for _ in range(2):
        result = root.run(BOOTSTRAP, "mirrors")
        assert result.returncode == 0, result.stdout + result.stderr

    assert root.host_path("/etc/apt/apt.conf.d/80sparkstack").read_text().splitlines()[1:] == [
        'Acquire::http::Proxy "http://10.9.9.9:3142";',
        'Acquire::https::Proxy "http://10.9.9.8:3128";',
    ]
    rewritten = sources.read_text()
    assert "URIs: http://mirror.internal/debian\n" in rewritten
    assert "URIs: http://mirror.internal/debian-security\n" in rewritten
    assert "example.org" not in rewritten
    assert one_line.read_text() == (
        "deb [arch=amd64] http://mirror.internal/debian bookworm main\n")
    assert "deb.example.org" in Path(f"{one_line}.sparkstack-orig").read_text()
    bundle = root.host_path("/etc/ssl/certs/ca-certificates.crt").read_text()
    for pem in mirrors_ca_bundle().read_text().split("-----END CERTIFICATE-----")[:-1]:
        assert pem.split("-----BEGIN CERTIFICATE-----")[1].strip() in bundle


def test_a_package_index_that_cannot_be_reached_fails_the_step_in_bounded_time_naming_it(
    root: Root, host_ip
):
    """The master's pip against an index nobody answers for: the failed marker names the
    step and the index, within the fetch bounds (no 20-minute wait)."""
    changes = {"spark.sha512": UNUSED_SHA512, "mirrors.pypi": "http://127.0.0.1:9/simple/"}
    inv = parse_inventory(with_changes(changes), source="test")
    root.write_files(render_cloud_init(inv, role="master", master_ip=host_ip, for_api=True))
    started = time.monotonic()
    result = root.run(BOOTSTRAP, "python", timeout=300)
    took = time.monotonic() - started
    assert result.returncode != 0
    failed = root.host_path("/var/lib/sparkstack/failed").read_text()
    assert "step=python\n" in failed, failed
    assert "cannot reach the package index http://127.0.0.1:9/simple/" in failed, failed
    assert took < 150, took


def test_a_python_the_lock_has_no_wheels_for_fails_the_masters_boot_saying_so(
    root: Root, host_ip
):
    """Ubuntu 22.04's 3.10, say: the master stops at once, naming the versions the lock
    holds, instead of pip failing later on some package."""
    changes = {"spark.sha512": UNUSED_SHA512}
    inv = parse_inventory(with_changes(changes), source="test")
    root.write_files(render_cloud_init(inv, role="master", master_ip=host_ip, for_api=True))
    conf = root._writable("/etc/sparkstack/sparkstack.conf")
    # This machine's own Python stands in for one the lock does not cover.
    conf.write_text(conf.read_text().replace("SPARKSTACK_LOCK_PYTHONS='3.11 3.12 3.13'",
                                             "SPARKSTACK_LOCK_PYTHONS='3.98 3.99'"))
    result = root.run(BOOTSTRAP, "base")
    assert result.returncode != 0
    failed = root.host_path("/var/lib/sparkstack/failed").read_text()
    assert "step=base\n" in failed, failed
    assert "lock has wheels for CPython 3.98 3.99 only" in failed, failed
    assert "not an older release such as Ubuntu 22.04" in failed, failed
