"""Inventories the foundation tests share: the example, and edge cases built from it."""

from __future__ import annotations

import copy
import functools
import sys
import tempfile
from pathlib import Path
from typing import Any

from provisioner.inventory import Inventory, parse_inventory

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory.example.toml"
PINNED_SHA512 = "ab" * 64


def pinned_example(path: Path) -> Path:
    """The example inventory with spark.sha512 pinned, written to ``path``: commands that
    render then need no checksum source (these tests run without a network)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert '\nsha512 = ""\n' in text
    path.write_text(text.replace('\nsha512 = ""\n', f'\nsha512 = "{PINNED_SHA512}"\n'))
    return path


@functools.lru_cache(maxsize=1)
def mirrors_ca_bundle() -> Path:
    """A PEM file of two real (self-signed) CA certificates, made once per test run."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pems = []
    for name in ("mirror CA one", "mirror CA two"):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        pems.append(cert.public_bytes(serialization.Encoding.PEM))
    path = Path(tempfile.mkdtemp(prefix="sparkstack-test-ca-")) / "mirrors-ca.pem"
    path.write_bytes(b"".join(pems))
    return path


def example_data() -> dict[str, Any]:
    """The example inventory as parsed TOML, a fresh copy each call."""
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def with_changes(changes: dict[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The example with dotted keys set (``{"workers.count": 0}``) or dropped."""
    data = example_data()
    for dotted, value in changes.items():
        *tables, key = dotted.split(".")
        node = data
        for table in tables:
            node = node.setdefault(table, {})
        node[key] = copy.deepcopy(value)
    for dotted in drop:
        *tables, key = dotted.split(".")
        node = data
        for table in tables:
            node = node[table]
        del node[key]
    return data


def every_mirror_set() -> dict[str, Any]:
    """[mirrors] for a cloud without internet: every source named, behind a proxy, with
    its own CA."""
    return {
        "mirrors.apt_proxy": "http://apt-cache.internal:3142",
        "mirrors.apt_mirror": "https://deb.internal/debian",
        "mirrors.apt_security_mirror": "https://deb.internal/debian-security",
        "mirrors.pypi": "https://pypi.internal/simple/",
        "mirrors.npm": "https://npm.internal/",
        "mirrors.http_proxy": "http://proxy.internal:3128",
        "mirrors.https_proxy": "http://proxy.internal:3128",
        "mirrors.no_proxy": [".internal", "10.0.0.0/8"],
        "mirrors.ca_bundle": str(mirrors_ca_bundle()),
    }


def edge_inventories() -> dict[str, Inventory]:
    """The example plus the edges every template must survive."""
    cases = {
        "example": {},
        "zero-workers": {"workers.count": 0},
        "many-users": {
            "jupyterhub.users": [f"user{i:03d}" for i in range(300)],
            "jupyterhub.admins": ["user000", "user299"],
        },
        "custom-mirror": {
            "spark.mirror": "http://mirror.internal:8080/apache/it's/spark/",
            "spark.version": "3.5.7",
        },
        "pinned-sha512": {"spark.sha512": PINNED_SHA512.upper()},
        "trust-mirror": {
            "spark.mirror": "https://mirror.example.org/spark",
            "spark.trust_mirror_checksum": True,
        },
        "mirrors": every_mirror_set() | {"spark.mirror": "https://mirror.internal/spark"},
    }
    return {
        name: parse_inventory(with_changes(changes), source=f"<{name}>")
        for name, changes in cases.items()
    }


def every_string_set(files: Path) -> list[dict[str, Any]]:
    """Valid inventories that between them give every string key of the example (and every
    array of strings) a real value: the example's empty keys set, TLS from files in one and
    from ACME in the other. ``files`` is a directory for the certificate files they name."""
    cert = files / "hub.crt"
    cert.write_bytes(mirrors_ca_bundle().read_bytes())
    common = {
        "cluster.cloud": "openstack",
        "network.floating_ip": "198.51.100.7",
        "ssh.keypair": "my-key",
        "ssh.private_key": str(files / "id_ed25519"),
        "spark.sha512": PINNED_SHA512,
    } | every_mirror_set()
    tls_files = {
        "jupyterhub.tls.mode": "files",
        "jupyterhub.tls.cert_file": str(cert),
        "jupyterhub.tls.key_file": str(cert),
    }
    tls_acme = {
        "jupyterhub.tls.mode": "acme",
        "jupyterhub.tls.domain": "spark.example.org",
        "jupyterhub.tls.email": "ops@example.org",
        "jupyterhub.tls.acme_directory": "https://acme.example.org/directory",
        "jupyterhub.tls.acme_ca_file": str(cert),
    }
    secret = files / "oidc-client-secret"
    secret.write_text("from-the-provider\n")
    sso = sso_changes(secret) | {"jupyterhub.oidc.ca_file": str(cert)}
    return [with_changes(common | tls_files | sso), with_changes(common | tls_acme)]


def sso_changes(secret: Path) -> dict[str, Any]:
    """Single sign-on through a provider, its client secret in ``secret``."""
    return {
        "jupyterhub.authenticator": "oidc",
        "jupyterhub.oidc.issuer": "https://login.example.org/realms/research",
        "jupyterhub.oidc.client_id": "sparkstack",
        "jupyterhub.oidc.client_secret_file": str(secret),
        "jupyterhub.oidc.allowed_groups": ["spark-users"],
        "jupyterhub.oidc.admin_groups": ["spark-admins"],
    }


def string_keys(data: dict[str, Any], prefix: str = "") -> list[tuple[str, tuple[str | int, ...]]]:
    """(key as messages spell it, where it is in ``data``) of every non-empty string in
    ``data``, array items included: ``("network.allowed_cidrs[0]", ("network",
    "allowed_cidrs", 0))``."""
    found: list[tuple[str, tuple[str | int, ...]]] = []
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            found += [(k, (key, *where)) for k, where in string_keys(value, dotted)]
        elif isinstance(value, str) and value:
            found.append((dotted, (key,)))
        elif isinstance(value, list):
            found += [
                (f"{dotted}[{index}]", (key, index))
                for index, item in enumerate(value)
                if isinstance(item, str) and item
            ]
    return found


def with_string(data: dict[str, Any], where: tuple[str | int, ...], text: str) -> dict[str, Any]:
    """A copy of ``data`` with the string at ``where`` replaced by ``text``."""
    data = copy.deepcopy(data)
    node: Any = data
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = text
    return data


def string_at(data: dict[str, Any], where: tuple[str | int, ...]) -> str:
    node: Any = data
    for step in where:
        node = node[step]
    assert isinstance(node, str)
    return node
