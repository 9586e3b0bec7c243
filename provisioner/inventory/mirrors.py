"""The [mirrors] table: where nodes fetch packages from, for clouds without internet.

Everything here lands in user_data, which any process on a node can read from the metadata
service: so no URL may carry credentials (a proxy that needs a password is reached some
other way, e.g. allowed by source address). The lock files decide *what* is installed;
these settings only decide *where from*: a mirror can refuse service, never substitute a
package (every wheel, npm tarball and the Spark archive is checked against its hash).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from provisioner.inventory.fields import (
    KeyProblems,
    OptionalStr,
    Table,
    path_value,
    show,
    toml_string,
    unusable_file,
)

# A host, domain suffix, IP or CIDR as no_proxy takes them: letters, digits, . - : / * only.
_NO_PROXY_ITEM = re.compile(r"[A-Za-z0-9.*:/\[\]-]{1,253}")
# The CA bundle travels in user_data (Nova's limit is 64 KiB for the whole document).
MAX_CA_BUNDLE_BYTES = 32 * 1024
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----"
)


def no_credentials(value: str) -> str:
    """A URL the nodes read from their user_data, which any process on a node can read
    back from the metadata service: no user name or password in it."""
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "must not carry a user name or password: it would be readable by every process "
            "on the nodes (user_data); allow the nodes by address instead"
        )
    return value


def url(value: str, *, what: str = "URL") -> str:
    """An http(s) URL with a host, no credentials, no query or fragment, no whitespace."""
    # Checked as written: a trailing newline would end a line of the node's settings file.
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(f"must not contain spaces or control characters, got {show(value)}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// {what}, got {show(value)}")
    no_credentials(value)
    if parts.query or parts.fragment:
        raise ValueError(f"must have no ?query or #fragment, got {show(value)}")
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"has a bad port number: {show(value)}") from None
    return value


def proxy_url(value: str) -> str:
    if "://" not in value:
        raise ValueError(
            f'must name its scheme, like "http://proxy.example.org:3128", got {show(value)}'
        )
    text = url(value, what="proxy URL")
    if urlsplit(text).path not in ("", "/"):
        raise ValueError(f"a proxy URL has no path, got {show(value)}")
    return text.rstrip("/")


def pem_certificates(data: bytes) -> list[str]:
    """Each certificate of a PEM bundle, checked to parse, as text (one per node file)."""
    from cryptography import x509  # paramiko's dependency; loaded only when a bundle is set

    blocks = [m.group(0).replace(b"\r\n", b"\n") for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise ValueError("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    out = []
    for index, block in enumerate(blocks, start=1):
        try:
            x509.load_pem_x509_certificate(block)
        except ValueError as exc:
            raise ValueError(f"certificate {index} does not parse: {exc}") from None
        out.append(block.decode("ascii") + "\n")
    return out


class MirrorsConfig(Table):
    """Where nodes fetch from. Unset keys keep each tool's own default."""

    # apt: a caching proxy (apt-cacher-ng, squid) for the image's own sources ...
    apt_proxy: OptionalStr = None
    # ... and/or mirrors replacing the image's archive URLs (the security archive apart).
    apt_mirror: OptionalStr = None
    apt_security_mirror: OptionalStr = None
    # A PEP 503 index (pip's --index-url) and an npm registry.
    pypi: OptionalStr = None
    npm: OptionalStr = None
    # For pip, npm, curl (Spark) and apt, when no apt_proxy is set.
    http_proxy: OptionalStr = None
    https_proxy: OptionalStr = None
    no_proxy: list[str] = Field(default_factory=list)
    # A PEM file here: installed on every node as trusted, for internal mirrors and
    # TLS-inspecting proxies. Public, so it may travel in user_data.
    ca_bundle: Path | None = None

    @field_validator("apt_mirror", "apt_security_mirror", "pypi", "npm")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else url(value)

    @field_validator("apt_proxy", "http_proxy", "https_proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        return None if value is None else proxy_url(value)

    @field_validator("no_proxy")
    @classmethod
    def _check_no_proxy(cls, value: list[str]) -> list[str]:
        problems: list[tuple[str | int, str]] = []
        for index, item in enumerate(value):
            if not _NO_PROXY_ITEM.fullmatch(item):
                problems.append(
                    (index, f"not a host, domain, IP or CIDR for no_proxy: {show(item)}")
                )
        if problems:
            raise KeyProblems(problems)
        return value

    @field_validator("ca_bundle", mode="before")
    @classmethod
    def _check_ca_path(cls, value: Any, info: ValidationInfo) -> Any:
        return path_value(value, info)

    @field_validator("ca_bundle", mode="after")
    @classmethod
    def _check_ca_bundle(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        problem = unusable_file(value)
        if problem is None:
            data = value.read_bytes()
            if len(data) > MAX_CA_BUNDLE_BYTES:
                problem = (
                    f"is {len(data)} bytes; at most {MAX_CA_BUNDLE_BYTES} fit in user_data "
                    "(name only the CAs the mirrors need)"
                )
            else:
                try:
                    pem_certificates(data)
                except ValueError as exc:
                    problem = str(exc)
        if problem is not None:
            # Shown as TOML would write it, quoted: a path may end in spaces.
            raise ValueError(f"{toml_string(str(value))} {problem}")
        return value

    def ca_certificates(self) -> list[str]:
        """The bundle's certificates, one PEM text each (empty when no bundle is set)."""
        if self.ca_bundle is None:
            return []
        return pem_certificates(self.ca_bundle.read_bytes())

    def pypi_trusted_host(self) -> str:
        """host[:port] of a plain-http index, which pip ignores unless told to trust it: the
        lock's hashes, not the transport, are what make its files trustworthy."""
        if not self.pypi or urlsplit(self.pypi).scheme != "http":
            return ""
        return urlsplit(self.pypi).netloc

    def apt_proxy_for_nodes(self) -> str | None:
        """The proxy apt uses: its own, else the general one for its URLs' scheme."""
        return self.apt_proxy or self.http_proxy

    def sources(self, *, spark_url: str) -> list[tuple[str, str]]:
        """(what, where from) for the dry run and the README's promise: every fetch named."""
        apt = []
        if self.apt_mirror:
            apt.append(f"archive {self.apt_mirror}")
        if self.apt_security_mirror:
            apt.append(f"security {self.apt_security_mirror}")
        if not apt:
            apt.append("the image's own sources")
        if self.apt_proxy_for_nodes():
            apt.append(f"through {self.apt_proxy_for_nodes()}")
        rows = [
            ("apt (Java, Python venv, Node.js)", ", ".join(apt)),
            ("Python packages (master)", self.pypi or "pip's default index"),
            ("npm packages (master)", self.npm or "npm's default registry"),
            ("Spark", spark_url),
        ]
        if self.https_proxy or self.http_proxy:
            rows.append(("proxy", ", ".join(
                f"{k}={v}" for k, v in (("http", self.http_proxy), ("https", self.https_proxy))
                if v)))  # fmt: skip
        if self.ca_bundle is not None:
            count = len(self.ca_certificates())
            rows.append(("extra trusted CAs", f"{self.ca_bundle} "
                         f"({count} certificate{'s' if count != 1 else ''})"))  # fmt: skip
        return rows
