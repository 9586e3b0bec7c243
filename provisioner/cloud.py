"""The OpenStack edge: the only module that imports openstack.

Why a module of its own: openstacksdk's convenient calls have traps for a cluster tool
(auto_ip on by default, search filters silently ignored, one poll per server, re-resolving
image/flavor/network on every create, delete-by-object looking the object up as a name).
Here every call is a plain proxy call with ids, every resource gets the cluster's identity
in the same request that creates it, and nothing without that identity is ever changed.

Transient failures (5xx, connection resets) are retried with tenacity right here; 4xx are
not retried (a quota or a bad request fails the same way again) and become CloudError.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import openstack
import openstack.exceptions as os_exc
import tenacity
from keystoneauth1 import exceptions as ksa_exc

from provisioner import plan as P
from provisioner.errors import CloudError, UserInputError

log = logging.getLogger(__name__)

T = TypeVar("T")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def is_transient(exc: BaseException) -> bool:
    """5xx answers and broken connections: worth another try. Never a 4xx."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ksa_exc.ConnectionError | ConnectionError):
            return True
        if type(exc).__name__ in {"ConnectionError", "ChunkedEncodingError", "ReadTimeout"}:
            return True  # requests' own, without importing requests for it
        code = _status(exc)
        if code is not None:
            return code >= 500
        exc = exc.__cause__ or exc.__context__
    return False


