"""`sparkstack image build|list`: bake a Glance image from a stock one, and see which
baked images match this sparkstack and the inventory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from provisioner.commands.common import (
    DEFAULT_INVENTORY,
    InventoryOpt,
    JsonOpt,
    cluster_cloud,
    load,
    session,
)
from provisioner.commands.output import age, emit_json, progress
from provisioner.errors import PreflightError, SparkstackError

if TYPE_CHECKING:  # imported where used: commands that need neither start faster
    from provisioner.cloud import ClusterCloud
    from provisioner.cloud.images import ImageCloud
    from provisioner.inventory import Inventory


def image_clouds(inv: Inventory) -> tuple[ClusterCloud, ImageCloud]:
    """The builder's cluster view and the image calls, over one connection."""
    from provisioner.cloud import ClusterCloud
    from provisioner.cloud.images import ImageCloud
    from provisioner.workflows.image_build import builder_name

    cloud = cluster_cloud(inv)
    name = builder_name(inv.cluster.name)
    return (ClusterCloud(cloud.conn, cluster=name, retry_for=cloud.retry_for),
            ImageCloud(cloud.conn, cluster=name, retry_for=cloud.retry_for))  # fmt: skip


def _image_user_data(inv: Inventory) -> str:
    from provisioner.checksums import spark_hash
    from provisioner.render import IMAGE_ROLE, render_cloud_init

    return render_cloud_init(inv, role=IMAGE_ROLE, spark_hash=spark_hash(inv.spark),
                             for_api=True)  # fmt: skip


SourceOpt = Annotated[
    str | None,
    typer.Option("--from", help="Stock image to start from (default: cluster.image)."),
]
NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Name of the new image (default: sparkstack-spark<version>-<UTC date-time>).",
    ),
]


def register(app: typer.Typer) -> None:
    image_app = typer.Typer(
        no_args_is_help=True,
        help="Bake a Glance image that holds everything a node installs (image build), "
        "and list the baked images (image list).",
    )
    app.add_typer(image_app, name="image")
    image_app.command("build")(build)
    image_app.command("list")(list_)


def build(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    source: SourceOpt = None,
    name: NameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bake a Glance image from a stock one: a cluster on it installs nothing at boot.

    Boots one builder server, installs what every node needs (Java, the hub's Python
    and npm packages from this sparkstack's locks, Spark from the inventory, checked by
    sha512), seals it, snapshots it and deletes the builder."""
    from provisioner.workflows import image_build

    inv = load(inventory)
    source = source or inv.cluster.image
    image_name = name or image_build.default_name(inv)
    out, err = Console(emoji=False), Console(stderr=True, emoji=False)
    builder = image_build.builder_name(inv.cluster.name)
    with session(inv.cluster.name) as current:
        user_data = _image_user_data(inv)
        cloud, images = image_clouds(inv)
        started = time.monotonic()
        with progress(err, f"image build {image_name}", quiet=as_json) as reporter:
            removed = [True]

            def stopped(ok: bool) -> None:
                removed[0] = ok
                current.state = f"during image build: {image_build.left_behind(builder, ok)}"

            try:
                built = image_build.build(
                    inv, builder=cloud, images=images, user_data=user_data, source=source,
                    image_name=image_name, reporter=reporter, on_stopped=stopped,
                )  # fmt: skip
            except PreflightError:
                raise  # nothing was created: its own message says so
            except SparkstackError as exc:
                exc.hint = image_build.failed_hint(exc.hint, builder, removed[0])
                raise
            current.state = f"after image build had finished: image {image_name} exists"
        total = round(time.monotonic() - started, 1)
    if as_json:
        emit_json({"image": {"id": built.image_id, "name": built.name,
                             "size": built.size, "properties": built.properties},
                   "seconds": {**built.seconds, "total": total},
                   "inventory": f'image = "{built.name}"'})  # fmt: skip
        return
    out.print(f"image {escape(built.name)} ({built.image_id}) built in {total:.0f} s:"
              f" {built.size / 2**20:.0f} MiB", highlight=False)  # fmt: skip
    p = built.properties
    out.print(f"  holds Spark {p.get('spark_version')}, Java {p.get('java')}, Python "
              f"{p.get('sparkstack_python')}, the hub's packages of sparkstack "
              f"{p.get('sparkstack_version')}; {p.get('os_distro')} {p.get('os_version')}",
              highlight=False, soft_wrap=True)  # fmt: skip
    out.print(escape("  use it: in the inventory's [cluster] table,"), highlight=False)
    out.print(f'    image = "{escape(built.name)}"', highlight=False)


def list_(
    inventory: InventoryOpt = DEFAULT_INVENTORY,
    as_json: JsonOpt = False,
) -> None:
    """The project's baked images, and whether each matches this inventory.

    An image matches when it holds this sparkstack's locks and the inventory's Spark."""
    from provisioner.baked import differences

    inv = load(inventory)
    with session(inv.cluster.name):
        _, images = image_clouds(inv)
        found = sorted(images.images(), key=lambda i: i.created, reverse=True)
    rows = []
    for info in found:
        wrong = differences(info.properties, inv)
        state = ("unfinished" if not info.baked else "matches" if not wrong
                 else "differs: " + "; ".join(wrong))  # fmt: skip
        rows.append((info, state))
    if as_json:
        emit_json({"images": [
            {"id": i.id, "name": i.name, "status": i.status, "size": i.size,
             "created": i.created, "properties": i.properties,
             "matches": i.baked and not differences(i.properties, inv), "state": state}
            for i, state in rows]})  # fmt: skip
        return
    out = Console(emoji=False)
    if not rows:
        out.print("no baked images in this project: `sparkstack image build -i "
                  f"{inventory}` makes one", highlight=False)  # fmt: skip
        return
    table = Table("name", "id", "status", "Spark", "Java", "OS", "age", "for this inventory")
    for column in table.columns[:2]:
        column.overflow = "fold"  # names and ids whole, on several lines if need be
    for i, state in rows:
        p = i.properties
        table.add_row(escape(i.name), i.id, i.status, p.get("spark_version", ""),
                      p.get("java", ""), f"{p.get('os_distro', '')} {p.get('os_version', '')}",
                      age(i.created), escape(state))  # fmt: skip
    out.print(table)
