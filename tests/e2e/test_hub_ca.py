"""The hub's certificate signed by the cluster's CA, for real: the key made by openssl on a
namespace host, its request signed on this machine, and the hub then trusted by Python's
`requests` through the CA file alone, its address checked. No OpenStack."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import socket
import ssl

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from provisioner.hub import HubSettings, ensure_hub
from provisioner.hub.ca import ensure_ca
from provisioner.hub.tls import key_matches

from .test_hub import PinnedClient, _hub_pid, _inventory, hub_host  # noqa: F401

pytestmark = [pytest.mark.hosts, pytest.mark.slow]
log = logging.getLogger(__name__)


def _pem_payloads(data: bytes) -> bytes:
    """The bytes inside every PEM block of ``data``, one after the other."""
    blocks = re.findall(rb"-----BEGIN [^-]+-----(.+?)-----END", data, re.S)
    return b"".join(base64.b64decode(b"".join(block.split())) for block in blocks)


def test_a_hub_signed_by_the_clusters_ca_is_trusted_through_the_ca_file(
    hub_host,  # noqa: F811 (the fixture imported above)
    tmp_path,
):
    host, shell = hub_host
    ip = host.fixed_ip
    inv = _inventory(["alice"], ["alice"])
    settings = HubSettings.from_inventory(inv, master_ip=ip)
    paths = settings.paths

    # A cluster made before its CA existed: the node signed its own certificate.
    old = ensure_hub(shell, settings, inv=inv, ready_timeout=120)
    url = f"https://{ip}/hub/api"

    # What `up` does: the cluster's CA in its local directory signs the master's request.
    key_dir = tmp_path / "e2e"
    ca = ensure_ca(key_dir, cluster="e2e")
    signed = ensure_hub(shell, settings, inv=inv, ca=ca, ready_timeout=120)
    tls = next(s for s in signed.steps if s.name == "tls")
    assert tls.changed and "not signed by the cluster's CA" in tls.detail, tls
    assert signed.fingerprint != old.fingerprint

    # requests checks the chain against the CA file and the address against the SANs.
    response = requests.get(url, verify=str(ca.cert_path), timeout=30)
    assert response.status_code == 200 and "version" in response.json()
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    with (
        socket.create_connection((ip, 443), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=ip) as tls_sock,
    ):
        served = tls_sock.getpeercert(binary_form=True)
    # Another address (the bridge's) is not the hub's: refused.
    with (
        socket.create_connection((ip, 443), timeout=30) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="mismatch"),
    ):
        context.wrap_socket(raw, server_hostname="10.77.0.1").close()
    # The pin clients already hold is the served certificate's: it keeps working.
    assert served is not None
    pinned = hashlib.sha256(served).hexdigest()
    assert pinned == signed.fingerprint.replace(":", "").lower()
    status, _, _ = PinnedClient(ip, 443, signed.fingerprint).request("GET", "/hub/api")
    assert status == 200

    # The hub's key was made on the node, is root's alone there, and is in no local file.
    cert_pem = shell.read(paths.cert)
    assert cert_pem and key_matches(shell, paths.key, cert_pem)
    node_key = serialization.load_pem_private_key(shell.read(paths.key) or b"", None)
    assert isinstance(node_key, ec.EllipticCurvePrivateKey)
    # The secret itself (every P-256 key file starts with the same bytes), as it appears
    # in a PEM file, and the private key of any PEM block found here.
    secret = node_key.private_numbers().private_value.to_bytes(32, "big")
    assert {p.name for p in key_dir.iterdir()} == {"hub-ca.crt", "hub-ca.key"}
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert secret not in data and secret not in _pem_payloads(data), path
        for block in re.findall(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END", data, re.S):
            found = serialization.load_pem_private_key(block + b" PRIVATE KEY-----", None)
            assert found.public_key() != node_key.public_key(), f"the hub's key is in {path}"

    # A second run changes nothing: same certificate, no restart.
    pid = _hub_pid(shell)
    again = ensure_hub(shell, settings, inv=inv, ca=ca, ready_timeout=120)
    assert not again.changed, [str(s) for s in again.steps if s.changed]
    assert again.fingerprint == signed.fingerprint and _hub_pid(shell) == pid
    assert requests.get(url, verify=str(ca.cert_path), timeout=30).status_code == 200
    log.warning(
        "hub CA: old %.1f s, signed %.1f s, again %.1f s",
        old.seconds,
        signed.seconds,
        again.seconds,
    )
