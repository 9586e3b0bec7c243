"""Pure rendering: an inventory to the cloud-init user_data of each role, and to kernel.json.

Templates are jinja2 with StrictUndefined, so a missing value is an error at render time,
never an empty string in a shell script on a node. They ship as package data
(``provisioner.cloud_init_templates``, ``provisioner.kernels``), so an installed wheel
renders exactly what the source tree does.
"""

from __future__ import annotations

import ast
import base64
import functools
import gzip
import ipaddress
import json
import logging
import re
import shlex
from dataclasses import dataclass
from importlib.resources import files
from typing import Literal

import jinja2

from provisioner import __version__
from provisioner import inventory as inv_mod
from provisioner import locks as locks_mod
from provisioner.errors import UserInputError
from provisioner.inventory import Inventory
from provisioner.inventory.names import CORE_OOM_SCORE_ADJ, CORE_SLICE
from provisioner.inventory.services import SparkConfig
from provisioner.locks import locks

log = logging.getLogger(__name__)

Role = Literal["master", "worker", "image"]
ROLES: tuple[Role, ...] = ("master", "worker")
# "image": the one-off builder `sparkstack image build` snapshots. It installs what a master
# installs (a baked image serves masters and workers alike) and configures nothing.
IMAGE_ROLE: Role = "image"

# Nova rejects user_data whose base64 encoding is longer than this (the column is a TEXT).
MAX_USER_DATA_BASE64 = 65535

# Where things are on every node. The provisioner waits on READY/FAILED over SSH.
SPARK_HOME = "/opt/spark"
VENV = "/opt/sparkstack/venv"
VENV_PYTHON = f"{VENV}/bin/python"
STATE_DIR = "/var/lib/sparkstack"
SPARK_PID_DIR = "/var/lib/spark/run"
READY_MARKER = f"{STATE_DIR}/ready"
FAILED_MARKER = f"{STATE_DIR}/failed"
CONF_PATH = "/etc/sparkstack/sparkstack.conf"
# What a baked image holds (sparkstack, Spark, Java, lock hashes, OS): written by the
# builder's boot, read back for the image's Glance properties and by nodes' boots.
IMAGE_RECORD = "/etc/sparkstack/image"
# The locks as the master's user_data delivers them (provisioner.locks): its boot installs
# the venv and the proxy from them, so nothing unpinned comes from a mirror.
REQUIREMENTS_PATH = locks_mod.LOCK_DIR + "/requirements.txt"
NPM_LOCK_DIR = locks_mod.LOCK_DIR + "/npm"
# Where configurable-http-proxy lives (image/provision.sh puts it there too).
NPM_DIR = "/opt/sparkstack/npm"
KERNEL_DIR = "/usr/local/share/jupyter/kernels/pyspark"
KERNEL_PATH = f"{KERNEL_DIR}/kernel.json"
# The kernel's start on a master sparkstack set up (kernels/pyspark/startup.py): Spark
# connects in the background; `render --role kernel` keeps Spark's own shell.py.
KERNEL_STARTUP = f"{KERNEL_DIR}/sparkstack_startup.py"
SPARK_SHELL = f"{SPARK_HOME}/python/pyspark/shell.py"
# Java of Debian 12 / Ubuntu 22.04+ on amd64; the node finds its own, this is for
# `render --role kernel` when no better value is known.
DEFAULT_JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"

# Placeholders in the master's kernel.json.in, filled in at boot with what the node has.
_BOOT_MASTER_IP = "@MASTER_IP@"
_BOOT_PY4J_ZIP = "@PY4J_ZIP@"
_BOOT_JAVA_HOME = "@JAVA_HOME@"

# In the order a full run takes them; the steps of one PARALLEL group run at once.
_STEPS = {
    "master": (
        "mirrors", "base", "harden", "user", "java", "proxy", "python", "spark", "configure",
        "kernel", "service", "ready",
    ),
    "image": (
        "mirrors", "base", "harden", "user", "java", "proxy", "python", "spark", "baked",
    ),
    "worker": (
        "mirrors", "base", "harden", "user", "java", "python", "spark", "configure", "service",
        "ready",
    ),
}  # fmt: skip
# Downloads and installs that do not depend on each other: apt (Java, then the proxy's
# npm install) while pip fills the venv while Spark downloads. Chains run left to right.
PARALLEL = {
    "master": (("java", "proxy"), ("python",), ("spark",)),
    "worker": (("java",), ("python",), ("spark",)),
    "image": (("java", "proxy"), ("python",), ("spark",)),
}