def _describe(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    code = _status(exc)
    text = str(details or exc).strip()
    return f"HTTP {code}: {text}" if code else text


def connect(cloud: str = "") -> openstack.connection.Connection:
    """clouds.yaml entry `cloud`, else OS_CLOUD, else the OS_* variables (application
    credentials included: keystoneauth picks the plugin from what is set)."""
    try:
        return openstack.connect(cloud=cloud or None, app_name="sparkstack")
    except (os_exc.ConfigException, ksa_exc.ClientException, KeyError) as exc:
        raise UserInputError(
            f"cannot load the cloud configuration{f' {cloud!r}' if cloud else ''}: {exc}",
            step="connect",
            hint="set cluster.cloud to an entry of clouds.yaml, or OS_CLOUD, or source an "
            "openrc file",
        ) from exc


@dataclass(frozen=True)
class Resolved:
    """Image, flavors and networks resolved once per run to ids (never by name again)."""

    image_id: str
    image: P.Image
    flavors: dict[str, P.Flavor]  # by the name or id the inventory used
    flavor_ids: dict[str, str]
    network_id: str
    external_network_id: str


class ClusterCloud:
    """One cluster's view of one OpenStack project."""

    def __init__(
        self,
        conn: Any,
        *,
        cluster: str,
        retry_for: float = 120.0,
    ) -> None:
        self.conn = conn
        self.cluster = cluster
        self.retry_for = retry_for
        self.tags = P.identity_tags(cluster)
        self.description = P.identity_description(cluster)

    # ----------------------------------------------------------------- plumbing

    def _retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_exponential(multiplier=0.3, max=5),
            stop=tenacity.stop_after_delay(self.retry_for),
            before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
            reraise=True,
        )

    def call(self, what: str, fn: Callable[[], T], *, resource: str | None = None) -> T:
        """Run one API call with retries on transient errors; anything else -> CloudError."""
        try:
            return self._retrying()(fn)
        except (os_exc.SDKException, ksa_exc.ClientException) as exc:
            code = _status(exc)
            hint = None
            if code in (403, 413) and "quota" in str(exc).lower():
                hint = "raise the project's quota or make the cluster smaller"
            elif code == 401:
                hint = "check the credentials in clouds.yaml / OS_* variables"
            elif code and code >= 500 or is_transient(exc):
                hint = f"the cloud kept failing for {self.retry_for:.0f}s; try again later"
            raise CloudError(
                f"{what} failed: {_describe(exc)}", resource=resource, hint=hint
            ) from exc

    def create_once(
        self,
        what: str,
        create: Callable[[], T],
        find: Callable[[], T | None],
        *,
        resource: str,
    ) -> T:
        """A POST is not idempotent: after a lost answer, look before creating again."""
        attempt = 0

        def go() -> T:
            nonlocal attempt
            attempt += 1
            if attempt > 1:
                found = find()
                if found is not None:
                    log.info("%s: found it after a failed answer, not creating again", resource)
                    return found
            return create()

        return self.call(what, go, resource=resource)

    def _list(self, what: str, fn: Callable[[], Iterable[T]]) -> list[T]:
        return self.call(what, lambda: list(fn()))

    def _tag(self, res: Any, what: str) -> None:
        """Neutron (Zed) refuses `tags` in a POST body, so tags follow in a PUT; the
        description set in the POST is what makes the resource ours without a gap."""
        if not set(self.tags) <= set(res.tags or []):
            self.call("tag", lambda: self.conn.network.set_tags(res, self.tags), resource=what)

    def _ours(self, res: Any) -> bool:
        tags = set(getattr(res, "tags", None) or [])
        return P.cluster_tag(self.cluster) in tags or (
            getattr(res, "description", None) == self.description
        )

    # ----------------------------------------------------------------- resolution

    def _find_one(self, kind: str, key: str, items: list[Any]) -> Any | None:
        exact = [i for i in items if i.id == key] or [i for i in items if i.name == key]
        if len(exact) > 1:
            listed = ", ".join(f"{i.name} ({i.id})" for i in exact)
            raise UserInputError(
                f"{kind} {key!r} is ambiguous: {listed}",
                hint=f"use the {kind}'s ID instead of its name",
            )
        return exact[0] if exact else None

    def resolve(self, desired: P.Desired) -> tuple[Resolved | None, list[str]]:
        """Resolve everything by name or id; return (resolved, problems) so preflight can
        report all problems in one message."""
        problems: list[str] = []
        image = network = ext = None
        try:
            images = []
            if _UUID.match(desired.image):
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
            nets = self._list("list networks", lambda k=key: self.conn.network.networks(name=k))
            if not nets and _UUID.match(key):
                nets = self._list("list networks", lambda k=key: self.conn.network.networks(id=k))
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
        )
        return (
            Resolved(
                image_id=image.id,
                image=img,
                flavors=flavors,
                flavor_ids=flavor_ids,
                network_id=network.id,
                external_network_id=ext.id if ext else "",
            ),
            problems,
        )

    @staticmethod
    def _get_or_none(get: Callable[[str], T], key: str) -> T | None:
        try:
            return get(key)
        except os_exc.NotFoundException:
            return None

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

    # ----------------------------------------------------------------- observation

    def _node(self, s: Any) -> P.Node | None:
        md = s.metadata or {}
        if md.get(P.META_CLUSTER) != self.cluster:
            return None  # the tag filter matched, the metadata does not: not ours
        fixed = floating = ""
        for addrs in (s.addresses or {}).values():
            for a in addrs:
                if a.get("OS-EXT-IPS:type") == "floating":
                    floating = floating or a.get("addr", "")
                elif a.get("version", 4) == 4:
                    fixed = fixed or a.get("addr", "")
        flavor = s.flavor or {}
        fault = (s.fault or {}).get("message", "") if isinstance(s.fault, dict) else ""
        try:
            index = int(md.get(P.META_INDEX, "0"))
        except ValueError:
            index = 0
        return P.Node(
            name=s.name,
            role=md.get(P.META_ROLE, ""),
            index=index,
            id=s.id,
            status=s.status or "",
            fixed_ip=fixed,
            floating_ip=floating,
            flavor=flavor.get("original_name") or flavor.get("name") or flavor.get("id", ""),
            created=s.created_at or "",
            fault=fault,
        )

    def list_nodes(self) -> list[P.Node]:
        """All servers of the cluster: ONE request, filtered by tag on the server side
        (Nova's `tags` filter, microversion >= 2.26) and by metadata here."""
        servers = self._list(
            "list servers",
            lambda: self.conn.compute.servers(details=True, tags=P.cluster_tag(self.cluster)),
        )
        return [n for n in (self._node(s) for s in servers) if n is not None]

    def observe(self) -> P.Observed:
        c = self.cluster
        nodes = self.list_nodes()
        sgs = [
            s
            for s in self._list(
                "list security groups",
                lambda: self.conn.network.security_groups(name=P.security_group_name(c)),
            )
            if self._ours(s)
        ]
        ports = [
            p
            for p in self._list(
                "list ports", lambda: self.conn.network.ports(name=P.master_port_name(c))
            )
            if self._ours(p)
        ]
        groups = [
            g
            for g in self._list("list server groups", lambda: self.conn.compute.server_groups())
            if g.name == P.server_group_name(c)
        ]
        port = ports[0] if ports else None
        fips = self._list("list floating IPs", lambda: self.conn.network.ips())
        ours = [f for f in fips if self._ours(f)]
        attached = ""
        if port is not None:
            attached = next((f.floating_ip_address for f in fips if f.port_id == port.id), "")
        kp = self.call(
            "read keypair",
            lambda: self.conn.compute.find_keypair(P.keypair_name(c), ignore_missing=True),
        )
        if len(ports) > 1 or len(sgs) > 1 or len(groups) > 1:
            log.warning("cluster %s has duplicate resources; using the first of each", c)
        if attached:
            # Nova's view of addresses lags behind Neutron's for a moment after an attach
            nodes = [
                dataclasses.replace(n, floating_ip=attached)
                if n.role == P.MASTER and not n.floating_ip
                else n
                for n in nodes
            ]
        return P.Observed(
            cluster=c,
            nodes=tuple(nodes),
            security_group=P.Ref(sgs[0].id, sgs[0].name) if sgs else None,
            server_group=P.Ref(groups[0].id, groups[0].name, groups[0].policy or "")
            if groups
            else None,
            master_port=P.Ref(port.id, port.name, _port_ip(port)) if port else None,
            floating_ip=P.Ref(ours[0].id, "", ours[0].floating_ip_address) if ours else None,
            attached_ip=attached,
            keypair=P.Ref(kp.name, kp.name) if kp is not None else None,
        )

    # ----------------------------------------------------------------- creation

    def create_security_group(
        self, *, name: str, cidrs: Iterable[str], ports: Iterable[int]
    ) -> str:
        def find() -> Any:
            found = [s for s in self.conn.network.security_groups(name=name) if self._ours(s)]
            return found[0] if found else None

        sg = self.create_once(
            "create security group",
            lambda: self.conn.network.create_security_group(
                name=name, description=self.description
            ),
            find,
            resource=name,
        )
        self._tag(sg, name)
        rules: list[dict[str, Any]] = [
            {
                "security_group_id": sg.id,
                "direction": "ingress",
                "ethertype": eth,
                "remote_group_id": sg.id,
            }
            for eth in ("IPv4", "IPv6")
        ]
        for cidr in cidrs:
            eth = "IPv6" if ":" in cidr else "IPv4"
            for port in ports:
                rules.append(
                    {
                        "security_group_id": sg.id,
                        "direction": "ingress",
                        "ethertype": eth,
                        "protocol": "tcp",
                        "port_range_min": port,
                        "port_range_max": port,
                        "remote_ip_prefix": cidr,
                        "description": self.description,
                    }
                )

        def add_rules() -> None:
            try:
                list(self.conn.network.create_security_group_rules(rules))
            except os_exc.ConflictException:
                # a retry after a lost answer: the rules exist already
                log.info("security group %s: rules already present", name)

        self.call("create security group rules", add_rules, resource=name)
        return sg.id

    def create_keypair(self, *, name: str, public_key: str) -> None:
        def create() -> None:
            try:
                self.conn.compute.create_keypair(name=name, public_key=public_key)
            except os_exc.ConflictException:
                # exists (e.g. our own, after a lost answer): Nova keys are immutable
                log.info("keypair %s already exists; using it", name)

        self.call("import keypair", create, resource=name)

    def create_server_group(self, *, name: str, policy: str) -> str:
        def find() -> Any:
            return next((g for g in self.conn.compute.server_groups() if g.name == name), None)

        # openstacksdk sends `policy` at microversion >= 2.64 (needed for the soft
        # policies' rules) and `policies` below it.
        group = self.create_once(
            "create server group",
            lambda: self.conn.compute.create_server_group(name=name, policy=policy),
            find,
            resource=name,
        )
        return group.id

    def create_master_port(self, *, name: str, network_id: str, security_group_id: str) -> P.Ref:
        def find() -> Any:
            found = [p for p in self.conn.network.ports(name=name) if self._ours(p)]
            return found[0] if found else None

        port = self.create_once(
            "create master port",
            lambda: self.conn.network.create_port(
                name=name,
                network_id=network_id,
                security_group_ids=[security_group_id],
                description=self.description,
            ),
            find,
            resource=name,
        )
        self._tag(port, name)
        return P.Ref(port.id, port.name, _port_ip(port))

    def create_server(
        self,
        *,
        name: str,
        role: str,
        index: int,
        resolved: Resolved,
        flavor: str,
        key_name: str,
        user_data: str,
        port_id: str = "",
        security_group_id: str = "",
        server_group_id: str = "",
    ) -> str:
        """One POST, no retry: a lost answer may still have created the server, so the
        caller's next listing decides (identity is in the request, so it will be found)."""
        attrs: dict[str, Any] = {
            "name": name,
            "image_id": resolved.image_id,
            "flavor_id": resolved.flavor_ids[flavor],
            "key_name": key_name,
            "user_data": base64.b64encode(user_data.encode()).decode(),
            "metadata": {
                P.META_CLUSTER: self.cluster,
                P.META_ROLE: role,
                P.META_INDEX: str(index),
            },
            "tags": self.tags,
        }
        if port_id:
            attrs["networks"] = [{"port": port_id}]
        else:
            attrs["networks"] = [{"uuid": resolved.network_id}]
            # by id: Nova resolves names too, and a same-named group would be ambiguous
            attrs["security_groups"] = [{"name": security_group_id}]
        if server_group_id:
            attrs["scheduler_hints"] = {"group": server_group_id}
        try:
            return self.conn.compute.create_server(**attrs).id
        except (os_exc.SDKException, ksa_exc.ClientException) as exc:
            if is_transient(exc):
                raise
            code = _status(exc)
            hint = (
                "raise the project's quota or make the cluster smaller"
                if code in (403, 413)
                else None
            )
            raise CloudError(
                f"create server failed: {_describe(exc)}", resource=name, hint=hint
            ) from exc

    def attach_floating_ip(self, *, address: str, port_id: str, external_network_id: str) -> str:
        """Put `address` (existing, never released by us) or a new tagged one on the port."""
        if address:
            fips = self._list(
                "find floating IP", lambda: self.conn.network.ips(floating_ip_address=address)
            )
            if not fips:
                raise CloudError(
                    f"floating IP {address} not found in this project",
                    resource=address,
                    hint="allocate it first, or leave network.floating_ip empty",
                )
            fip = fips[0]
            if fip.port_id and fip.port_id != port_id:
                raise CloudError(
                    f"floating IP {address} is attached to another port ({fip.port_id})",
                    resource=address,
                    hint="detach it first, or leave network.floating_ip empty",
                )
            self.call(
                "attach floating IP",
                lambda: self.conn.network.update_ip(fip.id, port_id=port_id),
                resource=address,
            )
            return address

        def find() -> Any:
            return next((f for f in self.conn.network.ips(port_id=port_id) if self._ours(f)), None)

        fip = self.create_once(
            "allocate floating IP",
            lambda: self.conn.network.create_ip(
                floating_network_id=external_network_id,
                port_id=port_id,
                description=self.description,
            ),
            find,
            resource="floating IP",
        )
        self._tag(fip, fip.floating_ip_address)
        return fip.floating_ip_address

    # ----------------------------------------------------------------- deletion (ids only)

    def delete_server(self, server_id: str, *, name: str = "") -> None:
        # by id: delete_server(<object>) would look the object's text up as a name
        self.call(
            "delete server",
            lambda: self.conn.compute.delete_server(server_id, ignore_missing=True),
            resource=name or server_id,
        )

    def delete_floating_ip(self, fip_id: str, *, address: str = "") -> None:
        self.call(
            "release floating IP",
            lambda: self.conn.network.delete_ip(fip_id, ignore_missing=True),
            resource=address or fip_id,
        )

    def delete_port(self, port_id: str, *, name: str = "") -> None:
        self.call(
            "delete port",
            lambda: self.conn.network.delete_port(port_id, ignore_missing=True),
            resource=name or port_id,
        )

    def delete_security_group(self, sg_id: str, *, name: str = "", wait_for: float = 60) -> None:
        """Neutron answers 409 while a port still uses the group (a deleted server's port
        goes a moment after the server): wait that out, nothing else."""
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(os_exc.ConflictException),
            wait=tenacity.wait_exponential(multiplier=0.3, max=3),
            stop=tenacity.stop_after_delay(wait_for),
            reraise=True,
        ):
            with attempt:
                self._delete_sg_once(sg_id, name)

    def _delete_sg_once(self, sg_id: str, name: str) -> None:
        try:
            self._retrying()(
                lambda: self.conn.network.delete_security_group(sg_id, ignore_missing=True)
            )
        except os_exc.ConflictException:
            raise
        except (os_exc.SDKException, ksa_exc.ClientException) as exc:
            raise CloudError(
                f"delete security group failed: {_describe(exc)}", resource=name or sg_id
            ) from exc

    def delete_server_group(self, group_id: str, *, name: str = "") -> None:
        self.call(
            "delete server group",
            lambda: self.conn.compute.delete_server_group(group_id, ignore_missing=True),
            resource=name or group_id,
        )

    def delete_keypair(self, name: str) -> None:
        self.call(
            "delete keypair",
            lambda: self.conn.compute.delete_keypair(name, ignore_missing=True),
            resource=name,
        )


def _port_ip(port: Any) -> str:
    for ip in port.fixed_ips or []:
        addr = ip.get("ip_address", "")
        if addr and ":" not in addr:
            return addr
    return ""
