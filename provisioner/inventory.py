"""The inventory: one TOML file describing one cluster, loaded into a validated, typed model.

Pure: reads a file (or takes an already parsed dict) and returns an :class:`Inventory`, or
raises :class:`~provisioner.errors.InventoryError` whose message lists *every* problem as
``<toml.key.path>: <what is wrong>``, so a user fixes the whole file in one go instead of
one error per run.

The model mirrors inventory.example.toml key for key. Empty strings in the TOML mean "not
set" and become ``None`` here. Names that cloud code and tests must agree on (keypair,
security group, servers, tag) are derived here, in one place.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from provisioner.errors import InventoryError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

# --- Ports the nodes use. Pinned so that security groups and firewalls can be exact, and so
# the hub's public port can be checked against them. Spark's defaults where they exist.
SPARK_MASTER_PORT = 7077
SPARK_MASTER_UI_PORT = 8080
SPARK_WORKER_PORT = 7078
SPARK_WORKER_UI_PORT = 8081
# Driver, block manager and application UI ports are the first of a range: Spark tries
# base, base+1, ... up to spark.port.maxRetries more (one per concurrent notebook/executor).
SPARK_DRIVER_PORT = 40000
SPARK_BLOCK_MANAGER_PORT = 41000
SPARK_APP_UI_PORT = 4040
SPARK_PORT_MAX_RETRIES = 100
# JupyterHub's hub API defaults to 8081, the Spark worker UI's port: moved out of the way.
HUB_API_PORT = 15001
# configurable-http-proxy's REST API (its default).
PROXY_API_PORT = 8001

_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$")
# Debian's adduser NAME_REGEX, limited to 32 characters (useradd's limit).
_UNIX_USER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_MEMORY_RE = re.compile(r"^([1-9][0-9]*)([kmgt])$")
_SHA512_RE = re.compile(r"^[0-9a-f]{128}$")
_DNS_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Accounts a Debian/Ubuntu image already has, or that sparkstack itself creates: a hub user
# with one of these names would get a password on a system account.
_RESERVED_USERS = frozenset(
    {
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "sshd",
        "messagebus",
        "syslog",
        "ubuntu",
        "debian",
        "admin",
        "spark",
        "jupyterhub",
        "polkitd",
        "lxd",
    }
)
# Spark releases before 3.3 publish no "-bin-hadoop3.tgz" and Spark 4 is the current line.
_MIN_SPARK = (3, 3, 0)
# Spark refuses executors/drivers with less than 1.5 x its 300 MiB reserved memory.
_MIN_JVM_MIB = 450
_MAX_JVM_MIB = 16 * 1024 * 1024
_MAX_CORES = 4096
_MAX_TIMEOUT = 365 * 24 * 3600


class _KeyProblems(ValueError):
    """Problems found by a cross-field check, each tied to a key below the validated table.

    pydantic reports an after-validator's error at the table's location; carrying the key
    lets the message name the exact key (``jupyterhub.admins``), not just its table.
    """

    def __init__(self, problems: list[tuple[str | int, str]]) -> None:
        super().__init__("; ".join(f"{k}: {m}" for k, m in problems))
        self.problems = problems


def _empty_to_none(value: Any) -> Any:
    return None if value == "" else value


def _not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


OptionalStr = Annotated[str | None, BeforeValidator(_empty_to_none)]


def memory_mib(size: str) -> int:
    """MiB in a JVM memory size like ``"2g"``; used to compare sizes against node memory."""
    match = _MEMORY_RE.match(size)
    if not match:
        raise ValueError(f"not a memory size: {size!r}")
    number, unit = int(match.group(1)), match.group(2)
    factor = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]
    return int(number * factor)


def _memory(value: str) -> str:
    text = value.strip().lower()
    if not _MEMORY_RE.match(text):
        raise ValueError(f'must be a size like "2g" or "512m", got {_show(value)}')
    if memory_mib(text) < _MIN_JVM_MIB:
        raise ValueError(f"must be at least {_MIN_JVM_MIB}m (Spark's minimum), got {_show(value)}")
    if memory_mib(text) > _MAX_JVM_MIB:
        raise ValueError(f"must be at most 16t, got {_show(value)}")
    return text


def _resolve_path(value: str | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir") or Path.cwd()
        path = Path(base) / path
    return path


def _path(value: Any, info: ValidationInfo) -> Path | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a string (a file path), got {_typed(value)}")
    return _resolve_path(value, info)


class _Table(BaseModel):
    # strict: TOML has real types, so "2" where a number belongs is a mistake worth naming.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ClusterConfig(_Table):
    name: str
    cloud: OptionalStr = None
    image: str
    max_parallel_creates: int = Field(default=10, ge=1, le=100)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"must be 1-40 characters of lowercase letters, digits and '-', start with a "
                f"letter and not end with '-', got {_show(value)}"
            )
        return value

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        return _not_empty(value)


class NetworkConfig(_Table):
    name: str
    floating_ip_pool: OptionalStr = "public"
    floating_ip: OptionalStr = None
    allowed_cidrs: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _not_empty(value)

    @field_validator("floating_ip")
    @classmethod
    def _check_floating_ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"not an IP address: {_show(value)}") from None

    @field_validator("allowed_cidrs")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        problems: list[tuple[str | int, str]] = []
        seen: list[str] = []
        for index, text in enumerate(value):
            try:
                net = ipaddress.ip_network(text.strip(), strict=True)
            except ValueError as exc:
                if "host bits set" in str(exc):
                    fixed = ipaddress.ip_network(text.strip(), strict=False)
                    problems.append(
                        (index, f'host bits set in {_show(text)} (did you mean "{fixed}"?)')
                    )
                else:
                    problems.append((index, f'not a CIDR like "203.0.113.0/24": {_show(text)}'))
                continue
            # Duplicate security group rules are a 409 from Neutron: keep each range once.
            if str(net) not in seen:
                seen.append(str(net))
        if problems:
            raise _KeyProblems(problems)
        return seen


class SshConfig(_Table):
    user: str = "debian"
    keypair: OptionalStr = None
    private_key: Path | None = None

    @field_validator("user")
    @classmethod
    def _check_user(cls, value: str) -> str:
        if not _UNIX_USER_RE.match(value):
            raise ValueError(f"not a valid Unix user name: {_show(value)}")
        return value

    @field_validator("private_key", mode="before")
    @classmethod
    def _check_private_key(cls, value: Any, info: ValidationInfo) -> Any:
        return _path(value, info)

    @model_validator(mode="after")
    def _keypair_needs_key(self) -> SshConfig:
        if self.keypair and self.private_key is None:
            raise _KeyProblems(
                [
                    (
                        "private_key",
                        "must be set when ssh.keypair is set (the "
                        "private key of that keypair, for SSH)",
                    )
                ]
            )
        return self


class MasterConfig(_Table):
    flavor: str

    @field_validator("flavor")
    @classmethod
    def _check_flavor(cls, value: str) -> str:
        return _not_empty(value)


class WorkersConfig(_Table):
    flavor: str
    count: int = Field(default=2, ge=0, le=1000)
    anti_affinity: Literal["soft", "hard", "none"] = "soft"

    @field_validator("flavor")
    @classmethod
    def _check_flavor(cls, value: str) -> str:
        return _not_empty(value)


class SparkLimits(_Table):
    # Upper bounds keep values inside Spark's Int settings and shell arithmetic on the nodes.
    default_cores: int = Field(default=4, ge=1, le=_MAX_CORES)
    cores_max: int = Field(default=4, ge=1, le=_MAX_CORES)
    executor_memory: str = "2g"
    executor_cores: int = Field(default=2, ge=1, le=_MAX_CORES)
    driver_memory: str = "1g"

    @field_validator("executor_memory", "driver_memory")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        return _memory(value)

    @model_validator(mode="after")
    def _cores_fit(self) -> SparkLimits:
        if self.cores_max < self.executor_cores:
            raise _KeyProblems(
                [
                    (
                        "cores_max",
                        f"must be >= spark.limits.executor_cores ({self.executor_cores}), got "
                        f"{self.cores_max}: no executor would ever start",
                    )
                ]
            )
        return self


class SparkConfig(_Table):
    version: str = "4.3.0"
    mirror: str = "https://downloads.apache.org/spark"
    sha512: OptionalStr = None
    limits: SparkLimits = Field(default_factory=SparkLimits)

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        match = _VERSION_RE.match(value)
        if not match:
            raise ValueError(f'must be a release number like "4.3.0", got {_show(value)}')
        if tuple(int(g) for g in match.groups()) < _MIN_SPARK:
            raise ValueError(
                "must be 3.3.0 or newer (older releases publish no -bin-hadoop3 tarball), "
                f"got {_show(value)}"
            )
        return value

    @field_validator("mirror")
    @classmethod
    def _check_mirror(cls, value: str) -> str:
        text = value.strip()
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", text):
            raise ValueError(
                f"must be an http:// or https:// URL without query, got {_show(value)}"
            )
        return text.rstrip("/")

    @field_validator("sha512")
    @classmethod
    def _check_sha512(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().lower()
        if not _SHA512_RE.match(text):
            raise ValueError(
                f"must be 128 hexadecimal digits (a sha512), got {len(text)} characters"
            )
        return text

    def tarball_name(self) -> str:
        return f"spark-{self.version}-bin-hadoop3.tgz"

    def tarball_url(self) -> str:
        return f"{self.mirror}/spark-{self.version}/{self.tarball_name()}"


class TlsConfig(_Table):
    mode: Literal["self-signed", "files", "acme"] = "self-signed"
    cert_file: Path | None = None
    key_file: Path | None = None
    domain: OptionalStr = None
    email: OptionalStr = None

    @field_validator("cert_file", "key_file", mode="before")
    @classmethod
    def _paths(cls, value: Any, info: ValidationInfo) -> Any:
        return _path(value, info)

    @field_validator("domain")
    @classmethod
    def _check_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().lower().rstrip(".")
        labels = text.split(".")
        if len(text) > 253 or len(labels) < 2 or not all(_DNS_LABEL_RE.match(x) for x in labels):
            raise ValueError(f'not a DNS name like "spark.example.org": {_show(value)}')
        return text

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL_RE.match(value.strip()):
            raise ValueError(f"not an e-mail address: {_show(value)}")
        return None if value is None else value.strip()

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
        if self.mode == "files":
            for key in ("cert_file", "key_file"):
                path = getattr(self, key)
                if path is not None and not path.is_file():
                    problems.append((key, f"no such file: {path}"))
        if problems:
            raise _KeyProblems(problems)
        return self


class CullingConfig(_Table):
    # At most a year: 0 already means "never".
    server_idle_timeout: int = Field(default=3600, ge=0, le=_MAX_TIMEOUT)
    kernel_idle_timeout: int = Field(default=1800, ge=0, le=_MAX_TIMEOUT)


class JupyterHubConfig(_Table):
    users: list[str] = Field(default_factory=list)
    admins: list[str] = Field(default_factory=list)
    authenticator: Literal["pam"] = "pam"
    port: int = Field(default=443, ge=1, le=65535)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    culling: CullingConfig = Field(default_factory=CullingConfig)

    @field_validator("users", "admins")
    @classmethod
    def _check_names(cls, value: list[str]) -> list[str]:
        problems: list[tuple[str | int, str]] = []
        for index, name in enumerate(value):
            if not _UNIX_USER_RE.match(name):
                problems.append(
                    (
                        index,
                        f"not a valid Unix user name (lowercase letter first, "
                        f"then a-z 0-9 _ -, at most 32): {_show(name)}",
                    )
                )
            elif name in _RESERVED_USERS:
                problems.append((index, f"{_show(name)} is a system account name; pick another"))
            elif name in value[:index]:
                problems.append((index, f"{_show(name)} is listed twice"))
        if problems:
            raise _KeyProblems(problems)
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
                problems.append(("admins", f"{_show(name)} is not in jupyterhub.users"))
        if self.tls.mode == "acme" and self.port == 80:
            problems.append(
                (
                    "port",
                    "80 is needed for the ACME challenge when "
                    'jupyterhub.tls.mode = "acme"; use 443',
                )
            )
        if problems:
            raise _KeyProblems(problems)
        return self


class Inventory(_Table):
    """A validated inventory. Build it with :func:`load_inventory` or :func:`parse_inventory`."""

    cluster: ClusterConfig
    network: NetworkConfig
    ssh: SshConfig = Field(default_factory=SshConfig)
    master: MasterConfig
    workers: WorkersConfig
    spark: SparkConfig = Field(default_factory=SparkConfig)
    jupyterhub: JupyterHubConfig = Field(default_factory=JupyterHubConfig)

    @model_validator(mode="after")
    def _users_not_login_user(self) -> Inventory:
        if self.ssh.user in self.jupyterhub.users:
            raise _KeyProblems(
                [
                    (
                        "jupyterhub.users",
                        f"{_show(self.ssh.user)} is ssh.user (it has sudo); hub users must "
                        "be other accounts",
                    )
                ]
            )
        return self

    # Names every module must agree on. Pure functions of the cluster name.
    def keypair_name(self) -> str:
        """The Nova keypair to use: the given one, or the generated one for this cluster."""
        return self.ssh.keypair or generated_keypair_name(self.cluster.name)

    def keypair_is_generated(self) -> bool:
        return self.ssh.keypair is None

    def security_group_name(self) -> str:
        return security_group_name(self.cluster.name)

    def server_group_name(self) -> str:
        return server_group_name(self.cluster.name)

    def master_name(self) -> str:
        return master_server_name(self.cluster.name)

    def worker_name(self, index: int) -> str:
        return worker_server_name(self.cluster.name, index)

    def worker_names(self) -> list[str]:
        """Names of the workers this inventory asks for: <name>-worker-1 .. -<count>."""
        return [self.worker_name(i) for i in range(1, self.workers.count + 1)]

    def tag(self) -> str:
        return cluster_tag(self.cluster.name)


def generated_keypair_name(cluster: str) -> str:
    """Keypair created (and deleted by `down`) when the inventory names none."""
    return f"sparkstack-{cluster}"


def security_group_name(cluster: str) -> str:
    return f"sparkstack-{cluster}"


def server_group_name(cluster: str) -> str:
    """Nova server group holding the workers' anti-affinity policy."""
    return f"sparkstack-{cluster}-workers"


