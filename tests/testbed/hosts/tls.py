"""The bed's mirror CA and the certificate its HTTPS listener presents.

Nodes reach the mirrors over https://10.77.0.1:8443 only if they trust this CA, which the
product installs through its mirrors.ca_bundle setting: a test can show both the working
path and the refusal without it. Made once with openssl (present wherever ca-certificates
is) and cached; a proper CA (CA:TRUE, keyCertSign) and a leaf with the IP in
subjectAltName and an authority key id, so strict verifiers (Python 3.13's
VERIFY_X509_STRICT, curl, npm) accept the chain.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CA_DIR = Path("/var/cache/sparkstack-testbed/mirror-ca")
CA_SUBJECT = "/CN=sparkstack test bed mirror CA"


def ca_cert_path(ca_dir: Path = CA_DIR) -> Path:
    return ca_dir / "ca.crt"


def server_cert_paths(ip: str, ca_dir: Path = CA_DIR) -> tuple[Path, Path]:
    """(certificate, key) the listener on `ip` presents."""
    return ca_dir / f"server-{ip}.crt", ca_dir / f"server-{ip}.key"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_ca(ca_dir: Path = CA_DIR) -> Path:
    """Make the CA once; return its certificate's path."""
    cert, key = ca_cert_path(ca_dir), ca_dir / "ca.key"
    if cert.exists() and key.exists():
        return cert
    ca_dir.mkdir(parents=True, exist_ok=True)
    ca_dir.chmod(0o700)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "3650",
             "-subj", CA_SUBJECT,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash")
    cert.chmod(0o644)
    log.info("mirror CA made: %s", cert)
    return cert


def ensure_server_cert(ip: str, ca_dir: Path = CA_DIR) -> tuple[Path, Path]:
    """The listener's certificate for `ip`, signed by the CA (made if missing)."""
    ca = ensure_ca(ca_dir)
    cert, key = server_cert_paths(ip, ca_dir)
    if cert.exists() and key.exists():
        return cert, key
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text(
            "basicConstraints = critical,CA:FALSE\n"
            "keyUsage = critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            f"subjectAltName = IP:{ip}\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n"
        )
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={ip}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey",
                 str(ca_dir / "ca.key"), "-CAcreateserial", "-days", "825", "-sha256",
                 "-extfile", str(ext), "-out", str(cert))
    log.info("mirror certificate for %s made: %s", ip, cert)
    return cert, key
