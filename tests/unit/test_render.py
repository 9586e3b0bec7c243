"""render.py: every rendered document is valid for the program that will read it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from provisioner import render as R
from provisioner.errors import UserInputError
from provisioner.inventory import parse_inventory
from tests.unit.inventory_cases import PINNED_SHA512, edge_inventories, with_changes
from tests.unit.tools import need

MASTER_IP = "10.20.0.5"
SCRIPTS = {
    "/etc/sparkstack/sparkstack.conf",
    "/usr/local/sbin/sparkstack-install-spark",
    "/usr/local/sbin/sparkstack-bootstrap",
}
# What sparkstack would have fetched from Apache's site for an inventory that pins nothing.
FETCHED = R.SparkHash(
    sha512="cd" * 64,
    source="fetched by sparkstack from https://downloads.apache.org/spark/spark-4.3.0/"
    "spark-4.3.0-bin-hadoop3.tgz.sha512",
)
REPO = Path(__file__).resolve().parents[2]


def render(inv, **kwargs) -> str:
    """As `up` and `render` do: the inventory's own hash, else the fetched one."""
    known = R.SparkHash.of_inventory(inv.spark)
    return R.render_cloud_init(inv, spark_hash=known or FETCHED, **kwargs)


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Every edge inventory rendered for both roles, written to files."""
    out = tmp_path_factory.mktemp("user-data")
    docs = {}
    for name, inv in edge_inventories().items():
        for role in R.ROLES:
            path = out / f"{name}-{role}.yaml"
            path.write_text(render(inv, role=role, master_ip=MASTER_IP))
            docs[(name, role)] = path
    # What `up` sends (compressed, with the master's locks), for every edge inventory.
    for name, inv in edge_inventories().items():
        path = out / f"{name}-api-master.yaml"
        path.write_text(render(inv, role="master", master_ip=MASTER_IP, for_api=True))
        docs[(f"{name}-api", "master")] = path
    # A master launched from Horizon does not know its own IP yet.
    path = out / "example-master-no-ip.yaml"
    path.write_text(render(edge_inventories()["example"], role="master"))
    docs[("example-no-ip", "master")] = path
    return docs


def files_of(path: Path) -> dict[str, dict]:
    return {f["path"]: f for f in yaml.safe_load(path.read_text())["write_files"]}


# cloud-init's own validator in one process for every document: the same function
# `cloud-init schema --config-file` calls, without paying its ~0.7 s start-up eleven times.
_VALIDATE_ALL = """
import sys
from cloudinit.config.schema import get_schema, validate_cloudconfig_file
schema = get_schema()
failed = 0
for path in sys.argv[1:]:
    try:
        validate_cloudconfig_file(path, schema)
        print("Valid cloud-config:", path)
    except Exception as exc:
        failed += 1
        print("INVALID", path, exc)
