"""tls.mode = "acme" for real: lego on one namespace host gets the hub's certificate from
pebble, the RFC 8555 test CA, through HTTP-01 on the host's port 80. No internet, no
OpenStack.

pebble and its DNS (pebble-challtestsrv, which answers every name with the host's address)
run on this machine, bound to the bridge's and the loopback's addresses only. pebble's
own HTTPS needs a certificate; Debian's package ships none, so the test makes a tiny CA
for it, which is what tls.acme_ca_file then hands to lego.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioner.hub import HubSettings, ensure_hub, wait_for_hub
from provisioner.hub.acme import lego_args
from provisioner.hub.config import ACME_UNIT_NAME, HTTP_UNIT_NAME, HubPaths
from provisioner.inventory import Inventory
from tests.testbed.hosts import hosts

from .conftest import wait_for
from .test_hub import (
    CANDIDATE_IPS,
    HostShell,
    _hub_pid,
    _inventory,
    _skip_or_fail,
    host_images,
    in_host_mounts,
    spark_unpack,
)

pytestmark = [pytest.mark.hosts, pytest.mark.slow]
log = logging.getLogger(__name__)

DOMAIN = "hub.sparkstack.test"
GATEWAY = "10.77.0.1"  # the bridge's address on the hosts' subnet


def _free_ports(count: int) -> list[int]:
    """Ports no socket of this machine holds on any address (bound together, so distinct):
    pebble's usual fixed ports can be taken by something else on a shared machine."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


ACME_PORT, MANAGEMENT_PORT, DNS_PORT, DNS_MANAGEMENT_PORT = _free_ports(4)


# --- pebble and its DNS, as processes of this test -------------------------------------


