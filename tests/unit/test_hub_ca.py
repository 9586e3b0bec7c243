"""The cluster's CA and the hub certificates it signs: their properties, the real openssl
steps of ensure_tls run by a root shell on this machine, and the chain verified the way
users' clients verify it (Python's ssl and requests against a real HTTPS server)."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import io
import ipaddress
import os
import ssl
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from rich.console import Console

from provisioner.commands.output import hub_json, print_hub
from provisioner.errors import RemoteError
from provisioner.hub import HubPaths, HubSettings, ensure_tls, fingerprint
from provisioner.hub.ca import CA_DAYS, SERVER_DAYS, ClusterCA, ensure_ca, new_ca
from provisioner.inventory import load_inventory
from provisioner.keys import hub_ca_paths, remove_cluster_files
from provisioner.workflows.hub_stage import HubOutcome

ROOT = Path(__file__).resolve().parents[2]
as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the hub's key must be root's, as on the master"
)


def _csr(key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asks for anything")])
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        # What a request asks for is not what it gets: the CA decides.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


# --- The CA ------------------------------------------------------------------------------


def test_the_ca_is_a_constrained_ten_year_ca_kept_in_private_files(tmp_path):
    key_dir = tmp_path / "demo"
    ca = ensure_ca(key_dir, cluster="demo")
    cert_path, key_path = hub_ca_paths(key_dir)
    assert ca.cert_path == cert_path
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert == ca.cert and cert.subject == cert.issuer
    assert "demo" in cert.subject.rfc4514_string()
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    names = _ext(cert, x509.NameConstraints)
    assert names.critical and names.value.excluded_subtrees == [x509.DNSName("")]
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert CA_DAYS <= days <= CA_DAYS + 1


def test_the_ca_is_kept_and_replaced_only_when_lost_broken_or_near_its_end(tmp_path):
    first = ensure_ca(tmp_path, cluster="demo")
    assert ensure_ca(tmp_path, cluster="demo").cert == first.cert
    cert_path, key_path = hub_ca_paths(tmp_path)
    cert_path.unlink()  # the file users trust, lost
    second = ensure_ca(tmp_path, cluster="demo")
    assert second.cert != first.cert and cert_path.exists()
    key_path.write_bytes(b"not a key")
    third = ensure_ca(tmp_path, cluster="demo")
    assert third.cert != second.cert
    in_ten_years = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=CA_DAYS - 30)
    assert ensure_ca(tmp_path, cluster="demo", now=in_ten_years).cert != third.cert


def test_down_removes_the_ca_with_the_clusters_other_files(tmp_path):
    ensure_ca(tmp_path / "demo", cluster="demo")
    removed = remove_cluster_files(tmp_path / "demo")
    assert set(removed) == set(hub_ca_paths(tmp_path / "demo"))
    assert not (tmp_path / "demo").exists()


# --- The certificates it signs --------------------------------------------------------------


def test_a_server_certificate_names_the_addresses_and_can_sign_nothing(tmp_path):
    ca = ensure_ca(tmp_path, cluster="demo")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.sign_server(_csr(key), addresses=["10.0.0.5", "203.0.113.7", "2001:db8::1"])
    assert cert.public_key() == key.public_key()
    assert ca.issued(cert)
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(a) for a in ("10.0.0.5", "203.0.113.7", "2001:db8::1")
    ]
    assert san.get_values_for_type(x509.DNSName) == []
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=SERVER_DAYS)
    assert cert.issuer == ca.cert.subject


def test_a_server_certificate_ends_with_its_ca_at_the_latest():
    now = dt.datetime.now(dt.timezone.utc)
    key, cert = new_ca("demo", now=now - dt.timedelta(days=CA_DAYS - 400))
    ca = ClusterCA(cert=cert, key=key, cert_path=Path("unused"))
    issued = ca.sign_server(_csr(), addresses=["10.0.0.5"], now=now)
    assert issued.not_valid_after_utc == cert.not_valid_after_utc


def test_another_ca_of_the_same_cluster_did_not_issue_it(tmp_path):
    one = ensure_ca(tmp_path / "one", cluster="demo")
    other = ensure_ca(tmp_path / "other", cluster="demo")
    cert = one.sign_server(_csr(), addresses=["10.0.0.5"])
    assert one.issued(cert) and not other.issued(cert)


@pytest.mark.parametrize("reply", [b"", b"Can't open config\n", b"-----BEGIN CERTIFICATE-----"])
def test_what_is_not_a_certificate_request_is_refused_with_the_masters_output(tmp_path, reply):
    ca = ensure_ca(tmp_path, cluster="demo")
    with pytest.raises(RemoteError, match="did not return a certificate request"):
        ca.sign_server(reply, addresses=["10.0.0.5"])


# --- ensure_tls: the key made by openssl on the "node", its request signed here -----------


class _LocalRoot:
    """A Shell on this machine, as root: a real /bin/sh and openssl, as on the master."""

    def run(self, command, *, input=None, timeout=None, check=True):
        proc = subprocess.run(
            ["/bin/sh", "-c", command],
            input=input or b"",
            capture_output=True,
            timeout=timeout or 60,
        )
        if check and proc.returncode != 0:
            raise RemoteError(f"{command[:80]} failed", log_tail=proc.stderr.decode())
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    def put(self, path, data, *, mode, owner, group):
        raise AssertionError(f"unexpected put: {path}")

    def read(self, path):
        return Path(path).read_bytes() if Path(path).exists() else None


def _settings(tmp_path: Path, addresses=("127.0.0.1", "203.0.113.7")) -> HubSettings:
    paths = HubPaths(
        config_dir=str(tmp_path / "node" / "etc"), state_dir=str(tmp_path / "node" / "state")
    )
    Path(paths.tls_dir).mkdir(parents=True)
    return HubSettings(
        users=("alice",),
        admins=("alice",),
        port=443,
        spark_master_url="spark://127.0.0.1:7077",
        addresses=addresses,
        paths=paths,
    )


@as_root
def test_the_hub_gets_a_ca_signed_certificate_once_its_key_made_on_the_node(tmp_path):
    ca = ensure_ca(tmp_path / "local", cluster="demo")
    settings = _settings(tmp_path)
    node = _LocalRoot()
    first = ensure_tls(node, settings, ca=ca)
    assert first.changed, first
    served = Path(settings.paths.cert).read_bytes()
    leaf, *chain = x509.load_pem_x509_certificates(served)
    assert ca.issued(leaf) and chain == [ca.cert]
    assert first.fingerprint == fingerprint(served)
    key = Path(settings.paths.key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_uid == 0
    assert not list(Path(settings.paths.tls_dir).glob("*.new"))
    second = ensure_tls(node, settings, ca=ca)
    assert not second.changed and second.fingerprint == first.fingerprint, second
    assert Path(settings.paths.cert).read_bytes() == served


@as_root
def test_a_certificate_the_ca_did_not_sign_is_replaced(tmp_path):
    settings = _settings(tmp_path)
    node = _LocalRoot()
    # An older cluster: the node signed its own certificate.
    old = ensure_tls(node, settings)
    assert old.changed and "self-signed" in old.detail
    ca = ensure_ca(tmp_path / "local", cluster="demo")
    signed = ensure_tls(node, settings, ca=ca)
    assert signed.changed and "not signed by the cluster's CA" in signed.detail, signed
    # The CA file lost: a new CA, so a new certificate again; then nothing changes.
    for path in hub_ca_paths(tmp_path / "local"):
        path.unlink()
    new = ensure_ca(tmp_path / "local", cluster="demo")
    again = ensure_tls(node, settings, ca=new)
    assert again.changed and again.fingerprint != signed.fingerprint
    assert not ensure_tls(node, settings, ca=new).changed


# --- What a client sees: the chain against a real HTTPS server -----------------------------


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        return None


@contextlib.contextmanager
def _serve(cert: Path, key: Path) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 with this certificate (and chain) and key; its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def served_hub(tmp_path) -> Iterator[tuple[ClusterCA, int]]:
    """The files ensure_tls made, served on 127.0.0.1 as the hub serves them."""
    if os.geteuid() != 0:
        pytest.skip("the hub's key must be root's, as on the master")
    ca = ensure_ca(tmp_path / "local", cluster="demo")
    settings = _settings(tmp_path)
    ensure_tls(_LocalRoot(), settings, ca=ca)
    with _serve(Path(settings.paths.cert), Path(settings.paths.key)) as port:
        yield ca, port


def test_python_trusts_the_hub_through_the_ca_file_with_its_address_checked(served_hub):
    ca, port = served_hub
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    response = requests.get(
        f"https://127.0.0.1:{port}/hub/api", verify=str(ca.cert_path), timeout=10
    )
    assert response.status_code == 200
    # The same server by a name the certificate does not carry is refused.
    with pytest.raises(requests.exceptions.SSLError, match="mismatch"):
        requests.get(f"https://localhost:{port}/hub/api", verify=str(ca.cert_path), timeout=10)
    # ... and so is any client that does not trust the CA.
    other = ensure_ca(ca.cert_path.parent.parent / "other", cluster="demo")
    with pytest.raises(requests.exceptions.SSLError, match="verify failed"):
        requests.get(f"https://127.0.0.1:{port}/hub/api", verify=str(other.cert_path), timeout=10)


def test_the_ca_cannot_vouch_for_a_named_site(tmp_path):
    """Even with its key, a certificate for a DNS name does not verify: the constraint."""
    ca = ensure_ca(tmp_path / "local", cluster="demo")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    cert, key_file = tmp_path / "forged.crt", tmp_path / "forged.key"
    cert.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with (
        _serve(cert, key_file) as port,
        pytest.raises(requests.exceptions.SSLError, match="subtree violation"),
    ):
        requests.get(f"https://localhost:{port}/", verify=str(ca.cert_path), timeout=10)


# --- What `up` and `hub` print ----------------------------------------------------------------


def test_up_says_where_the_ca_is_and_how_to_trust_it(tmp_path):
    inv = load_inventory(ROOT / "tests" / "testbed" / "inventory.testbed.toml")
    ca_file = tmp_path / "demo" / "hub-ca.crt"
    outcome = HubOutcome(
        url="https://10.78.0.5/",
        fingerprint="AB:CD",
        changed=False,
        credentials=tmp_path / "demo" / "credentials.toml",
        ca_file=ca_file,
    )
    buffer = io.StringIO()
    print_hub(Console(file=buffer, width=200, emoji=False), inv, outcome)
    text = buffer.getvalue()
    assert f"certificate authority to trust once: {ca_file}" in text
    assert f"REQUESTS_CA_BUNDLE={ca_file}" in text and f"curl --cacert {ca_file}" in text
    assert "browsers: import it as an authority" in text
    assert hub_json(outcome)["ca_file"] == str(ca_file)
    # An ACME certificate or the inventory's own: no CA to trust.
    plain = HubOutcome(
        url="https://hub.example.org/",
        fingerprint="AB:CD",
        changed=False,
        credentials=tmp_path / "c.toml",
    )
    buffer = io.StringIO()
    print_hub(Console(file=buffer, width=200, emoji=False), inv, plain)
    assert "authority" not in buffer.getvalue() and hub_json(plain)["ca_file"] is None