def master_server_name(cluster: str) -> str:
    return f"{cluster}-master"


def worker_server_name(cluster: str, index: int) -> str:
    if index < 1:
        raise ValueError(f"worker index starts at 1, got {index}")
    return f"{cluster}-worker-{index}"


def worker_index(server_name: str, cluster: str) -> int | None:
    """The index in a worker's server name, or None if it is not a worker of this cluster."""
    match = re.fullmatch(re.escape(cluster) + r"-worker-([1-9][0-9]*)", server_name)
    return int(match.group(1)) if match else None


def cluster_tag(cluster: str) -> str:
    """Tag on every resource of the cluster (Nova tags: <= 60 chars, no '/' or ',')."""
    return f"sparkstack:{cluster}"


def reserved_ports() -> dict[int, str]:
    """Ports the nodes use for Spark and the hub internals, with what uses them."""
    taken = {
        22: "SSH",
        SPARK_MASTER_PORT: "the Spark master",
        SPARK_MASTER_UI_PORT: "the Spark master web UI",
        SPARK_WORKER_PORT: "the Spark worker",
        SPARK_WORKER_UI_PORT: "the Spark worker web UI",
        HUB_API_PORT: "the hub API",
        PROXY_API_PORT: "the proxy API",
    }
    for base, what in (
        (SPARK_APP_UI_PORT, "Spark application UIs"),
        (SPARK_DRIVER_PORT, "Spark drivers"),
        (SPARK_BLOCK_MANAGER_PORT, "Spark block managers"),
    ):
        for port in range(base, base + SPARK_PORT_MAX_RETRIES + 1):
            taken[port] = what
    return taken


