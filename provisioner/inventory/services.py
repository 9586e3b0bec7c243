"""The software side of the inventory: the spark and jupyterhub tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from provisioner.inventory.fields import (
    ACME_DIRECTORY_RE,
    DNS_LABEL_RE,
    EMAIL_RE,
    HTTP_BASE_URL_RE,
    MAX_CORES,
    MAX_TIMEOUT,
    MIN_SPARK,
    RESERVED_USERS,
    SHA512_RE,
    UNIX_USER_RE,
    VERSION_RE,
    KeyProblems,
    OptionalStr,
    Table,
    file_problem,
    memory,
    path_value,
    show,
)
from provisioner.inventory.limits import LimitsConfig
from provisioner.inventory.mirrors import no_credentials
from provisioner.inventory.names import reserved_ports
from provisioner.inventory.oidc import OidcConfig


class SparkLimits(Table):
    # Upper bounds keep values inside Spark's Int settings and shell arithmetic on the nodes.
    default_cores: int = Field(default=4, ge=1, le=MAX_CORES)
    cores_max: int = Field(default=4, ge=1, le=MAX_CORES)
    executor_memory: str = "2g"
    executor_cores: int = Field(default=2, ge=1, le=MAX_CORES)
    driver_memory: str = "1g"

    @field_validator("executor_memory", "driver_memory")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        return memory(value)

    @model_validator(mode="after")
    def _cores_fit(self) -> SparkLimits:
        if self.cores_max < self.executor_cores:
            raise KeyProblems(
                [
                    (
                        "cores_max",
                        f"must be >= spark.limits.executor_cores ({self.executor_cores}), got "
                        f"{self.cores_max}: no executor would ever start",
                    )
                ]
            )
        return self


# Apache's own release areas: the download area has current releases only, the archive
# every release ever. Tried in this order for the tarball's .sha512.
APACHE_CHECKSUMS = ("https://downloads.apache.org/spark", "https://archive.apache.org/dist/spark")


def _base_url(value: str) -> str:
    text = value.strip()
    if not HTTP_BASE_URL_RE.fullmatch(text):
        raise ValueError(f"must be an http:// or https:// URL without query, got {show(value)}")
    return text.rstrip("/")


BaseUrl = Annotated[str, AfterValidator(_base_url)]


# spark.mirror: every node reads it from its user_data
NodeUrl = Annotated[str, AfterValidator(_base_url), AfterValidator(no_credentials)]


class SparkConfig(Table):
    version: str = "4.3.0"
    mirror: NodeUrl = "https://downloads.apache.org/spark"
    sha512: OptionalStr = None
    # Where sparkstack itself fetches the tarball's .sha512 when it is not pinned: never
    # from the mirror, so a mirror that serves a bad tarball cannot vouch for it too.
    checksums: list[str] = Field(default_factory=lambda: list(APACHE_CHECKSUMS))
    # Let each node check the tarball against the .sha512 the mirror publishes beside it.
    trust_mirror_checksum: bool = False
    limits: SparkLimits = Field(default_factory=SparkLimits)

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        match = VERSION_RE.fullmatch(value)
        if not match:
            raise ValueError(f'must be a release number like "4.3.0", got {show(value)}')
        if tuple(int(g) for g in match.groups()) < MIN_SPARK:
            raise ValueError(
                "must be 3.3.0 or newer (older releases publish no -bin-hadoop3 tarball), "
                f"got {show(value)}"
            )
        return value

    @field_validator("checksums")
    @classmethod
    def _check_checksums(cls, value: list[str]) -> list[str]:
        problems: list[tuple[str | int, str]] = []
        urls = []
        for index, url in enumerate(value):
            try:
                urls.append(_base_url(url))
            except ValueError as exc:
                problems.append((index, str(exc)))
        if problems:
            raise KeyProblems(problems)
        return urls

    @field_validator("sha512")
    @classmethod
    def _check_sha512(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().lower()
        if not SHA512_RE.fullmatch(text):
            raise ValueError(
                f"must be 128 hexadecimal digits (a sha512), got {len(text)} characters"
            )
        return text

    @model_validator(mode="after")
    def _hash_source(self) -> SparkConfig:
        """Every node must check the tarball against a hash the mirror did not choose,
        unless the inventory says otherwise in so many words."""
        problems: list[tuple[str | int, str]] = []
        if self.sha512 is not None and self.trust_mirror_checksum:
            problems.append(
                ("trust_mirror_checksum", "has no effect when spark.sha512 is pinned; remove one")
            )
        fetched = self.sha512 is None and not self.trust_mirror_checksum
        if fetched and not self.checksums:
            problems.append(
                (
                    "checksums",
                    "is empty: list where the .sha512 comes from, or pin spark.sha512",
                )
            )
        if fetched and self.mirror in self.checksums and self.mirror not in APACHE_CHECKSUMS:
            problems.append(
                (
                    "checksums",
                    f"lists spark.mirror ({show(self.mirror)}) itself: a mirror cannot vouch "
                    "for its own tarball; use Apache's site, or set "
                    "spark.trust_mirror_checksum = true if that is really what you want",
                )
            )
        plain = self.trust_mirror_checksum or any(u.startswith("http://") for u in self.checksums)
        if self.mirror.startswith("http://") and self.sha512 is None and plain:
            problems.append(
                (
                    "mirror",
                    f"{show(self.mirror)} is plain http: anyone on the way can replace the "
                    "tarball, so its hash must not come over http too: pin spark.sha512, or "
                    "fetch it over https (only https:// in spark.checksums, "
                    "spark.trust_mirror_checksum = false)",
                )
            )
        if problems:
            raise KeyProblems(problems)
        return self

    def tarball_name(self) -> str:
        return f"spark-{self.version}-bin-hadoop3.tgz"

    def tarball_url(self) -> str:
        return f"{self.mirror}/spark-{self.version}/{self.tarball_name()}"

    def checksum_urls(self) -> list[str]:
        """The .sha512 of this release at each spark.checksums source, in order."""
        path = f"spark-{self.version}/{self.tarball_name()}.sha512"
        return [f"{base}/{path}" for base in self.checksums]


# RFC 8555 directory of Let's Encrypt's production CA.
LETSENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


class TlsConfig(Table):
    mode: Literal["self-signed", "files", "acme"] = "self-signed"
    cert_file: Path | None = None
    key_file: Path | None = None
    domain: OptionalStr = None
    email: OptionalStr = None
    acme_directory: str = LETSENCRYPT_DIRECTORY
    # A CA bundle the master's ACME client trusts for the directory's own HTTPS: only for
    # private CAs (a test CA such as pebble); public ones are in the system's store.
    acme_ca_file: Path | None = None

    @field_validator("cert_file", "key_file", "acme_ca_file", mode="before")
    @classmethod
    def _paths(cls, value: Any, info: ValidationInfo) -> Any:
        return path_value(value, info)

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().lower().rstrip(".")
        labels = text.split(".")
        labels_ok = all(DNS_LABEL_RE.fullmatch(label) for label in labels)
        if len(text) > 253 or len(labels) < 2 or not labels_ok:
            raise ValueError(f'not a DNS name like "spark.example.org": {show(value)}')
        return text

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL_RE.fullmatch(value.strip()):
            raise ValueError(f"not an e-mail address: {show(value)}")
        return None if value is None else value.strip()

    @field_validator("acme_directory")
    @classmethod
    def _check_directory(cls, value: str) -> str:
        text = value.strip()
        if not ACME_DIRECTORY_RE.fullmatch(text):
            raise ValueError(f"must be an https:// URL, got {show(value)}")
        return text

    @model_validator(mode="after")
    def _mode_keys(self) -> TlsConfig:
        needs = {"files": ("cert_file", "key_file"), "acme": ("domain", "email")}
        problems: list[tuple[str | int, str]] = []
        wanted = needs.get(self.mode, ())
        for mode, keys in needs.items():
            for key in keys:
                value = getattr(self, key)
                if key in wanted and value is None:
                    problems.append((key, f'must be set when jupyterhub.tls.mode = "{mode}"'))
                elif key not in wanted and value is not None:
                    problems.append(
                        (
                            key,
                            f'only used when jupyterhub.tls.mode = "{mode}" '
                            f'(mode is "{self.mode}"); remove it or change mode',
                        )
                    )
        # The directory has a default, which any mode may carry; another value is a choice
        # that only acme uses, like the CA file.
        acme_only = [
            key
            for key, unset in (
                ("acme_directory", self.acme_directory == LETSENCRYPT_DIRECTORY),
                ("acme_ca_file", self.acme_ca_file is None),
            )
            if not unset
        ]
        if self.mode != "acme":
            problems += [
                (
                    key,
                    f'only used when jupyterhub.tls.mode = "acme" (mode is "{self.mode}"); '
                    "remove it or change mode",
                )
                for key in acme_only
            ]
        files = {"files": ("cert_file", "key_file"), "acme": ("acme_ca_file",)}
        for key in files.get(self.mode, ()):
            if problem := file_problem(getattr(self, key)):
                problems.append((key, problem))
        if problems:
            raise KeyProblems(problems)
        return self


# jupyterhub-idle-culler's --timeout must exceed the hub's activity interval (300 s, how
# often single-user servers report activity) plus a margin, or it culls busy servers.
HUB_ACTIVITY_INTERVAL = 300
MIN_SERVER_IDLE_TIMEOUT = HUB_ACTIVITY_INTERVAL + 30


class CullingConfig(Table):
    # At most a year: 0 already means "never".
    server_idle_timeout: int = Field(default=3600, ge=0, le=MAX_TIMEOUT)
    kernel_idle_timeout: int = Field(default=1800, ge=0, le=MAX_TIMEOUT)

    @field_validator("server_idle_timeout")
    @classmethod
    def _check_server_idle_timeout(cls, value: int) -> int:
        if 0 < value < MIN_SERVER_IDLE_TIMEOUT:
            raise ValueError(
                f"must be 0 (never) or at least {MIN_SERVER_IDLE_TIMEOUT} s (the hub learns "
                f"of activity every {HUB_ACTIVITY_INTERVAL} s), got {value}"
            )
        return value


class JupyterHubConfig(Table):
    users: list[str] = Field(default_factory=list)
    admins: list[str] = Field(default_factory=list)
    authenticator: Literal["pam", "oidc"] = "pam"
    oidc: OidcConfig = Field(default_factory=OidcConfig)
    port: int = Field(default=443, ge=1, le=65535)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    culling: CullingConfig = Field(default_factory=CullingConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @field_validator("users", "admins")
    @classmethod
    def _check_names(cls, value: list[str]) -> list[str]:
        problems: list[tuple[str | int, str]] = []
        for index, name in enumerate(value):
            if not UNIX_USER_RE.fullmatch(name):
                problems.append(
                    (
                        index,
                        f"not a valid Unix user name (lowercase letter first, "
                        f"then a-z 0-9 _ -, at most 32): {show(name)}",
                    )
                )
            elif name in RESERVED_USERS:
                problems.append((index, f"{show(name)} is a system account name; pick another"))
            elif name in value[:index]:
                problems.append((index, f"{show(name)} is listed twice"))
        if problems:
            raise KeyProblems(problems)
        return value

    @field_validator("port")
    @classmethod
    def _check_port(cls, value: int) -> int:
        taken = reserved_ports()
        if value in taken:
            raise ValueError(f"{value} is used by {taken[value]}; pick another (443 is usual)")
        return value

    @model_validator(mode="after")
    def _admins_are_users(self) -> JupyterHubConfig:
        problems: list[tuple[str | int, str]] = []
        for name in self.admins:
            if name not in self.users:
                problems.append(("admins", f"{show(name)} is not in jupyterhub.users"))
        problems += [(f"oidc.{key}", problem) for key, problem in
                     self.oidc.problems(self.authenticator)]
        sso = self.oidc.allowed_groups or self.oidc.admin_groups
        if self.authenticator == "oidc" and not (self.users or sso):
            problems.append(
                ("oidc.allowed_groups", "is empty and so is jupyterhub.users: nobody could "
                                        "log in; list the provider's groups or user names")
            )
        if self.tls.mode == "acme" and self.port == 80:
            problems.append(
                (
                    "port",
                    "80 is needed for the ACME challenge when "
                    'jupyterhub.tls.mode = "acme"; use 443',
                )
            )
        if problems:
            raise KeyProblems(problems)
        return self
