"""The cluster's own certificate authority, on the user's machine, for the hub's HTTPS.

A self-signed server certificate can only be trusted as itself: every new one (another
address, a renewal) must be trusted again, browsers offer no more than a per-site
exception, and some TLS clients refuse a CA:FALSE certificate as a trust anchor. A CA made
per cluster is trusted once (a browser import, ``REQUESTS_CA_BUNDLE``, ``curl --cacert``)
and then vouches for every certificate the hub gets.

Its key stays beside the cluster's other files (0600) and never goes to a node; the hub's
key is made on the master, which sends back only a certificate request (CSR). The CA may
sign no DNS name at all (name constraints: the hub's certificate names IP addresses), so a
stolen CA key cannot impersonate a named site to whoever trusted it. `down` deletes both
files: a browser that still trusts the certificate then trusts a CA nobody can sign with.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioner.errors import RemoteError
from provisioner.hub.shell import MASTER
from provisioner.keys import hub_ca_paths

log = logging.getLogger(__name__)

CA_DAYS = 3650
# 825 days: the longest validity clients such as Apple's accept for a server certificate,
# even from a CA the user added.
SERVER_DAYS = 825
# A CA this close to its end is replaced: its certificates could not live long enough.
CA_RENEW_BEFORE = dt.timedelta(days=90)
# Clocks of the user's machine and the clients disagree a little.
BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class ClusterCA:
    """The cluster's CA: its certificate, its key, and the file users trust."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issued(self, cert: x509.Certificate) -> bool:
        """Whether this CA signed ``cert`` (a CA of the same name made later did not)."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def sign_server(
        self, csr_pem: bytes, *, addresses: Iterable[str], now: dt.datetime | None = None
    ) -> x509.Certificate:
        """A server certificate for the CSR's key, valid for ``addresses`` (IPs).

        Only the CSR's public key is used: the names, usages and validity are this CA's
        decision, whatever the request asked for.
        """
        public = _request_key(csr_pem)
        now = now or dt.datetime.now(dt.timezone.utc)
        start = now - BACKDATE
        end = min(start + dt.timedelta(days=SERVER_DAYS), self.cert.not_valid_after_utc)
        ips = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        # A space keeps the name from looking like a host name to any check of the CN.
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sparkstack hub")])
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(ips), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )


def _request_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The EC public key of a certificate request signed by that key, or RemoteError."""
    try:
        csr: x509.CertificateSigningRequest | None = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        csr = None
    public = csr.public_key() if csr is not None and csr.is_signature_valid else None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise RemoteError(
            "openssl on the master did not return a certificate request for an EC key",
            resource=MASTER,
            step="hub tls",
            log_tail=csr_pem.decode(errors="replace")[-2000:],
        )
    return public


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(
    cluster: str, *, now: dt.datetime | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A CA key and its self-signed certificate: CA:TRUE, path length 0 (it signs server
    certificates only), no DNS name allowed below it, CA_DAYS long."""
    now = now or dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    created = f"{now:%Y-%m-%d %H:%M}"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sparkstack"),
            # The date tells two CAs of a cluster made twice apart in a browser's list.
            x509.NameAttribute(NameOID.COMMON_NAME, f"sparkstack {cluster} hub CA {created}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        # A zero-length dNSName excludes every DNS name (RFC 5280 4.2.1.10; the CA/Browser
        # Forum's baseline requirements use it so for constrained CAs).
        .add_extension(
            x509.NameConstraints(permitted_subtrees=None, excluded_subtrees=[x509.DNSName("")]),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _load(cert_path: Path, key_path: Path, *, now: dt.datetime) -> ClusterCA | str:
    """The CA in these files, or why it cannot be used."""
    if not cert_path.exists() or not key_path.exists():
        return "no CA yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        return "CA files do not parse"
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return "CA key is not an EC key"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != (
        cert.public_key().public_bytes(serialization.Encoding.PEM, public)
    ):
        return "CA key is not the certificate's"
    if cert.not_valid_after_utc - now < CA_RENEW_BEFORE:
        return f"CA expires {cert.not_valid_after_utc:%Y-%m-%d}"
    return ClusterCA(cert=cert, key=key, cert_path=cert_path)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically, with ``mode`` from the moment the file exists."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)  # against a umask that took bits away
    os.replace(tmp, path)


def ensure_ca(key_dir: Path, *, cluster: str, now: dt.datetime | None = None) -> ClusterCA:
    """The cluster's CA from ``key_dir``, made there first if it is missing, unusable or
    near its end (then the hub's certificate is re-issued and users trust the new file)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    cert_path, key_path = hub_ca_paths(key_dir)
    found = _load(cert_path, key_path, now=now)
    if isinstance(found, ClusterCA):
        return found
    log.info("hub CA: new one in %s (%s)", key_dir, found)
    key, cert = new_ca(cluster, now=now)
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The key first: a certificate is never left behind without its key.
    _write(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ClusterCA(cert=cert, key=key, cert_path=cert_path)
