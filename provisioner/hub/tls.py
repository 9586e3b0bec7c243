"""The hub's TLS certificate: signed by the cluster's CA on this machine, the inventory's
own files, or ACME (provisioner.hub.acme).

The hub's private key is made ON THE NODE with openssl (Debian's ca-certificates depends on
it, so every node has it): it is born in a 0600 file on the master and never crosses the
network or sits in the provisioner's memory. The node sends back a certificate request;
the cluster's CA (provisioner.hub.ca) signs it here and only certificates travel. They are
inspected with ``cryptography`` (SANs, expiry, issuer, fingerprint), which keeps the
decisions in tested Python rather than in openssl output. Without a CA (a caller with no
cluster directory) the node signs its own certificate, which clients pin by fingerprint.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provisioner.errors import RemoteError, UserInputError
from provisioner.hub.ca import ClusterCA
from provisioner.hub.config import HubSettings
from provisioner.hub.shell import MASTER, Shell, Step, q

log = logging.getLogger(__name__)

# 825 days: the longest validity clients such as Apple's accept for a server certificate.
CERT_DAYS = 825
# Renew this long before expiry, so a re-run well ahead of time replaces it.
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsStep(Step):
    """The TLS step; ``fingerprint`` (SHA256 of the DER certificate) lets clients pin it."""

    fingerprint: str = ""


def fingerprint(cert_pem: bytes) -> str:
    """SHA256 of the certificate's DER form, as colon-separated upper-case hex."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def expiry_problem(cert: x509.Certificate, *, now: dt.datetime | None = None) -> str | None:
    """Why a certificate is due for renewal (within RENEW_BEFORE of expiry), or None."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"certificate expires {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def usable_cert(
    cert_pem: bytes | None, *, now: dt.datetime | None = None
) -> x509.Certificate | str:
    """The certificate, or why no mode may keep it: missing, unparsable or expiring."""
    if not cert_pem:
        return "no certificate"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "certificate does not parse"
    return expiry_problem(cert, now=now) or cert


def subject_alt_names(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def cert_problem(
    cert_pem: bytes | None, *, addresses: Iterable[str], now: dt.datetime | None = None
) -> str | None:
    """Why a self-signed certificate must be (re)made, or None if it is good to keep."""
    cert = usable_cert(cert_pem, now=now)
    if isinstance(cert, str):
        return cert
    san = subject_alt_names(cert)
    covered = set(san.get_values_for_type(x509.IPAddress)) if san else set()
    missing = [a for a in addresses if ipaddress.ip_address(a) not in covered]
    if missing:
        return "certificate does not cover " + ", ".join(missing)
    return None


def _public_key_pem(cert_pem: bytes) -> bytes:
    return (
        x509.load_pem_x509_certificate(cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def openssl_config(addresses: Iterable[str]) -> str:
    """An openssl req config for a server certificate for these IPs (sent on stdin)."""
    san = ",".join(f"IP:{ipaddress.ip_address(a)}" for a in addresses)
    return (
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n"
        "[dn]\nCN = sparkstack-hub\n"
        f"[ext]\nsubjectAltName = {san}\nbasicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
    )


def key_matches(shell: Shell, key: str, cert_pem: bytes) -> bool:
    """Whether the node's file ``key`` is 0600 root and the private key of ``cert_pem``."""
    status, out, _ = shell.run(
        f"[ \"$(stat -c '%a %U' {q(key)})\" = '600 root' ] && openssl pkey -pubout -in {q(key)}",
        check=False,
    )
    return status == 0 and out.strip().encode() == _public_key_pem(cert_pem).strip()


def _make_self_signed(shell: Shell, settings: HubSettings) -> bytes:
    p = settings.paths
    script = "\n".join(
        [
            "set -e",
            # umask first: the key file is 0600 from the moment it exists.
            "umask 077",
            f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            f"-days {CERT_DAYS} -config /dev/stdin -keyout {q(p.key)}.new "
            f"-out {q(p.cert)}.new 2>&1",
            f"chmod 0644 {q(p.cert)}.new",
            f"mv -f {q(p.key)}.new {q(p.key)}",
            f"mv -f {q(p.cert)}.new {q(p.cert)}",
        ]
    )
    shell.run(script, input=openssl_config(settings.addresses).encode(), timeout=60)
    cert_pem = shell.read(p.cert)
    if not cert_pem:
        raise RemoteError(f"{p.cert} is missing right after openssl wrote it", resource=MASTER,
                          step="hub tls")
    return cert_pem


