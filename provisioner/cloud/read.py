"""Reading the cloud beyond the cluster's own resources: resolve the inventory's names to
ids, read the project's quotas, a server's console, whether a keypair exists.

The cluster itself is observed by ClusterObserver (observe.py), which this extends.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import openstack.exceptions as os_exc

from provisioner import plan as P
from provisioner.cloud.connection import UUID_RE
from provisioner.cloud.observe import ClusterObserver, port_ip
from provisioner.errors import CloudError, UserInputError

log = logging.getLogger(__name__)

# port_ip is also the writer's (it reads a port it made the same way)
__all__ = ["CloudReader", "port_ip"]


class CloudReader(ClusterObserver):
    """The reads preflight and the SSH stage make, on top of the cluster's observation."""

    def _find_one(self, kind: str, key: str, items: list[Any]) -> Any | None:
        exact = [i for i in items if i.id == key] or [i for i in items if i.name == key]
        if len(exact) > 1:
            listed = ", ".join(f"{i.name} ({i.id})" for i in exact)
            raise UserInputError(
                f"{kind} {key!r} is ambiguous: {listed}",
                hint=f"use the {kind}'s ID instead of its name",
            )
        return exact[0] if exact else None

    def resolve(self, desired: P.Desired) -> tuple[P.Resolved | None, list[str]]:
        """Resolve everything by name or id; return (resolved, problems) so preflight can
        report all problems in one message."""
        problems: list[str] = []
        image = network = ext = None
        try:
            images = []
            if UUID_RE.match(desired.image):
                one = self.call(
                    "read image",
                    lambda: self._get_or_none(self.conn.image.get_image, desired.image),
                )
                images = [one] if one is not None else []
            if not images:
                images = self._list(
                    "list images", lambda: self.conn.image.images(name=desired.image)
                )
            image = self._find_one("image", desired.image, images)
            if image is None:
                problems.append(f"image {desired.image!r} not found")
        except UserInputError as exc:
            problems.append(exc.message)
        flavors_all = self._list("list flavors", lambda: self.conn.compute.flavors(details=True))
        flavors: dict[str, P.Flavor] = {}
        flavor_ids: dict[str, str] = {}
        for key in {desired.master_flavor, desired.worker_flavor}:
            try:
                f = self._find_one("flavor", key, flavors_all)
            except UserInputError as exc:
                problems.append(exc.message)
                continue
            if f is None:
                names = ", ".join(sorted(x.name for x in flavors_all))
                problems.append(f"flavor {key!r} not found (available: {names})")
                continue
            flavors[key] = P.Flavor(name=f.name, vcpus=f.vcpus, ram=f.ram, disk=f.disk)
            flavor_ids[key] = f.id
        for kind, key in (
            ("network", desired.network),
            ("external network", desired.floating_ip_pool),
        ):
            if not key:
                continue
            networks = self.conn.network.networks
            nets = self._list("list networks", functools.partial(networks, name=key))
            if not nets and UUID_RE.match(key):
                nets = self._list("list networks", functools.partial(networks, id=key))
            try:
                n = self._find_one(kind, key, nets)
            except UserInputError as exc:
                problems.append(exc.message)
                continue
            if n is None:
                problems.append(f"{kind} {key!r} not found")
            elif kind == "network":
                network = n
            elif not n.is_router_external:
                problems.append(f"network {key!r} is not external: no floating IPs come from it")
            else:
                ext = n
        if problems or image is None or network is None:
            return None, problems
        img = P.Image(
            name=image.name,
            status=image.status,
            min_disk=image.min_disk or 0,
            min_ram=image.min_ram or 0,
            properties={str(k): str(v) for k, v in (image.properties or {}).items()},
        )
        return (
            P.Resolved(
                image_id=image.id,
                image=img,
                flavors=flavors,
                flavor_ids=flavor_ids,
                network_id=network.id,
                external_network_id=ext.id if ext else "",
            ),
            problems,
        )

    def quotas(self) -> dict[str, P.Quota]:
        """What the project may still use. A quota the user may not read is skipped."""
        out: dict[str, P.Quota] = {}
        lim = self.call("read compute limits", lambda: self.conn.compute.get_limits()).absolute
        for key, limit, used in (
            ("instances", lim.instances, lim.instances_used),
            ("cores", lim.total_cores, lim.total_cores_used),
            ("ram", lim.total_ram, lim.total_ram_used),
            ("server_groups", lim.server_groups, lim.server_groups_used),
            ("server_group_members", lim.server_group_members, 0),
        ):
            if limit is not None:
                out[key] = P.Quota(int(limit), int(used or 0))
        try:
            q = self.call(
                "read network quota",
                lambda: self.conn.network.get_quota(self.conn.current_project_id, details=True),
            )
        except CloudError as exc:
            log.warning("network quota not readable, not checked: %s", exc.message)
            return out
        for key, attr in (
            ("ports", "ports"),
            ("floating_ips", "floating_ips"),
            ("security_groups", "security_groups"),
            ("security_group_rules", "security_group_rules"),
        ):
            d = getattr(q, attr) or {}
            if isinstance(d, dict) and "limit" in d:
                used = int(d.get("used", 0)) + int(d.get("reserved", 0))
                out[key] = P.Quota(int(d["limit"]), used)
        return out

    def console_output(self, server_id: str, *, name: str = "") -> str:
        """The server's console log ("" while Nova says it is not ready yet: 409). A cloud
        whose policy hides the console answers 403 (or 404/501): that is a CloudError
        whose hint names the inventory switch for clouds without a console."""

        def read() -> str:
            try:
                out = self.conn.compute.get_server_console_output(server_id)
            except os_exc.ConflictException:
                return ""
            return (out or {}).get("output") or ""

        try:
            return self.call("read console log", read, resource=name or server_id)
        except CloudError as exc:
            exc.hint = (
                "this cloud does not show console logs, where host keys are read from; "
                'set ssh.host_key_trust = "first-use" in the inventory to record each '
                "node's key on first contact instead"
            )
            raise

    def find_keypair(self, name: str) -> bool:
        """Whether a keypair of that name exists for the user."""
        kp = self.call(
            "read keypair",
            lambda: self.conn.compute.find_keypair(name, ignore_missing=True),
            resource=name,
        )
        return kp is not None