# --- Loading -------------------------------------------------------------------------------


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file; relative paths in it are relative to the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InventoryError(
            "no such file",
            resource=str(path),
            hint="copy inventory.example.toml and edit it, or pass the right path with -i",
        ) from None
    except IsADirectoryError:
        raise InventoryError("is a directory, not an inventory file", resource=str(path)) from None
    except OSError as exc:
        raise InventoryError(f"cannot read: {exc.strerror or exc}", resource=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InventoryError(
            f"not UTF-8 text (invalid byte on line {line}); TOML files must be UTF-8",
            resource=str(path),
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(_toml_error(exc), resource=str(path)) from None
    except RecursionError:
        raise InventoryError("invalid TOML: nested too deeply", resource=str(path)) from None
    return parse_inventory(data, source=str(path), base_dir=path.resolve().parent)


def parse_inventory(
    data: dict[str, Any], *, source: str, base_dir: Path | None = None
) -> Inventory:
    """Validate parsed TOML. ``source`` names the file in messages; ``base_dir`` anchors
    relative paths (default: the current directory)."""
    try:
        inventory = Inventory.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = _problems(exc)
        raise InventoryError(
            "inventory is not valid:\n" + "\n".join(f"  {p}" for p in problems),
            resource=source,
            hint="inventory.example.toml documents every key with its default",
        ) from None
    log.debug("inventory %s: cluster %s", source, inventory.cluster.name)
    return inventory


def _toml_error(exc: tomllib.TOMLDecodeError) -> str:
    text = str(exc)
    match = re.search(r"^(.*?)\s*\(at line (\d+), column (\d+)\)$", text)
    if match:
        return f"invalid TOML at line {match.group(2)}, column {match.group(3)}: {match.group(1)}"
    match = re.search(r"^(.*?)\s*\(at end of document\)$", text)
    if match:
        return f"invalid TOML at end of document: {match.group(1)}"
    return f"invalid TOML: {text}"


# --- Turning pydantic's errors into key paths and plain messages ---------------------------

_TOML_TYPE = {
    str: "string",
    int: "integer",
    float: "float",
    bool: "boolean",
    list: "array",
    dict: "table",
}


def _show(value: Any) -> str:
    """A value the way it would look in the TOML file, shortened."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif isinstance(value, dict):
        text = "{...}" if value else "{}"
    elif isinstance(value, list):
        text = "[...]" if value else "[]"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _typed(value: Any) -> str:
    kind = next((name for t, name in _TOML_TYPE.items() if type(value) is t), None)
    if kind is None:
        kind = "date/time" if hasattr(value, "isoformat") else type(value).__name__
    return f"{kind} {_show(value)}"


def _key_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class for the table at ``loc`` (to list its keys in a hint)."""
    model: type[BaseModel] = Inventory
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _problems(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        ctx = err.get("ctx") or {}
        value = err.get("input")
        cause = ctx.get("error")
        if isinstance(cause, _KeyProblems):
            for key, message in cause.problems:
                sub = (key,) if isinstance(key, int) else tuple(key.split("."))
                problems.append(f"{_key_path(loc + sub)}: {message}")
            continue
        problems.append(f"{_key_path(loc)}: {_message(kind, ctx, value, loc)}")
    return problems


def _message(kind: str, ctx: dict[str, Any], value: Any, loc: tuple[str | int, ...]) -> str:
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        keys = list(model.model_fields) if model else []
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
        if close:
            return f"unknown key (did you mean '{close[0]}'?)"
        return "unknown key (allowed: " + ", ".join(keys) + ")" if keys else "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op, bound = {
            "greater_than_equal": (">=", "ge"),
            "greater_than": (">", "gt"),
            "less_than_equal": ("<=", "le"),
            "less_than": ("<", "lt"),
        }[kind]
        return f"must be {op} {ctx[bound]}, got {_show(value)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}, got {_show(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a table, got {_typed(value)}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        wanted = {
            "int": "an integer",
            "string": "a string",
            "list": "an array",
            "bool": "true or false",
            "path": "a string (a file path)",
        }.get(kind.split("_")[0], "a different type")
        return f"must be {wanted}, got {_typed(value)}"
    if kind == "value_error":
        return str(ctx.get("error", "invalid value"))
    return f"invalid value {_show(value)}"