def _tiny_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and, signed by it, pebble's server certificate for the gateway's address."""
    now = dt.datetime.now(dt.timezone.utc)

    def cert(subject: str, key, issuer: str, issuer_key, *, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in (GATEWAY, "127.0.0.1")]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca = cert("e2e acme test CA", ca_key, "e2e acme test CA", ca_key, ca=True)
    server = cert("pebble", server_key, "e2e acme test CA", ca_key, ca=False)
    paths = directory / "ca.pem", directory / "pebble.pem", directory / "pebble.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    # A session of its own, so the test can stop it (and only it) by its process group.
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# --- The test -----------------------------------------------------------------------------


@pytest.fixture
def acme_bed(tmp_path: Path) -> Iterator[tuple]:
    """The host, its shell, the CA of pebble's HTTPS, pebble's roots and intermediate."""
    image, tarball = host_images()
    if not (shutil.which("pebble") and shutil.which("pebble-challtestsrv")
            and Path("/usr/bin/lego").exists()):
        _skip_or_fail("pebble or lego is not installed: apt-get install pebble lego")
    for address, port in ((GATEWAY, ACME_PORT), ("127.0.0.1", MANAGEMENT_PORT),
                          ("127.0.0.1", DNS_PORT)):
        if _listening(address, port):
            _skip_or_fail(f"{address}:{port} is in use: is another pebble running?")
    hosts.ensure_bridge()
    ip = hosts.free_ip(CANDIDATE_IPS)
    ca, cert, key = _tiny_ca(tmp_path)
    config = tmp_path / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"{GATEWAY}:{ACME_PORT}",
        "managementListenAddress": f"127.0.0.1:{MANAGEMENT_PORT}",
        "certificate": str(cert),
        "privateKey": str(key),
        # HTTP-01 is validated on port 80, as a public CA does.
        "httpPort": 80,
        "tlsPort": 5001,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}))
    procs: list[subprocess.Popen] = []
    state_dir = hosts.default_state_dir().parent / "e2e-acme"
    server_id = f"{uuid.uuid4().hex[:8]}-e2e-acme"
    try:
        procs.append(_start(
            ["pebble-challtestsrv", "-defaultIPv4", ip, "-defaultIPv6", "",
             "-dns01", f"127.0.0.1:{DNS_PORT}", "-management", f"127.0.0.1:{DNS_MANAGEMENT_PORT}",
             "-http01", "", "-https01", "", "-tlsalpn01", ""],
            tmp_path / "challtestsrv.log"))
        # NOSLEEP: no random wait before validating; NONCEREJECT=0: no random badNonce.
        procs.append(_start(
            ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{DNS_PORT}"],
            tmp_path / "pebble.log",
            env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}))
        host = hosts.boot_host("e2e-acme", server_id, fixed_ip=ip,
                               user_data="#cloud-config\n", public_keys=[], rootfs=image,
                               state_dir=state_dir)
        boot_log = host.file("/var/log/testbed-boot.log")
        wait_for(lambda: boot_log.exists() and "booted:" in boot_log.read_text(),
                 timeout=120, what="the host's boot",
                 on_timeout=lambda: boot_log.read_text() if boot_log.exists() else "")
        # In real life lego comes from apt (the step installs it); the host has no apt
        # mirror, so it gets this machine's, from the same Debian package. The hub needs
        # Spark's py4j zip for its kernel, as in test_hub.
        in_host_mounts(host, f"cp /usr/bin/lego {host.dir}/root/usr/bin/lego && "
                       + spark_unpack(host, tarball, "*/python/lib/py4j-*-src.zip"))
        wait_for(lambda: _listening(GATEWAY, ACME_PORT) and _listening("127.0.0.1",
                 MANAGEMENT_PORT), timeout=15, what="pebble",
                 on_timeout=lambda: (tmp_path / "pebble.log").read_text())
        # The CA pebble made at start (a new one every run), from its management API.
        management = ssl.create_default_context(cafile=str(ca))
        roots = ssl.create_default_context()
        roots.load_verify_locations(cadata=_get(management, "/roots/0").decode())
        yield host, HostShell(host), ca, roots, _get(management, "/intermediates/0")
    finally:
        try:
            hosts.kill_host(server_id, state_dir=state_dir)
        finally:
            for proc in procs:
                _stop(proc)


def _get(ctx: ssl.SSLContext, path: str) -> bytes:
    with urllib.request.urlopen(f"https://127.0.0.1:{MANAGEMENT_PORT}{path}", context=ctx,
                                timeout=10) as resp:
        return resp.read()


def _acme_inventory(ca: Path) -> Inventory:
    inv = _inventory(["alice"], ["alice"])
    tls = inv.jupyterhub.tls.model_copy(update={
        "mode": "acme", "domain": DOMAIN, "email": "hub-admin@sparkstack.test",
        "acme_directory": f"https://{GATEWAY}:{ACME_PORT}/dir", "acme_ca_file": ca,
    })
    return inv.model_copy(update={"jupyterhub": inv.jupyterhub.model_copy(update={"tls": tls})})


def _served(ip: str, roots: ssl.SSLContext) -> x509.Certificate:
    """The hub's certificate, verified against pebble's root for DOMAIN (as a browser)."""
    with socket.create_connection((ip, 443), timeout=10) as raw, roots.wrap_socket(
            raw, server_hostname=DOMAIN) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def _plain_http(ip: str, path: str) -> tuple[int, str | None]:
    """Status and Location of a plain-HTTP GET of `path` on port 80, as a browser sends it."""
    connection = http.client.HTTPConnection(ip, 80, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": DOMAIN})
        response = connection.getresponse()
        return response.status, response.getheader("Location")
    finally:
        connection.close()


def test_acme_from_pebble_is_served_kept_renewed_redirects_port_80_and_is_removed_when_off(
    acme_bed, record_property
):
    host, shell, ca, roots, intermediate_pem = acme_bed
    ip = host.fixed_ip
    inv = _acme_inventory(ca)
    settings = HubSettings.from_inventory(inv, master_ip=ip)
    start = time.monotonic()

    first = ensure_hub(shell, settings, inv=inv, ready_timeout=120)
    steps = {s.name: s for s in first.steps}
    assert steps["tls"].changed and f"from https://{GATEWAY}:{ACME_PORT}/dir" in \
        steps["tls"].detail, str(steps["tls"])
    assert steps["acme"].changed
    served = _served(ip, roots)
    intermediate = x509.load_pem_x509_certificate(intermediate_pem)
    assert served.issuer == intermediate.subject
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [DOMAIN]
    der = served.public_bytes(serialization.Encoding.DER)
    assert first.fingerprint.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    # Port 80 sends browsers to the same path on the hub's HTTPS, permanently.
    assert settings.port == 443
    assert _plain_http(ip, "/some/path?next=%2Fhub") == (
        301, f"https://{DOMAIN}/some/path?next=%2Fhub")
    hub_pid = _hub_pid(shell)

    second = ensure_hub(shell, settings, inv=inv, ready_timeout=120)
    assert not second.changed, [str(s) for s in second.steps if s.changed]
    assert second.fingerprint == first.fingerprint and _hub_pid(shell) == hub_pid

    # Renewal: the files are right, the timer is enabled, and a run of the service now
    # (30+ days before expiry) leaves the certificate and the hub alone.
    p = HubPaths()
    _, modes, _ = shell.run(f"stat -c '%a %U %n' {p.key} {p.acme_service} {p.acme_timer}"
                            f" {p.acme_hook}")
    assert [line.split()[0] for line in modes.splitlines()] == ["600", "644", "644", "755"]
    service = shell.read(p.acme_service).decode()
    assert '"renew" "--days=30"' in service and f'"--renew-hook={p.acme_hook}"' in service
    assert f'"LEGO_CA_CERTIFICATES={p.acme_ca}"' in service
    assert "OnCalendar=daily" in shell.read(p.acme_timer).decode()
    assert shell.run(f"systemctl is-enabled {ACME_UNIT_NAME}.timer", check=False)[0] == 0
    status, out, err = shell.run(f"systemctl start {ACME_UNIT_NAME}.service", check=False,
                                 timeout=120)
    assert status == 0, out + err
    # The daemonless systemctl of the test rootfs logs a unit's output here.
    journal = shell.read(f"/var/log/journal/{ACME_UNIT_NAME}.service.log") or b""
    assert b"no renewal" in journal, journal[-2000:]
    assert _served(ip, roots).fingerprint(hashes.SHA256()) == served.fingerprint(
        hashes.SHA256())
    assert _hub_pid(shell) == hub_pid, "the renewal restarted the hub without renewing"

    # A renewal that does happen (asking for more days than pebble's certificates have):
    # the hook installs the new certificate and restarts the hub, which then serves it.
    # Without lego's random pause of up to 8 minutes, which the timer keeps.
    argv = ["/usr/bin/lego", *lego_args(settings), "renew", "--days=100000",
            "--no-random-sleep", f"--renew-hook={p.acme_hook}"]
    status, out, err = shell.run(f"LEGO_CA_CERTIFICATES={p.acme_ca} "
                                 + " ".join(shlex.quote(a) for a in argv) + " 2>&1",
                                 check=False, timeout=120)
    assert status == 0, out + err
    wait_for_hub(shell, settings, timeout=60)
    renewed = _served(ip, roots)
    assert renewed.serial_number != served.serial_number
    assert renewed.issuer == intermediate.subject
    assert _hub_pid(shell) != hub_pid, "the hook did not restart the hub"
    assert shell.run(f"stat -c %a {p.key}")[1].strip() == "600"
    # The renewal's challenge went through port 80, which still redirects.
    assert _plain_http(ip, "/hub/login")[1] == f"https://{DOMAIN}/hub/login"

    # The cluster leaves ACME: the renewal timer, its service and port 80 go with it.
    plain = _inventory(["alice"], ["alice"])
    assert plain.jupyterhub.tls.mode != "acme"
    off = ensure_hub(shell, HubSettings.from_inventory(plain, master_ip=ip), inv=plain,
                     ready_timeout=120)
    steps = {s.name: s for s in off.steps}
    assert steps["acme"].changed and "removed" in steps["acme"].detail, str(steps["acme"])
    for unit in (f"{ACME_UNIT_NAME}.timer", f"{ACME_UNIT_NAME}.service",
                 f"{HTTP_UNIT_NAME}.service"):
        assert shell.run(f"systemctl is-enabled {unit}", check=False)[0] != 0, unit
    for path in (p.acme_timer, p.acme_service, p.http_unit, p.http_server):
        assert shell.read(path) is None, path
    wait_for(lambda: not _listening(ip, 80), timeout=30, what="port 80 to close")
    again = ensure_hub(shell, HubSettings.from_inventory(plain, master_ip=ip), inv=plain,
                       ready_timeout=120)
    assert "acme" not in {s.name for s in again.steps}, "nothing left to remove is no step"

    seconds = time.monotonic() - start
    record_property("acme_first_run_s", round(first.seconds, 1))
    record_property("acme_second_run_s", round(second.seconds, 1))
    record_property("acme_test_s", round(seconds, 1))
    log.warning("acme: first run %.1f s, second run %.1f s, whole test %.1f s",
                first.seconds, second.seconds, seconds)
