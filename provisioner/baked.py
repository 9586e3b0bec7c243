"""What a baked image holds, as its Glance properties say, against what this sparkstack and
an inventory would install: pure, so `up`, `image list` and `image build` agree."""

from __future__ import annotations

from provisioner import plan as P
from provisioner.inventory import Inventory
from provisioner.locks import locks

# Glance properties of a baked image, from the builder's record (provisioner.render.
# IMAGE_RECORD) under the names `image list` shows.
RECORD_TO_PROPERTY = {
    "sparkstack_version": "sparkstack_version",
    "spark_version": "spark_version",
    "java": "java",
    "python": "sparkstack_python",
    "requirements_sha256": "sparkstack_pip_lock_sha256",
    "npm_lock_sha256": "sparkstack_npm_lock_sha256",
    "os_distro": "os_distro",
    "os_version": "os_version",
}


def expected_properties(inv: Inventory) -> dict[str, str]:
    """What an image must say to hold exactly what this sparkstack installs for `inv`."""
    from provisioner import __version__

    current = locks()
    return {
        "sparkstack_pip_lock_sha256": current.requirements.sha256,
        "sparkstack_npm_lock_sha256": current.npm_lock.sha256,
        "spark_version": inv.spark.version,
        "sparkstack_version": __version__,
    }


def differences(properties: dict[str, str], inv: Inventory) -> list[str]:
    """What a node booted from an image with these properties installs anyway, in words;
    empty when the image holds everything (a different sparkstack version alone is not a
    difference: the locks and Spark decide)."""
    want = expected_properties(inv)
    out = []
    if properties.get("spark_version") != want["spark_version"]:
        out.append(f"Spark {want['spark_version']} (the image has "
                   f"{properties.get('spark_version') or 'none'})")  # fmt: skip
    if properties.get("sparkstack_pip_lock_sha256") != want["sparkstack_pip_lock_sha256"]:
        out.append("the hub's Python packages (another pip lock)")
    if properties.get("sparkstack_npm_lock_sha256") != want["sparkstack_npm_lock_sha256"]:
        out.append("configurable-http-proxy (another npm lock)")
    return out


def image_note(image: P.Image, inv: Inventory) -> str:
    """One line on what the cluster's image means for its boots: nothing to install, what
    will be installed anyway, or (a stock image) that baking it once saves every boot."""
    props = image.properties
    if "sparkstack_version" not in props:
        return (
            f"image {image.name} is not baked: every node installs Java, Spark and (the "
            f"master) the hub at boot; `sparkstack image build` bakes them in once"
        )
    wrong = differences(props, inv)
    if props.get("sparkstack_build") != "complete":
        return f"image {image.name} is an unfinished sparkstack build: nodes install what it lacks"
    if not wrong:
        return f"image {image.name} is baked for this inventory: nodes install nothing at boot"
    return f"image {image.name} was baked for other contents: nodes install {'; '.join(wrong)}"
