"""`sparkstack render`: the paste-ready cloud-config of a role, or the PySpark kernel.json.

For people who launch from Horizon (or Heat, or Terraform) instead of `sparkstack up`: the
same documents `up` sends, written to a file or stdout.
"""

from __future__ import annotations

import enum
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from provisioner.checksums import spark_hash
from provisioner.commands.common import DEFAULT_INVENTORY
from provisioner.errors import UserInputError
from provisioner.heat import render_heat
from provisioner.inventory import load_inventory
from provisioner.render import (
    DEFAULT_JAVA_HOME,
    default_py4j_zip,
    render_cloud_init,
    render_kernel,
)

log = logging.getLogger(__name__)


class RenderRole(str, enum.Enum):
    master = "master"
    worker = "worker"
    kernel = "kernel"
    image = "image"


RoleOpt = Annotated[
    RenderRole | None,
    typer.Option(
        "--role",
        help="master or worker: a #cloud-config for that node; kernel: kernel.json; "
        "image: a #cloud-config that installs everything a node needs on a VM you "
        "then seal (sudo sparkstack-bootstrap seal) and snapshot yourself.",
        case_sensitive=False,
    ),
]
HeatOpt = Annotated[
    bool,
    typer.Option(
        "--heat",
        help="A Heat template for the whole cluster instead (Horizon: Project > "
        "Orchestration > Stacks > Launch Stack); then run its hub_command output.",
    ),
]
# render's own: its help and dir_okay differ from the cluster commands' InventoryOpt
RenderInventoryOpt = Annotated[
    Path,
    typer.Option(
        "-i",
        "--inventory",
        help="The cluster's inventory file.",
        envvar="SPARKSTACK_INVENTORY",
        dir_okay=False,
    ),
]
MasterIpOpt = Annotated[
    str | None,
    typer.Option(
        "--master-ip",
        help="The master's private IPv4 address. Required for worker and kernel; "
        "for master, the node then refuses to come up under another address.",
    ),
]
Py4jZipOpt = Annotated[
    str | None,
    typer.Option(
        "--py4j-zip",
        help="kernel only: absolute path of $SPARK_HOME/python/lib/py4j-*-src.zip "
        "on the master (default: the one Spark 4 ships). The master's own boot "
        "writes kernel.json with the zip it really has.",
    ),
]
JavaHomeOpt = Annotated[
    str, typer.Option("--java-home", help="kernel only: JAVA_HOME on the master.")
]
TreeOpt = Annotated[
    Path | None,
    typer.Option(
        "--tree",
        help="image only: write the document's files (the boot script, its settings, "
        "the locks) under this directory, for image/provision.sh on a machine "
        "without cloud-init.",
        file_okay=False,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "-o",
        "--output",
        help="Write here instead of stdout (paste the file into Horizon: Launch "
        "Instance > Configuration > Customization Script).",
        dir_okay=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add the render command to the app."""
    app.command("render")(render)


def render(
    role: RoleOpt = None,
    heat: HeatOpt = False,
    inventory: RenderInventoryOpt = DEFAULT_INVENTORY,
    master_ip: MasterIpOpt = None,
    py4j_zip: Py4jZipOpt = None,
    java_home: JavaHomeOpt = DEFAULT_JAVA_HOME,
    tree: TreeOpt = None,
    output: OutputOpt = None,
) -> None:
    """Write the cloud-config of a master, a worker or an image builder, kernel.json, or
    a Heat template for the whole cluster."""
    if role is None and not heat:
        raise UserInputError(
            "give --role (or --heat)",
            hint="--role master|worker|kernel|image for one document, --heat for a "
            "template of the whole cluster",
        )
    inv = load_inventory(inventory)
    if heat:
        if role is not None:
            raise UserInputError("--role is not used with --heat",
                                 hint="the template holds every node's document")  # fmt: skip
        if master_ip is not None or py4j_zip is not None or tree is not None:
            raise UserInputError("--master-ip, --py4j-zip and --tree are not used with --heat",
                                 hint="the stack knows the master's address")  # fmt: skip
        spark = spark_hash(inv.spark)
        text = render_heat(inv, spark=spark, inventory_name=inventory.name)
        typer.echo(f"spark tarball sha512: {spark.source}", err=True)
        if output is None:
            typer.echo(text, nl=False)
        else:
            _write(output, text)
            typer.echo(f"wrote {output} (Heat template of cluster {inv.cluster.name}); "
                       "launch it in Horizon: Project > Orchestration > Stacks > "
                       "Launch Stack", err=True)  # fmt: skip
        return
    if role is None:
        raise UserInputError("give --role (or --heat)")
    if role is RenderRole.kernel:
        if master_ip is None:
            raise UserInputError(
                "--master-ip is required for --role kernel",
                hint="the kernel's drivers connect to spark://<master-ip>:7077",
            )
        text = render_kernel(
            inv,
            master_ip=master_ip,
            py4j_zip=py4j_zip or default_py4j_zip(),
            java_home=java_home,
        )
    else:
        if py4j_zip is not None:
            raise UserInputError("--py4j-zip is only used with --role kernel")
        if role is RenderRole.image and master_ip is not None:
            raise UserInputError("--master-ip is not used with --role image",
                                 hint="an image belongs to no cluster yet")  # fmt: skip
        if role is RenderRole.worker and master_ip is None:
            raise UserInputError(
                "--master-ip is required for --role worker",
                hint="launch the master first and use its private IP "
                "(Horizon: Project > Compute > Instances)",
            )
        # The hash every node checks Spark against: pinned, or fetched now from Apache's
        # site (spark.checksums); said on stderr, so a pasted document stays whole.
        spark = spark_hash(inv.spark)
        text = render_cloud_init(inv, role=role.value, master_ip=master_ip, spark_hash=spark)
        typer.echo(f"spark tarball sha512: {spark.source}", err=True)
    if tree is not None:
        if role is not RenderRole.image:
            raise UserInputError("--tree is only used with --role image")
        for path in write_tree(text, tree):
            log.debug("wrote %s", path)
        typer.echo(f"wrote the image's files under {tree}", err=True)
    elif output is None:
        typer.echo(text, nl=False)
    else:
        _write(output, text)
        typer.echo(f"wrote {output} ({role.value})", err=True)


def _write(path: Path, text: str) -> None:
    """Write whole or not at all, so a paste never picks up a truncated document. A name
    ending in .gz gets it gzip-compressed, as `up` sends it (cloud-init unpacks it): the
    image builder's document is over Nova's limit as plain text."""
    from provisioner.render import wire_user_data

    data = wire_user_data(text) if path.suffix == ".gz" else text.encode("utf-8")
    try:
        directory = path.parent if str(path.parent) else Path(".")
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise UserInputError(
            f"cannot write {path}: {exc.strerror or exc}", resource=str(path)
        ) from None
    log.debug("wrote %s", path)


def write_tree(document: str, root: Path) -> list[Path]:
    """The files a #cloud-config's write_files would make, under `root`, with their modes."""
    import yaml

    written = []
    for entry in yaml.safe_load(document).get("write_files", []):
        path = root / entry["path"].lstrip("/")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(entry["content"], encoding="utf-8")
            os.chmod(path, int(str(entry.get("permissions", "0644")), 8))
        except OSError as exc:
            raise UserInputError(f"cannot write {path}: {exc.strerror or exc}",
                                 resource=str(path)) from None  # fmt: skip
        written.append(path)
    return written
