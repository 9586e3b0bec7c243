"""A throwaway root to run the rendered node scripts in, and two loopback web sites: a
plain-HTTP Spark mirror, and an HTTPS one standing for Apache's own site (a certificate
made here, which the tests and the throwaway root trust)."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import io
import ipaddress
import os
import shutil
import ssl
import subprocess
import tarfile
import tempfile
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.ci import in_ci
from tests.unit.tools import need

SPARK_VERSION = "4.3.0"
TARBALL = f"spark-{SPARK_VERSION}-bin-hadoop3.tgz"
# Not Spark 4's py4j: proves the node uses the zip the tarball ships, not a guess.
PY4J = "py4j-0.10.9.7-src.zip"

# Runs inside `unshare --mount --pid --fork`: every mount (and process) dies with the
# namespace, so nothing can leak onto the host even when the test is killed.
_ENTER_ROOT = r"""
set -eu
root=$1 usr_local=$2 etc_changes=$3 address=$4
shift 4
if [ -n "$address" ]; then  # a network namespace of our own: loopback carries this address
  ip link set lo up
  ip addr add "$address/24" dev lo
fi
# The host's /etc as seen by the node, with every change landing in $etc_changes.
mount -t overlay overlay \
  -o "lowerdir=/etc,upperdir=$etc_changes/upper,workdir=$etc_changes/work" "$root/etc"
mount --bind /usr "$root/usr"
mount -o remount,bind,ro "$root/usr"
mount --bind "$usr_local" "$root/usr/local"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
exec chroot "$root" /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
"""

# The test root has no network but loopback, and must never reach a package mirror.
_FAKE_APT = """#!/bin/sh
echo "apt-get must not run in this test: $*" >&2
exit 100
"""


# Stand-ins for Spark's daemons with the contract the units rely on: the sbin script reads
# conf/spark-env.sh, starts a process named java that listens where the daemon would, writes
# $SPARK_PID_DIR/spark-$SPARK_IDENT_STRING-<class>-1.pid and returns.
_FAKE_JVM = b"""#!/usr/bin/python3
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(16)
while True:
    server.accept()[0].close()