@dataclass(frozen=True)
class SparkHash:
    """The sha512 every node checks the Spark tarball against, and where it came from (the
    node's settings and log say so). ``sha512`` None: the node reads the mirror's own
    .sha512, which the inventory allowed with spark.trust_mirror_checksum."""

    sha512: str | None
    source: str

    @classmethod
    def of_inventory(cls, spark: SparkConfig) -> SparkHash | None:
        """The hash the inventory itself decides; None when it must be fetched first."""
        if spark.sha512 is not None:
            return cls(sha512=spark.sha512, source="pinned in the inventory (spark.sha512)")
        if spark.trust_mirror_checksum:
            return cls(
                sha512=None,
                source="published by the mirror beside the tarball (spark.trust_mirror_checksum)",
            )
        return None


def bootstrap_steps(role: Role) -> tuple[str, ...]:
    """The steps of ``sparkstack-bootstrap`` for a role, in the order it runs them."""
    return _STEPS[role]


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """One jinja2 environment reading the templates shipped with the package."""
    cloud_init = files("provisioner.cloud_init_templates")
    kernels = files("provisioner.kernels")

    def load(name: str) -> str:
        # "kernels/<dir>/<file>" names a kernel template; anything else a cloud-init one.
        parts = name.split("/")
        path = kernels.joinpath(*parts[1:]) if parts[0] == "kernels" else cloud_init / name
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise jinja2.TemplateNotFound(name) from None

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        # Shell's ${#array[@]} would open a jinja comment; templates comment with {## ##}.
        comment_start_string="{##",
        comment_end_string="##}",
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sh"] = shlex.quote
    env.filters["compact_shell"] = compact_shell
    return env


_HEREDOC = re.compile(r"<<-?\s*['\"]?([A-Za-z_]+)['\"]?")
# A script's opening comment (what it is, how to run it) stays even when compacted.
_KEEP_HEAD = 12


def compact_shell(script: str, on: bool = True) -> str:
    """A shell script without its comment-only lines, for the plain document Horizon sends
    as it is (Nova limits user_data, and comments cost a third of the scripts). The
    opening lines, shellcheck directives and everything inside here-documents stay."""
    if not on:
        return script
    out, until = [], ""
    for number, line in enumerate(script.splitlines(keepends=True)):
        stripped = line.strip()
        if until:
            until = "" if stripped == until else until
        elif (number >= _KEEP_HEAD and stripped.startswith("#")
              and not stripped.startswith(("#!", "# shellcheck"))):  # fmt: skip
            continue
        else:
            match = _HEREDOC.search(line)
            until = match.group(1) if match else ""
        out.append(line)
    return "".join(out)


def _ipv4(value: str | None, *, option: str) -> str:
    if value is None:
        raise UserInputError(
            f"{option} is required: the master's private IPv4 address",
            hint="find it in Horizon (Instances) or with `openstack server show <name>-master`",
        )
    try:
        address = ipaddress.IPv4Address(value.strip())
    except ValueError:
        raise UserInputError(
            f"{option}: not an IPv4 address: {value!r}", hint="for example 10.0.0.12"
        ) from None
    if address.is_loopback or address.is_multicast or address.is_unspecified:
        raise UserInputError(f"{option}: {address} cannot be the master's private address")
    return str(address)


def _ports() -> dict[str, int]:
    return {
        "master": inv_mod.SPARK_MASTER_PORT,
        "master_ui": inv_mod.SPARK_MASTER_UI_PORT,
        "worker": inv_mod.SPARK_WORKER_PORT,
        "worker_ui": inv_mod.SPARK_WORKER_UI_PORT,
        "driver": inv_mod.SPARK_DRIVER_PORT,
        "block_manager": inv_mod.SPARK_BLOCK_MANAGER_PORT,
        "max_retries": inv_mod.SPARK_PORT_MAX_RETRIES,
    }