def csr_config() -> str:
    """An openssl req config for the request the node sends: the CA decides the rest."""
    return "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = sparkstack hub\n"


def _make_signed(shell: Shell, settings: HubSettings, ca: ClusterCA) -> bytes:
    """A new key on the node, its request signed by ``ca`` here; the certificate, followed
    by the CA's (the chain a client may be shown), replaces the hub's with the key."""
    p = settings.paths
    request = "\n".join(
        [
            "set -e",
            # umask first: the key file is 0600 from the moment it exists.
            "umask 077",
            f"openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            f"-config /dev/stdin -keyout {q(p.key)}.new",
        ]
    )
    _, csr, _ = shell.run(request, input=csr_config().encode(), timeout=60)
    cert = ca.sign_server(csr.encode(), addresses=settings.addresses)
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.cert_pem
    install = "\n".join(
        [
            "set -e",
            f"umask 022; cat > {q(p.cert)}.new; chmod 0644 {q(p.cert)}.new",
            f"mv -f {q(p.key)}.new {q(p.key)}",
            f"mv -f {q(p.cert)}.new {q(p.cert)}",
        ]
    )
    shell.run(install, input=chain, timeout=60)
    return chain


def signed_problem(
    cert_pem: bytes | None,
    *,
    ca: ClusterCA,
    addresses: Iterable[str],
    now: dt.datetime | None = None,
) -> str | None:
    """Why the hub's certificate must be re-issued by ``ca``, or None if it is good to keep:
    :func:`cert_problem`'s reasons, or another issuer (an older cluster's self-signed
    certificate, or a CA since lost and replaced)."""
    problem = cert_problem(cert_pem, addresses=addresses, now=now)
    if problem is None and cert_pem and not ca.issued(x509.load_pem_x509_certificate(cert_pem)):
        problem = f"certificate not signed by the cluster's CA ({ca.cert_path})"
    return problem


def ensure_tls(shell: Shell, settings: HubSettings, *, ca: ClusterCA | None = None) -> TlsStep:
    """The certificate and key the hub serves HTTPS with, for the settings' TLS mode;
    ``ca`` signs the certificate in mode "self-signed" (the node signs it without one)."""
    if settings.tls_mode == "self-signed":
        what = "self-signed" if ca is None else "CA-signed"
        cert_pem = shell.read(settings.paths.cert)
        if ca is None:
            problem = cert_problem(cert_pem, addresses=settings.addresses)
        else:
            problem = signed_problem(cert_pem, ca=ca, addresses=settings.addresses)
        if problem is None and cert_pem and not key_matches(shell, settings.paths.key,
                                                          cert_pem):
            problem = "key missing, not 0600 root, or not the certificate's"
        if problem is None and cert_pem:
            return TlsStep("tls", False, f"{what} certificate kept", fingerprint(cert_pem))
        log.info("hub tls: new %s certificate (%s)", what, problem)
        if ca is None:
            cert_pem = _make_self_signed(shell, settings)
        else:
            cert_pem = _make_signed(shell, settings, ca)
        return TlsStep("tls", True, f"new {what} certificate ({problem})",
                       fingerprint(cert_pem))
    if settings.tls_mode == "acme":
        # Imported here: acme builds on this module's checks.
        from provisioner.hub.acme import ensure_acme_certificate

        return ensure_acme_certificate(shell, settings)
    return _ensure_tls_files(shell, settings)


def _ensure_tls_files(shell: Shell, settings: HubSettings) -> TlsStep:
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    cert_pem = settings.tls_cert_file.read_bytes()
    key_pem = settings.tls_key_file.read_bytes()
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError) as exc:
        raise UserInputError(
            f"jupyterhub.tls: cannot use {settings.tls_cert_file} / {settings.tls_key_file}: "
            f"{exc}", hint="PEM files, the key without a passphrase",
        ) from None
    own = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if own != _public_key_pem(cert_pem):
        raise UserInputError(
            f"jupyterhub.tls.key_file {settings.tls_key_file} is not the key of "
            f"{settings.tls_cert_file}"
        )
    p = settings.paths
    changed = shell.put(p.key, key_pem, mode=0o600, owner="root", group="root")
    changed = shell.put(p.cert, cert_pem, mode=0o644, owner="root", group="root") or changed
    detail = "certificate files copied" if changed else "certificate files in place"
    return TlsStep("tls", changed, detail, fingerprint(cert_pem))