"""
_FAKE_START = """#!/bin/bash
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/conf/spark-env.sh"
run="$SPARK_PID_DIR/spark-$SPARK_IDENT_STRING-org.apache.spark.deploy.{cls}-1"
echo "started by $(id -un) with: $*" >>"$SPARK_LOG_DIR/{role}.out"
nohup "$here/bin/java" "$SPARK_LOCAL_IP" "${port}" >>"$SPARK_LOG_DIR/{role}.out" 2>&1 </dev/null &
echo $! >"$run.pid"
"""
_FAKE_STOP = """#!/bin/bash
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/conf/spark-env.sh"
kill "$(cat "$SPARK_PID_DIR/spark-$SPARK_IDENT_STRING-org.apache.spark.deploy.{cls}-1.pid")"
"""


def fake_spark_tarball(release: str = f"Spark {SPARK_VERSION} built for Hadoop 3.4.1\n") -> bytes:
    """A tarball in Apache's layout with what the install, configure and service steps use
    (another ``release`` text: another tarball, just as installable)."""
    top = f"spark-{SPARK_VERSION}-bin-hadoop3"
    py4j = io.BytesIO()
    with zipfile.ZipFile(py4j, "w") as z:
        z.writestr("py4j/__init__.py", "")
    master = {"cls": "master.Master", "role": "master", "port": "{SPARK_MASTER_PORT}"}
    worker = {"cls": "worker.Worker", "role": "worker", "port": "{SPARK_WORKER_PORT}"}
    files = {
        "RELEASE": (release.encode(), 0o644),
        "bin/spark-submit": (b"#!/bin/sh\nexit 0\n", 0o755),
        "bin/java": (_FAKE_JVM, 0o755),
        "sbin/spark-daemon.sh": (b"#!/bin/sh\nexit 0\n", 0o755),
        "sbin/start-master.sh": (_FAKE_START.format(**master).encode(), 0o755),
        "sbin/start-worker.sh": (_FAKE_START.format(**worker).encode(), 0o755),
        "sbin/stop-master.sh": (_FAKE_STOP.format(**master).encode(), 0o755),
        "sbin/stop-worker.sh": (_FAKE_STOP.format(**worker).encode(), 0o755),
        "conf/spark-defaults.conf.template": (b"# template\n", 0o644),
        f"python/lib/{PY4J}": (py4j.getvalue(), 0o644),
        "python/pyspark/shell.py": (b"", 0o644),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.uid, info.gid = len(data), mode, 4242, 4242
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def sha512sum_line(data: bytes) -> bytes:
    return f"{hashlib.sha512(data).hexdigest()}  {TARBALL}\n".encode()


def gpg_style_line(data: bytes) -> bytes:
    """The layout of older Apache .sha512 files: upper case, groups of 8, wrapped."""
    digest = hashlib.sha512(data).hexdigest().upper()
    groups = [digest[i : i + 8] for i in range(0, 128, 8)]
    pad = " " * (len(TARBALL) + 2)
    return (
        f"{TARBALL}: {' '.join(groups[:6])}\n{pad}{' '.join(groups[6:12])}\n"
        f"{pad}{' '.join(groups[12:])}\n"
    ).encode()


@dataclass
class Mirror:
    """An HTTP(S) server on 127.0.0.1 serving fixed bytes per path; counts requests."""

    base: str
    routes: dict[str, bytes] = field(default_factory=dict)
    truncated: set[str] = field(default_factory=set)
    hits: Counter = field(default_factory=Counter)
    ca_file: Path | None = None  # the certificate to trust, for the HTTPS one

    def publish(self, prefix: str, tarball: bytes, sha512: bytes | None) -> str:
        """Serve a release under /<prefix>/; returns the mirror URL for the inventory."""
        path = f"/{prefix}/spark-{SPARK_VERSION}/{TARBALL}"
        self.routes[path] = tarball
        if sha512 is not None:
            self.routes[path + ".sha512"] = sha512
        return f"{self.base}/{prefix}"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA (trust it to trust the server)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sparkstack test site")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "site.crt", directory / "site.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="session")
def mirror() -> Iterator[Mirror]:
    """A custom mirror over plain HTTP."""
    yield from _serve()


@pytest.fixture(scope="session")
def apache(tmp_path_factory) -> Iterator[Mirror]:
    """Apache's own site, over HTTPS with a certificate of its own (``ca_file``)."""
    cert, key = self_signed(tmp_path_factory.mktemp("site-tls"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    yield from _serve(context, ca_file=cert)


def _serve(context: ssl.SSLContext | None = None, ca_file: Path | None = None) -> Iterator[Mirror]:
    state = Mirror(base="", ca_file=ca_file)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            state.hits[self.path] += 1
            body = state.routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in state.truncated:
                # A mirror dropping the connection half way: the client holds half a file.
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if context is not None else "http"
    state.base = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class Root:
    """A throwaway root: the host's /etc under an overlay, empty /opt and /var, the host's
    /usr read-only with a /usr/local of its own."""

    path: Path
    usr_local: Path
    etc_changes: Path

    def write_files(self, user_data: str) -> None:
        """What cloud-init's write_files does with the rendered document."""
        for entry in yaml.safe_load(user_data)["write_files"]:
            target = self._writable(entry["path"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(entry["content"])
            target.chmod(int(entry.get("permissions", "0644"), 8))

    def trust(self, ca_file: Path) -> None:
        """Make the node's tools (curl) trust a certificate, as an image with a private CA."""
        bundle = self._writable("/etc/ssl/certs/ca-certificates.crt")
        bundle.parent.mkdir(parents=True, exist_ok=True)
        system = Path("/etc/ssl/certs/ca-certificates.crt")
        base = system.read_bytes() if system.exists() else b""
        bundle.write_bytes(base + b"\n" + ca_file.read_bytes())

    def host_path(self, node_path: str) -> Path:
        """Where a path of the node can be read on this host (never write to it: for an
        /etc file the node did not change, this is the host's own file)."""
        target = self._writable(node_path)
        if node_path.startswith("/etc/") and not target.exists():
            return Path(node_path)
        return target

    def _writable(self, node_path: str) -> Path:
        if node_path.startswith("/usr/local/"):
            return self.usr_local / node_path.removeprefix("/usr/local/")
        if node_path.startswith("/etc/"):
            return self.etc_changes / "upper" / node_path.removeprefix("/etc/")
        return self.path / node_path.lstrip("/")

    def run(
        self, *argv: str, address: str | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess:
        """Run argv in the root. With ``address``, in a new network namespace where that
        address (on loopback) is the node's only one: daemons then listen on nothing shared."""
        namespaces = ["--mount", "--pid", "--fork", "--kill-child"]
        if address:
            namespaces.insert(0, "--net")
        return subprocess.run(
            [need("unshare"), *namespaces, "--", "bash", "-c", _ENTER_ROOT, "enter-root",
             str(self.path), str(self.usr_local), str(self.etc_changes), address or "",
             *argv],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


@pytest.fixture
def root() -> Iterator[Root]:
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("the throwaway-root tests need root (mount namespaces, chroot)")
        pytest.skip("needs root (mount namespaces, chroot)")
    with tempfile.TemporaryDirectory(prefix="sparkstack-root-") as tmp:
        base = Path(tmp)
        path, usr_local, etc_changes = base / "root", base / "usr-local", base / "etc"
        for d in ("upper", "work"):
            (etc_changes / d).mkdir(parents=True)
        for d in ("etc", "usr", "dev", "proc", "opt", "var/lib", "var/log", "var/tmp", "run"):
            (path / d).mkdir(parents=True, exist_ok=True)
        (path / "tmp").mkdir(mode=0o1777)
        (path / "tmp").chmod(0o1777)
        for link in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
            host = Path("/") / link
            if host.is_symlink():
                (path / link).symlink_to(os.readlink(host))
            elif host.exists():
                pytest.skip(f"/{link} is not a symlink into /usr (not a merged-/usr system)")
        (usr_local / "sbin").mkdir(parents=True)
        apt = usr_local / "sbin" / "apt-get"
        apt.write_text(_FAKE_APT)
        apt.chmod(0o755)
        systemctl = daemonless_systemctl()
        if systemctl is not None:
            # Debian's daemonless systemctl, as on the hosts test bed (no systemd as PID 1).
            (usr_local / "bin").mkdir()
            shutil.copy2(systemctl, usr_local / "bin" / "systemctl")
        (path / "root").mkdir(mode=0o700)
        yield Root(path=path, usr_local=usr_local, etc_changes=etc_changes)
        # Mounts lived only in the namespace of each run, so this removes plain files only.


def daemonless_systemctl() -> Path | None:
    """The `systemctl` script of Debian's package of that name, unpacked (not installed:
    it would replace systemd's own systemctl on this machine)."""
    path = Path(
        os.environ.get(
            "SPARKSTACK_DAEMONLESS_SYSTEMCTL", "/opt/daemonless-systemctl/usr/bin/systemctl"
        )
    )
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def host_ip() -> str:
    """This machine's first global IPv4 address: what the node scripts will find."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    pytest.skip("no global IPv4 address on this host")
    raise AssertionError  # unreachable