def _paths() -> dict[str, str]:
    return {
        "spark_home": SPARK_HOME,
        "venv": VENV,
        "state_dir": STATE_DIR,
        "ready": READY_MARKER,
        "failed": FAILED_MARKER,
        "conf": CONF_PATH,
        "kernel_dir": KERNEL_DIR,
        "pid_dir": SPARK_PID_DIR,
        "requirements": REQUIREMENTS_PATH,
        "npm_lock_dir": NPM_LOCK_DIR,
        "npm_dir": NPM_DIR,
        "image_record": IMAGE_RECORD,
    }


def render_cloud_init(
    inv: Inventory,
    *,
    role: Role,
    master_ip: str | None = None,
    spark_hash: SparkHash | None = None,
    for_api: bool = False,
) -> str:
    """The ``#cloud-config`` user_data for one node of ``role``.

    ``for_api``: the document `up` sends through Nova's API, gzip-compressed
    (:func:`wire_user_data`), which leaves room for the master's locks: its boot then
    installs the hub's packages while the rest of the node comes up. Without it (what
    `render` prints for Horizon's form, which sends the text as it is), the locks stay out
    and `sparkstack hub` installs those packages over SSH.

    A worker needs the master's private IP, and nothing else that differs per node, so one
    document serves every worker. A master finds its own address at boot; when
    ``master_ip`` is given it refuses to come up under another address.

    ``spark_hash`` is the tarball's sha512 fetched by the caller (provisioner.checksums);
    it may be left out only when the inventory pins the hash or trusts the mirror's.
    """
    if role not in (*ROLES, IMAGE_ROLE):
        raise UserInputError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "worker" or master_ip is not None:
        master_ip = _ipv4(master_ip, option="--master-ip")
    spark_hash = spark_hash or SparkHash.of_inventory(inv.spark)
    if spark_hash is None:
        raise UserInputError(
            "the Spark tarball's sha512 is neither pinned (spark.sha512) nor fetched from "
            "spark.checksums; a node would have nothing to check the download against"
        )
    context = {
        "inv": inv,
        "role": role,
        "master_ip": master_ip,
        "ports": _ports(),
        "paths": _paths(),
        "core_slice": CORE_SLICE,
        "core_oom_score_adj": CORE_OOM_SCORE_ADJ,
        "steps": bootstrap_steps(role),
        "parallel": PARALLEL[role],
        "spark_hash": spark_hash,
        "locks": locks(),
        "ca_certs": inv.mirrors.ca_certificates(),
        "version": __version__,
        "with_locks": (for_api and role == "master") or role == IMAGE_ROLE,
        # The roles that install the hub's packages (pip lock, Node.js, the proxy).
        "hub": role in ("master", IMAGE_ROLE),
        # The plain document (Horizon's form) leaves the scripts' comments out.
        "compact": not for_api and role != IMAGE_ROLE,
    }
    if role == "master":
        context["kernel_json"] = _kernel_json(
            inv, master_ip=_BOOT_MASTER_IP, py4j_zip=_BOOT_PY4J_ZIP, java_home=_BOOT_JAVA_HOME,
            startup=KERNEL_STARTUP,
        )
        context["kernel_startup"] = kernel_startup()
    user_data = _environment().get_template(f"{role}.yaml.j2").render(context)
    # The builder's document only ever goes through the API, compressed.
    check_user_data_size(user_data, what=f"{role} user_data",
                         compressed=for_api or role == IMAGE_ROLE)
    log.debug("rendered %s user_data: %d bytes", role, len(user_data.encode()))
    return user_data


