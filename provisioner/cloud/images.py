"""Images: a server stopped and snapshotted into Glance, and the project's baked images.

A baked image carries its facts as Glance properties (PROPERTY_PREFIX...): which sparkstack
and locks made it, its Spark and Java. While a snapshot is being made the image also has
BUILDING = the builder's name, so a build stopped half-way (Ctrl-C, a lost answer) leaves
an image a rerun or `down` can recognise and delete; the property is set to "complete" once
the image is active.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from openstack.compute.v2 import server as server_mod

from provisioner.cloud.connection import API_ERRORS, CloudBase, describe_error
from provisioner.errors import CloudError

log = logging.getLogger(__name__)

VERSION_PROPERTY = "sparkstack_version"
BUILDING = "sparkstack_build"
COMPLETE = "complete"


@dataclass(frozen=True)
class ImageInfo:
    id: str
    name: str
    status: str
    size: int
    created: str
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def baked(self) -> bool:
        """Made by `sparkstack image build`, and finished."""
        return VERSION_PROPERTY in self.properties and self.properties.get(BUILDING) == COMPLETE


def _info(image: Any) -> ImageInfo:
    props = {str(k): str(v) for k, v in (getattr(image, "properties", None) or {}).items()}
    # Glance's well-known properties are attributes of openstacksdk's Image, not in the dict.
    for known in ("os_distro", "os_version"):
        if getattr(image, known, None):
            props[known] = str(getattr(image, known))
    return ImageInfo(
        id=image.id, name=image.name or "", status=image.status or "",
        size=int(image.size or 0), created=str(image.created_at or ""), properties=props,
    )  # fmt: skip


class ImageCloud(CloudBase):
    """The calls `image build` and `image list` make, with the cluster plumbing's retries."""

    def server_status(self, server_id: str) -> str:
        server = self.call("read server", lambda: self.conn.compute.get_server(server_id),
                           resource=server_id)  # fmt: skip
        return str(server.status)

    def stop_server(self, server_id: str, *, name: str = "") -> None:
        self.call("stop server", lambda: self.conn.compute.stop_server(server_id),
                  resource=name or server_id)  # fmt: skip

    def snapshot(self, server_id: str, *, image_name: str, metadata: dict[str, str],
                 name: str = "") -> str:  # fmt: skip
        """Nova's createImage; the new image's id. One POST, no retry: after a lost answer
        the image is found by its BUILDING property (building_images)."""
        try:
            return str(
                server_mod.Server(id=server_id).create_image(
                    self.conn.compute, image_name, metadata
                )
            )
        except API_ERRORS as exc:
            raise CloudError(f"create image failed: {describe_error(exc)}",
                             resource=name or server_id) from exc  # fmt: skip

    def image(self, image_id: str) -> ImageInfo | None:
        found = self.call(
            "read image",
            lambda: self.conn.image.find_image(image_id, ignore_missing=True),
            resource=image_id,
        )
        return _info(found) if found is not None else None

    def images(self) -> list[ImageInfo]:
        """Every image this project sees that a sparkstack build made (finished or not)."""
        found = self._list("list images", lambda: self.conn.image.images())
        return [i for i in map(_info, found) if VERSION_PROPERTY in i.properties]

    def building_images(self, builder: str) -> list[ImageInfo]:
        """Half-made images of this builder (a build that stopped before the end)."""
        return [i for i in self.images() if i.properties.get(BUILDING) == builder]

    def mark_complete(self, image_id: str) -> None:
        self.call(
            "set image properties",
            lambda: self.conn.image.update_image(image_id, **{BUILDING: COMPLETE}),
            resource=image_id,
        )

    def delete_image(self, image_id: str, *, name: str = "") -> None:
        self.call(
            "delete image",
            lambda: self.conn.image.delete_image(image_id, ignore_missing=True),
            resource=name or image_id,
        )
