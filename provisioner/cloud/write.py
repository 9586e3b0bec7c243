"""Changing the cloud: create with the cluster's identity in the same request, delete by id.

A POST is not idempotent: after a lost answer, each create looks before creating again
(servers excepted: the next server list decides, see the converger).
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import logging
from collections.abc import Iterable
from typing import Any

import openstack.exceptions as os_exc
import tenacity

from provisioner import plan as P
from provisioner.cloud.connection import (
    API_ERRORS,
    CloudBase,
    describe_error,
    is_transient,
    status_of,
)
from provisioner.cloud.read import port_ip
from provisioner.errors import CloudError
from provisioner.render import wire_user_data

log = logging.getLogger(__name__)


class CloudWriter(CloudBase):
    def create_security_group(
        self,
        *,
        name: str,
        cidrs: Iterable[str],
        ports: Iterable[int],
        world_ports: Iterable[int] = (),
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
        # The tags and the rules are independent PUT and POST: one round trip, not two.
        with cf.ThreadPoolExecutor(max_workers=1) as side:
            tagged = side.submit(self._tag, sg, name)
            self._add_rules(sg.id, P.security_group_rules(cidrs, ports, world_ports), name=name)
        tagged.result()
        return str(sg.id)

    def update_security_group(
        self,
        group_id: str,
        *,
        name: str,
        add: Iterable[P.IngressRule] = (),
        remove: Iterable[str] = (),
    ) -> None:
        for rule_id in remove:

            def delete(rule_id: str = rule_id) -> None:
                # after a lost answer the rule may be gone already
                self.conn.network.delete_security_group_rule(rule_id, ignore_missing=True)

            self.call("delete security group rule", delete, resource=name)
        add = list(add)
        if add:
            self._add_rules(group_id, add, name=name)

    def _add_rules(self, group_id: str, rules: Iterable[P.IngressRule], *, name: str) -> None:
        """All of `rules` in one bulk POST, which Neutron applies whole or not at all."""
        body = [self._neutron_rule(group_id, rule) for rule in rules]

        def add() -> None:
            try:
                list(self.conn.network.create_security_group_rules(body))
            except os_exc.ConflictException:
                # a retry after a lost answer: the rules exist already
                log.info("security group %s: rules already present", name)

        self.call("create security group rules", add, resource=name)

    def _neutron_rule(self, group_id: str, rule: P.IngressRule) -> dict[str, Any]:
        body: dict[str, Any] = {
            "security_group_id": group_id,
            "direction": "ingress",
            "ethertype": rule.ethertype,
        }
        if rule.from_own_group:
            return {**body, "remote_group_id": group_id, "description": self.description}
        return {
            **body,
            "protocol": "tcp",
            "port_range_min": rule.port,
            "port_range_max": rule.port,
            "remote_ip_prefix": rule.cidr,
            "description": self.description,
        }

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
        return str(group.id)

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
        return P.Ref(port.id, port.name, port_ip(port))

    def create_server(
        self,
        *,
        name: str,
        role: str,
        index: int,
        resolved: P.Resolved,
        flavor: str,
        key_name: str,
        user_data: str,
        port_id: str = "",
        security_group_id: str = "",
        server_group_id: str = "",
        count: int = 1,
    ) -> str:
        """One POST, no retry: a lost answer may still have created the server, so the
        caller's next listing decides (identity is in the request, so it will be found).

        count > 1 is Nova's multi-create: `name` is the base, Nova names the servers
        <name>-1 ... <name>-<count> and gives them all the same metadata, so no index goes
        in it (the reader takes it from the name); all or none are created."""
        metadata = {P.META_CLUSTER: self.cluster, P.META_ROLE: role}
        if count == 1:
            metadata[P.META_INDEX] = str(index)
        attrs: dict[str, Any] = {
            "name": name,
            "image_id": resolved.image_id,
            "flavor_id": resolved.flavor_ids[flavor],
            "key_name": key_name,
            "user_data": base64.b64encode(wire_user_data(user_data)).decode(),
            "metadata": metadata,
            "tags": self.tags,
        }
        if count > 1:
            attrs["min_count"] = attrs["max_count"] = count
        if port_id:
            attrs["networks"] = [{"port": port_id}]
        else:
            attrs["networks"] = [{"uuid": resolved.network_id}]
            # by id: Nova resolves names too, and a same-named group would be ambiguous
            attrs["security_groups"] = [{"name": security_group_id}]
        if server_group_id:
            attrs["scheduler_hints"] = {"group": server_group_id}
        try:
            return str(self.conn.compute.create_server(**attrs).id)
        except API_ERRORS as exc:
            if is_transient(exc):
                raise
            code = status_of(exc)
            hint = (
                "raise the project's quota or make the cluster smaller"
                if code in (403, 413)
                else None
            )
            what = name if count == 1 else f"{name}-1 ... {name}-{count}"
            raise CloudError(
                f"create server failed: {describe_error(exc)}", resource=what, hint=hint
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
        return str(fip.floating_ip_address)

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
        except API_ERRORS as exc:
            raise CloudError(
                f"delete security group failed: {describe_error(exc)}", resource=name or sg_id
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