sys.exit(1 if failed else 0)
"""


def cloud_init_python() -> str:
    """The interpreter cloud-init runs under (Debian's python3, not the project's)."""
    script = Path(need("cloud-init"))
    return script.read_text().splitlines()[0].removeprefix("#!").strip()


def test_cloud_init_schema_cli_accepts_the_example(documents):
    """Exactly what a user runs: `cloud-init schema --config-file` on `sparkstack render`."""
    paths = [documents[("example", "master")], documents[("example", "worker")]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda p: subprocess.run(
                    [need("cloud-init"), "schema", "--config-file", str(p)],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                ),  # fmt: skip
                paths,
            )
        )
    for path, result in zip(paths, results, strict=True):
        assert result.returncode == 0, (path, result.stdout, result.stderr)
        assert f"Valid cloud-config: {path}" in result.stdout


def test_cloud_init_schema_accepts_every_document(documents):
    assert len(documents) == 3 * len(edge_inventories()) + 1  # both roles, what `up` sends, Horizon
    result = subprocess.run(
        [cloud_init_python(), "-c", _VALIDATE_ALL, *map(str, documents.values())],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("Valid cloud-config:") == len(documents)


def test_cloud_init_schema_checker_does_reject_a_broken_document(tmp_path):
    """The check above would be worthless if the checker accepted anything."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\nwrite_files:\n  - path: /x\n    permissions: 644\n")
    result = subprocess.run(
        [need("cloud-init"), "schema", "--config-file", str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "permissions" in result.stdout + result.stderr
    batch = subprocess.run(
        [cloud_init_python(), "-c", _VALIDATE_ALL, str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert batch.returncode == 1 and "INVALID" in batch.stdout and "permissions" in batch.stdout


def test_every_embedded_script_passes_shellcheck(documents, tmp_path):
    tool = need("shellcheck")
    scripts: dict[str, str] = {}  # content -> file; most scripts are the same across inventories
    for (name, role), path in documents.items():
        found = {p: f for p, f in files_of(path).items() if p in SCRIPTS}
        assert set(found) == SCRIPTS, (name, role)
        for file_path, entry in found.items():
            if entry["content"] not in scripts:
                target = tmp_path / f"{name}-{role}-{Path(file_path).name}"
                target.write_text(entry["content"])
                scripts[entry["content"]] = str(target)
    result = subprocess.run(
        [tool, "--shell=bash", "--severity=style", *scripts.values()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_documents_are_one_cloud_config_that_runs_the_bootstrap(documents):
    for (name, role), path in documents.items():
        text = path.read_text()
        assert text.startswith("#cloud-config\n"), name
        doc = yaml.safe_load(text)
        assert doc["runcmd"] == [["/usr/local/sbin/sparkstack-bootstrap"]]
        assert doc["manage_etc_hosts"] is False  # else 127.0.1.1 comes back at each boot
        entries = files_of(path)
        assert entries["/usr/local/sbin/sparkstack-bootstrap"]["permissions"] == "0755"
        assert entries["/usr/local/sbin/sparkstack-install-spark"]["permissions"] == "0755"
        unit = entries[f"/etc/systemd/system/spark-{role}.service"]["content"]
        assert "User=spark" in unit and "Type=forking" in unit
        assert "start-slave" not in text and "SPARK_MASTER_IP" not in text
        if role == "worker":
            assert f"start-worker.sh spark://{MASTER_IP}:7077" in unit
            assert "/etc/sparkstack/kernel.json.in" not in entries
        else:
            assert "sbin/start-master.sh" in unit
            json.loads(entries["/etc/sparkstack/kernel.json.in"]["content"])


def test_node_settings_read_back_in_bash_as_the_inventory_says(documents, tmp_path):
    """The settings file is shell: odd characters in a mirror URL must survive quoting."""
    invs = edge_inventories()
    hashes = {
        "custom-mirror": (FETCHED.sha512, FETCHED.source, "no"),
        "example": (FETCHED.sha512, FETCHED.source, "no"),
        "pinned-sha512": (PINNED_SHA512, "pinned in the inventory (spark.sha512)", "no"),
        "trust-mirror": (
            "",
            "published by the mirror beside the tarball (spark.trust_mirror_checksum)",
            "yes",
        ),
    }
    for name, (sha512, source, trust) in hashes.items():
        inv = invs[name]
        conf = tmp_path / f"{name}.conf"
        conf.write_text(
            files_of(documents[(name, "worker")])["/etc/sparkstack/sparkstack.conf"]["content"]
        )
        out = subprocess.run(
            ["bash", "-c", '. "$0"; printf "%s\\n" "$SPARK_URL" "$SPARK_SHA512" '
             '"$SPARK_SHA512_SOURCE" "$SPARK_TRUST_MIRROR_CHECKSUM" "$SPARKSTACK_MASTER_IP" '
             '"$SPARK_EXECUTOR_MEMORY" "$SPARK_CORES_MAX"', str(conf)],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.splitlines()  # fmt: skip
        assert out == [
            inv.spark.tarball_url(),
            sha512,
            source,
            trust,
            MASTER_IP,
            inv.spark.limits.executor_memory,
            str(inv.spark.limits.cores_max),
        ]
    assert invs["pinned-sha512"].spark.sha512 == PINNED_SHA512
    assert "it's" in invs["custom-mirror"].spark.tarball_url()


def test_an_unpinned_inventory_renders_only_with_a_fetched_hash():
    """The pure renderer fetches nothing: without a hash there is nothing a node could check
    the mirror's tarball against, so it refuses."""
    inv = edge_inventories()["example"]
    with pytest.raises(UserInputError, match=r"neither pinned \(spark.sha512\) nor fetched"):
        R.render_cloud_init(inv, role="worker", master_ip=MASTER_IP)


def test_only_the_master_installs_from_the_index_and_only_pinned_with_hashes(documents):
    for (name, role), path in documents.items():
        bootstrap = files_of(path)["/usr/local/sbin/sparkstack-bootstrap"]["content"]
        installs = [line for line in bootstrap.splitlines() if "-m pip install" in line]
        if role == "worker":
            assert installs == [], name
            continue
        assert len(installs) == 1, installs
        assert '"$SPARKSTACK_VENV/bin/python" -m pip install "${args[@]}" -r "$req"' in installs[0]
        body = bootstrap[bootstrap.index("step_python() {"):bootstrap.index(installs[0])]
        assert f"local req={R.REQUIREMENTS_PATH} " in body
        for flag in ("--require-hashes", "--only-binary=:all:", "--timeout", "--retries"):
            assert flag in body, (name, flag)
        # The locks ride along only in what `up` sends; Horizon's master gets them over SSH.
        locks = {p for p in files_of(path) if p.startswith("/etc/sparkstack/locks/")}
        if name.endswith("-api"):
            assert locks == {R.REQUIREMENTS_PATH, f"{R.NPM_LOCK_DIR}/package.json",
                             f"{R.NPM_LOCK_DIR}/package-lock.json"}, name  # fmt: skip
            text = files_of(path)[R.REQUIREMENTS_PATH]["content"]
            assert text == (REPO / "image" / "requirements.txt").read_text()
        else:
            assert locks == set(), name
    # One recipe: image/provision.sh installs nothing itself, it runs the boot script's steps.
    provision = (REPO / "image" / "provision.sh").read_text()
    assert 'steps="base user java proxy python"' in provision
    assert "/usr/local/sbin/sparkstack-bootstrap $steps" in provision
    for own in ("pip ", "npm ci", "python3 -m venv", "openjdk"):
        assert own not in provision, own


def test_nodes_are_hardened_by_files_cloud_init_writes(documents):
    for (name, role), path in documents.items():
        entries = files_of(path)
        sshd = entries["/etc/ssh/sshd_config.d/10-sparkstack.conf"]["content"].splitlines()
        assert {"PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "PermitRootLogin no"} <= set(sshd)  # fmt: skip
        guard = entries["/etc/sparkstack/metadata-guard.nft"]["content"]
        assert "ip daddr 169.254.169.254 meta skuid != 0" in guard
        unit = entries["/etc/systemd/system/sparkstack-metadata-guard.service"]["content"]
        assert "ExecStart=/usr/sbin/nft -f /etc/sparkstack/metadata-guard.nft" in unit
        # the cluster's own files: readable by all, nothing secret in them
        ours = {p: e for p, e in entries.items() if p.startswith("/etc/sparkstack/")}
        assert {e["permissions"] for e in ours.values()} == {"0644"}, (name, role)
        bootstrap = entries["/usr/local/sbin/sparkstack-bootstrap"]["content"]
        assert "-m 0750 /var/lib/spark /var/log/spark /var/lib/spark/run" in bootstrap


def test_user_data_fits_novas_limit(documents):
    for (name, role), path in documents.items():
        text = path.read_text()
        compressed = name.endswith("-api")  # as `up` sends it; else as Horizon pastes it
        size = R.user_data_base64_size(text, compressed=compressed)
        # Keep room to grow: the limit is a hard failure at create time. The Horizon form
        # carries every script as text, commented for the person who pastes it (with two
        # CA certificates it is at 91%); `up`'s is compressed and has far more room.
        assert size < R.MAX_USER_DATA_BASE64 * (0.6 if compressed else 0.95), (name, role, size)


def test_oversized_user_data_is_refused_before_nova_sees_it():
    text = "#cloud-config\n" + "x" * 49200
    with pytest.raises(UserInputError, match=r"65620 bytes in base64, over Nova's limit of 65535"):
        R.check_user_data_size(text, compressed=False)
    # what `up` sends is compressed: the same text fits, random bytes of that size do not
    R.check_user_data_size(text)
    noise = "#cloud-config\n" + os.urandom(60_000).hex()
    with pytest.raises(UserInputError, match=r"over Nova's limit of 65535"):
        R.check_user_data_size(noise)


def test_what_up_sends_is_gzip_that_unpacks_to_the_document():
    inv = edge_inventories()["pinned-sha512"]
    text = render(inv, role="master", master_ip=MASTER_IP, for_api=True)
    wire = R.wire_user_data(text)
    assert wire[:2] == b"\x1f\x8b"  # cloud-init unpacks gzip user_data by its magic
    assert gzip.decompress(wire).decode() == text
    assert R.wire_user_data(text) == wire  # the same document, the same bytes


def test_worker_document_is_the_same_for_every_worker():
    one = parse_inventory(with_changes({"workers.count": 1}), source="a")
    many = parse_inventory(with_changes({"workers.count": 40}), source="b")
    assert render(one, role="worker", master_ip=MASTER_IP) == render(
        many, role="worker", master_ip=MASTER_IP
    )


def test_no_secret_reaches_user_data(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n")
    cert, tls_key = tmp_path / "hub.crt", tmp_path / "hub.key"
    cert.write_text("CERT-MATERIAL")
    tls_key.write_text("TLS-KEY-MATERIAL")
    inv = parse_inventory(
        with_changes(
            {
                "ssh.keypair": "team",
                "ssh.private_key": str(key),
                "jupyterhub.tls.mode": "files",
                "jupyterhub.tls.cert_file": str(cert),
                "jupyterhub.tls.key_file": str(tls_key),
            }
        ),
        source="x",
    )
    for role in R.ROLES:
        text = render(inv, role=role, master_ip=MASTER_IP)
        for secret in ("SECRET-KEY-MATERIAL", "TLS-KEY-MATERIAL", str(key), str(tls_key)):
            assert secret not in text


@pytest.mark.parametrize(
    ("role", "ip", "message"),
    [
        ("worker", None, "--master-ip is required"),
        ("worker", "10.0.0.256", "not an IPv4 address: '10.0.0.256'"),
        ("worker", "fe80::1", "not an IPv4 address"),
        ("worker", "127.0.0.1", "cannot be the master's private address"),
        ("master", "master", "not an IPv4 address: 'master'"),
        ("gateway", "10.0.0.1", "unknown role 'gateway'"),
    ],
)
def test_bad_render_arguments_are_user_errors(role, ip, message):
    inv = edge_inventories()["example"]
    with pytest.raises(UserInputError, match=message):
        render(inv, role=role, master_ip=ip)


def test_kernel_json_has_what_a_pyspark_notebook_needs():
    inv = edge_inventories()["example"]
    py4j = "/opt/spark/python/lib/py4j-0.10.9.7-src.zip"
    kernel = json.loads(
        R.render_kernel(inv, master_ip=MASTER_IP, py4j_zip=py4j, java_home="/usr/lib/jvm/j17")
    )
    assert kernel["argv"] == [
        "/opt/sparkstack/venv/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}",
    ]  # fmt: skip
    assert kernel["language"] == "python"
    env = kernel["env"]
    assert env["SPARK_HOME"] == "/opt/spark"
    assert env["JAVA_HOME"] == "/usr/lib/jvm/j17"
    assert env["PYTHONPATH"] == f"/opt/spark/python:{py4j}"
    assert env["PYTHONSTARTUP"] == "/opt/spark/python/pyspark/shell.py"
    assert env["PYSPARK_PYTHON"] == kernel["argv"][0]
    assert env["PYSPARK_SUBMIT_ARGS"] == (
        f"--master spark://{MASTER_IP}:7077 --conf spark.driver.host={MASTER_IP} "
        "--conf spark.ui.showConsoleProgress=false --driver-memory 1g pyspark-shell"
    )
    # kernel.json values are not expanded: every path must be absolute and literal.
    for value in env.values():
        assert "$" not in value
        for part in value.split(":"):
            if "/" in part:
                assert part.startswith("/"), value


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"master_ip": "x", "py4j_zip": "/a/py4j.zip"}, "not an IPv4 address"),
        ({"master_ip": MASTER_IP, "py4j_zip": "lib/py4j.zip"}, "absolute path to a .zip"),
        (
            {"master_ip": MASTER_IP, "py4j_zip": "/a/py4j.zip", "java_home": "jvm"},
            "JAVA_HOME must be an absolute path",
        ),
    ],
)
def test_bad_kernel_arguments_are_user_errors(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        R.render_kernel(edge_inventories()["example"], **kwargs)


def test_the_plain_document_leaves_comments_out_but_not_here_documents():
    script = "\n".join([
        "#!/bin/bash", *(f"# header {i}" for i in range(11)),
        "# a comment further down", "  # an indented one",
        "# shellcheck disable=SC2086", "echo hi # trailing comments stay",
        "cat >x <<'PY'", "# inside a here-document: part of the file", "PY",
        "cat >y <<ENV", "# also kept", "ENV", "# gone again", "",
    ])
    out = R.compact_shell(script)
    assert "a comment further down" not in out and "an indented one" not in out
    assert "gone again" not in out
    for kept in ("# header 10", "# shellcheck disable=SC2086", "echo hi # trailing",
                 "# inside a here-document", "# also kept"):
        assert kept in out, kept
    assert R.compact_shell(script, on=False) == script
    # what the API sends keeps every comment; what Horizon gets does not
    inv = parse_inventory(with_changes({}), source="t")
    api = render(inv, role="master", for_api=True)
    plain = render(inv, role="master")
    assert "# The first failure is the one to report" in api
    assert "# The first failure is the one to report" not in plain


def test_the_masters_kernel_starts_spark_in_the_background():
    inv = parse_inventory(with_changes({}), source="t")
    files = {f["path"]: f["content"]
             for f in yaml.safe_load(render(inv, role="master"))["write_files"]}  # fmt: skip
    kernel = json.loads(files["/etc/sparkstack/kernel.json.in"])
    assert kernel["env"]["PYTHONSTARTUP"] == R.KERNEL_STARTUP
    startup = files[R.KERNEL_STARTUP]
    assert startup == R.kernel_startup()
    # the startup script runs Spark's own shell.py, in a thread, and waits before Spark cells
    # (the node gets its code only: ast.unparse writes strings in single quotes)
    assert "os.path.join(os.environ['SPARK_HOME'], 'python', 'pyspark', 'shell.py')" in startup
    assert "threading.Thread(target=connect" in startup
    assert "ipython.events.register('pre_run_cell'" in startup
    assert '"""' not in startup and "\n    # " not in startup  # docstrings and comments
    compile(startup, R.KERNEL_STARTUP, "exec")