def render_kernel(
    inv: Inventory,
    *,
    master_ip: str,
    py4j_zip: str,
    java_home: str = DEFAULT_JAVA_HOME,
    startup: str = SPARK_SHELL,
) -> str:
    """kernel.json of the global PySpark kernel on the master.

    ``py4j_zip`` must be the absolute path of the zip the installed Spark ships
    (``$SPARK_HOME/python/lib/py4j-*-src.zip``): its version changes between Spark lines,
    and kernel.json values are not expanded, so every path is absolute. ``startup`` is the
    kernel's PYTHONSTARTUP: Spark's shell.py, or KERNEL_STARTUP on a master sparkstack
    set up.
    """
    master_ip = _ipv4(master_ip, option="--master-ip")
    if not py4j_zip.startswith("/") or not py4j_zip.endswith(".zip"):
        raise UserInputError(f"py4j zip must be an absolute path to a .zip, got {py4j_zip!r}")
    if not java_home.startswith("/"):
        raise UserInputError(f"JAVA_HOME must be an absolute path, got {java_home!r}")
    return _kernel_json(inv, master_ip=master_ip, py4j_zip=py4j_zip, java_home=java_home,
                        startup=startup)  # fmt: skip


def default_py4j_zip() -> str:
    """Best guess of the py4j zip for ``render --role kernel`` without a node to look at.

    This is the zip Spark 4.3 ships (py4j 0.10.9.9); other releases may ship another, so
    pass ``--py4j-zip`` for them. The master's own boot always uses the zip it has.
    """
    return f"{SPARK_HOME}/python/lib/py4j-0.10.9.9-src.zip"


@functools.cache
def kernel_startup() -> str:
    """kernels/pyspark/startup.py: the kernel's PYTHONSTARTUP on a master sparkstack set up.

    Its code only, without docstrings and comments: it travels in the master's user_data,
    which Horizon's form sends uncompressed within Nova's 64 KiB.
    """
    source = files("provisioner.kernels").joinpath("pyspark", "startup.py").read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):  # fmt: skip
            node.body = body[1:] or [ast.Pass()]
    return f"# sparkstack: kernels/pyspark/startup.py, documented there\n{ast.unparse(tree)}\n"


def _kernel_json(inv: Inventory, *, master_ip: str, py4j_zip: str, java_home: str,
                 startup: str = SPARK_SHELL) -> str:  # fmt: skip
    limits = inv.spark.limits
    submit_args = (
        f"--master spark://{master_ip}:{inv_mod.SPARK_MASTER_PORT} "
        f"--conf spark.driver.host={master_ip} "
        # spark-submit turns the console progress bar on for shells unless it is set: in a
        # notebook it is an empty red stderr box under every cell that runs a job.
        "--conf spark.ui.showConsoleProgress=false "
        f"--driver-memory {limits.driver_memory} pyspark-shell"
    )
    text = (
        _environment()
        .get_template("kernels/pyspark/kernel.json")
        .render(
            python=VENV_PYTHON,
            display_name=f"PySpark (Spark {inv.spark.version}, {inv.cluster.name})",
            cluster=inv.cluster.name,
            spark_version=inv.spark.version,
            spark_home=SPARK_HOME,
            java_home=java_home,
            py4j_zip=py4j_zip,
            submit_args=submit_args,
            startup=startup,
        )
    )
    json.loads(text)  # a template bug must fail here, not in Jupyter on the node
    return text


def wire_user_data(user_data: str) -> bytes:
    """user_data as the cloud edge sends it: gzip, which cloud-init recognises and unpacks
    (mtime 0, so one document always gives the same bytes)."""
    return gzip.compress(user_data.encode("utf-8"), compresslevel=9, mtime=0)


def user_data_base64_size(user_data: str, *, compressed: bool = True) -> int:
    """Bytes of the base64 encoding Nova stores and limits; ``compressed`` as `up` sends
    it, else as pasted into Horizon."""
    raw = wire_user_data(user_data) if compressed else user_data.encode("utf-8")
    return len(base64.b64encode(raw))


def check_user_data_size(user_data: str, *, what: str = "user_data",
                         compressed: bool = True) -> None:  # fmt: skip
    """Raise before Nova does: its error names no field and arrives after other resources exist."""
    size = user_data_base64_size(user_data, compressed=compressed)
    if size > MAX_USER_DATA_BASE64:
        raise UserInputError(
            f"{what} is {size} bytes in base64, over Nova's limit of {MAX_USER_DATA_BASE64}",
            hint="shorten the inventory values that end up in the templates (a large "
            "mirrors.ca_bundle: keep only the CAs the mirrors need)",
        )
