"""Run the test bed's OpenID Connect provider (provider.mjs) for a test.

The provider is panva's oidc-provider, installed with `npm ci` from this directory's
package-lock.json into a cache directory named by a hash of the three files it runs from,
so an edit to any of them means a fresh install and an unchanged tree is reused. It serves
HTTPS itself with a certificate from a throwaway CA made here, and keeps everything in
memory: each `running()` is a provider with no sessions, grants or tokens yet.

    with running(ip="10.77.0.1", port=9443, client=..., accounts=..., workdir=tmp) as idp:
        requests.get(f"{idp.issuer}/.well-known/openid-configuration", verify=idp.ca_file)

    python3 -m tests.testbed.oidc.provider install     # CI: install (or reuse) and time it
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..hosts.rootfs import remove_older_caches

HERE = Path(__file__).resolve().parent
CACHE_DIR = Path("/var/cache/sparkstack-testbed")
SOURCES = ("package.json", "package-lock.json", "provider.mjs")
COMPLETE = ".complete"  # written last: a directory without it is an interrupted install
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Provider:
    issuer: str
    ca_file: Path
    process: subprocess.Popen[bytes]
    log_file: Path  # the provider's stdout and stderr

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def install_key() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def install(cache_dir: Path = CACHE_DIR) -> Path:
    """The directory provider.mjs runs from, with its node_modules; installed if missing."""
    target = cache_dir / f"oidc-{install_key()}"
    if (target / COMPLETE).exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Two test workers may both find it missing; the second waits and then reuses it.
    with (cache_dir / "oidc.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE).exists():
            return target
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for name in SOURCES:
            shutil.copy2(HERE / name, target / name)
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is missing: the OIDC provider is installed with npm ci")
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=target,
                                capture_output=True, text=True)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"npm ci in {target} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")  # fmt: skip
        (target / COMPLETE).write_text("")
    remove_older_caches(cache_dir, "oidc", target, "OIDC provider")
    return target


def make_ca_and_cert(dir: Path, ip: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `ip` signed by it, as (ca.pem, cert.pem,
    key.pem) in `dir`. The CA has CA:TRUE and keyCertSign, the leaf the IP in
    subjectAltName and both key ids, so strict verifiers (Python 3.13's
    VERIFY_X509_STRICT, Chromium, node) accept the chain."""
    dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sparkstack test bed OIDC CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip

    ca_file, cert_file, key_file = dir / "ca.pem", dir / "cert.pem", dir / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_file, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))  # fmt: skip
    return ca_file, cert_file, key_file


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:  # fmt: skip
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=crl_sign,
                         encipher_only=False, decipher_only=False)  # fmt: skip


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)  # so the mode below is the one it gets
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def running(*, ip: str, port: int, client: dict[str, Any], accounts: dict[str, Any],
            workdir: Path) -> Iterator[Provider]:  # fmt: skip
    """The provider listening on https://ip:port, stopped (that process only) on exit."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is missing: the OIDC provider runs on node")
    directory = install()
    ca_file, cert_file, key_file = make_ca_and_cert(workdir, ip)
    issuer = f"https://{ip}:{port}"
    config = workdir / "config.json"  # holds the client secret and the passwords
    _write_private(config, json.dumps({
        "issuer": issuer, "host": ip, "port": port, "cert": str(cert_file),
        "key": str(key_file), "client": client, "accounts": accounts,
    }, indent=2).encode())  # fmt: skip
    log_file = workdir / "provider.log"
    with log_file.open("wb") as log:
        # A process group of its own: a ^C at the terminal reaches pytest, not the provider,
        # which is stopped below by its pid.
        process = subprocess.Popen([node, str(directory / "provider.mjs"), str(config)],
                                   cwd=directory, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    provider = Provider(issuer, ca_file, process, log_file)
    try:
        _wait_until_serving(provider)
        yield provider
    finally:
        _stop(process)


def _wait_until_serving(provider: Provider) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    discovery = f"{provider.issuer}/.well-known/openid-configuration"
    context = ssl.create_default_context(cafile=str(provider.ca_file))
    ready, last_error = False, "no ready line yet"
    while time.monotonic() < deadline:
        if provider.process.poll() is not None:
            raise RuntimeError(f"the OIDC provider exited ({provider.process.returncode}) "
                               f"before serving:\n{provider.log}")  # fmt: skip
        ready = ready or f"ready {provider.issuer}" in provider.log.splitlines()
        if ready:
            try:
                with urllib.request.urlopen(discovery, context=context, timeout=5) as answer:
                    if answer.status == 200:
                        return
                    last_error = f"HTTP {answer.status}"
            except OSError as e:  # URLError and HTTPError are OSErrors
                last_error = str(e)
        time.sleep(0.05)
    raise RuntimeError(f"the OIDC provider did not serve {discovery} within {START_TIMEOUT:.0f} s "
                       f"({last_error}); its output:\n{provider.log}")  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str]) -> int:
    if argv != ["install"]:
        print("usage: python3 -m tests.testbed.oidc.provider install", file=sys.stderr)
        return 2
    started = time.monotonic()
    directory = install()
    print(f"OIDC provider installed in {directory} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
