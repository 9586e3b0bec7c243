"""Observing the cluster: its servers, shared resources and look-alikes, as the planner's
Observed, with as few requests as the API allows.

One server list for the whole cluster (Nova's tag filter), never one request per server;
the other resource kinds are listed at once, each in its own thread.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import openstack.exceptions as os_exc

from provisioner import plan as P
from provisioner.cloud.connection import CloudBase
from provisioner.inventory import names

log = logging.getLogger(__name__)

T = TypeVar("T")


class ClusterObserver(CloudBase):
    """The reads `observe` and `status` make: what exists now, and whose it is."""

    @staticmethod
    def _get_or_none(get: Callable[[str], T], key: str) -> T | None:
        try:
            return get(key)
        except os_exc.NotFoundException:
            return None

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
        role = md.get(P.META_ROLE, "")
        try:
            index = int(md.get(P.META_INDEX, "0"))
        except ValueError:
            index = 0
        if P.META_INDEX not in md and role == P.WORKER:  # made in one multi-create POST
            index = names.worker_index_from_name(self.cluster, s.name or "")
        return P.Node(
            name=s.name,
            role=role,
            index=index,
            id=s.id,
            status=s.status or "",
            fixed_ip=fixed,
            floating_ip=floating,
            flavor=flavor.get("original_name") or flavor.get("name") or flavor.get("id", ""),
            created=s.created_at or "",
            fault=fault,
            stack=md.get(P.META_STACK, ""),
        )

    def _servers(self, what: str, *, detail: bool, **query: str) -> list[SimpleNamespace]:
        """A server list as plain records with openstacksdk's attribute names. Read from
        Nova's JSON directly: building SDK objects costs ~9 ms a server, seconds per poll
        for a few hundred workers. Nova pages past osapi_max_limit (1000): follow it."""

        def fetch() -> list[SimpleNamespace]:
            out: list[SimpleNamespace] = []
            url: str | None = "/servers/detail" if detail else "/servers"
            params: dict[str, str] | None = query
            while url:
                resp = self.conn.compute.get(url, params=params, microversion=SERVER_MICROVERSION)
                os_exc.raise_from_response(resp)
                body = resp.json()
                out += [_server_record(d) for d in body.get("servers", [])]
                links = body.get("servers_links") or []
                url = next((lk["href"] for lk in links if lk.get("rel") == "next"), None)
                params = None  # the next link carries the query
            return out

        return self.call(what, fetch)

    def list_nodes(self) -> list[P.Node]:
        """All servers of the cluster: ONE request, filtered by tag on the server side
        (Nova's `tags` filter, microversion >= 2.26) and by metadata here."""
        servers = self._servers("list servers", detail=True, tags=names.cluster_tag(self.cluster))
        return [n for n in (self._node(s) for s in servers) if n is not None]

    def lookalike_servers(
        self, nodes: list[P.Node], named: list[SimpleNamespace] | None = None
    ) -> list[str]:
        """Servers named like the cluster's that are not among its nodes (no tag, or
        another cluster's metadata): one list, of names and ids only (`named`, when the
        caller has listed them already)."""
        pattern = f"^{self.cluster}-(master|worker-[0-9]+)$"  # names are [a-z0-9-]: no escaping
        ours = {n.id for n in nodes}
        servers = named if named is not None else self._named_servers()
        return [
            f"server {s.name} ({s.id})"
            for s in servers
            if s.id not in ours and re.match(pattern, s.name or "")
        ]

    def _named_servers(self) -> list[SimpleNamespace]:
        # Nova matches `name` as a regular expression, but on a Zed bed an alternation
        # matched nothing: ask for the prefix, match the rest here.
        return self._servers("list servers by name", detail=False, name=f"^{self.cluster}-")

    def observe(self) -> P.Observed:
        """The whole cluster: its seven lists asked at once (they are independent)."""
        c = self.cluster
        keypair = names.generated_keypair_name(c)
        reads: dict[str, Callable[[], Any]] = {
            "nodes": self.list_nodes,
            "named": self._named_servers,
            "sgs": lambda: self._list(
                "list security groups",
                lambda: self.conn.network.security_groups(name=names.security_group_name(c)),
            ),
            "ports": lambda: self._list(
                "list ports", lambda: self.conn.network.ports(name=names.master_port_name(c))
            ),
            "groups": lambda: self._list(
                "list server groups", lambda: self.conn.compute.server_groups()
            ),
            "fips": lambda: self._list("list floating IPs", lambda: self.conn.network.ips()),
            # one GET: find_keypair would list every keypair after a 404
            "keypair": lambda: self.call(
                "read keypair",
                lambda: self._get_or_none(self.conn.compute.get_keypair, keypair),
                resource=keypair,
            ),
        }
        got = read_at_once(reads)
        nodes = got["nodes"]
        lookalikes = self.lookalike_servers(nodes, got["named"])
        named_sgs = got["sgs"]
        sgs = [s for s in named_sgs if self._ours(s)]
        named_ports = got["ports"]
        ports = [p for p in named_ports if self._ours(p)]
        lookalikes += [f"security group {s.name} ({s.id})" for s in named_sgs if s not in sgs]
        lookalikes += [f"port {p.name} ({p.id})" for p in named_ports if p not in ports]
        # A server group can carry no identity; one with a member that is a live server
        # of someone else's is someone else's.
        ids = {n.id for n in nodes}
        named_groups = [g for g in got["groups"] if g.name == names.server_group_name(c)]
        groups = [g for g in named_groups if not self._foreign_member(g, ids)]
        lookalikes += [
            f"server group {g.name} ({g.id}), whose members are other servers"
            for g in named_groups
            if g not in groups
        ]
        port = ports[0] if ports else None
        fips = got["fips"]
        ours = [f for f in fips if self._ours(f)]
        attached = ""
        if port is not None:
            attached = next((f.floating_ip_address for f in fips if f.port_id == port.id), "")
        kp = got["keypair"]
        rules, foreign = self._ingress_rules(sgs[0]) if sgs else ((), ())
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
            security_group_rules=rules,
            foreign_rules=foreign,
            server_group=P.Ref(groups[0].id, groups[0].name, groups[0].policy or "")
            if groups
            else None,
            master_port=P.Ref(port.id, port.name, port_ip(port)) if port else None,
            floating_ip=P.Ref(ours[0].id, "", ours[0].floating_ip_address) if ours else None,
            attached_ip=attached,
            keypair=P.Ref(kp.name, kp.name, kp.public_key or "") if kp is not None else None,
            lookalikes=tuple(lookalikes),
        )

    def _foreign_member(self, group: Any, ours: set[str]) -> str:
        """The first member of `group` that is a live server not of the cluster ("" if
        none). Members missing from the cluster's list are asked for one by one: Nova
        keeps listing a worker deleted while it was still being scheduled until its
        conductor has finished with it (seconds, more on a busy cloud), and such a
        member must not turn the cluster's own group into a stranger's."""
        for sid in group.member_ids or []:
            sid = str(sid)
            if sid in ours:
                continue
            server = self.call(
                "read a server group member",
                functools.partial(self._get_or_none, self.conn.compute.get_server, sid),
                resource=sid,
            )
            if server is None or (server.status or "").upper() in GONE:
                continue
            if (server.metadata or {}).get(P.META_CLUSTER) == self.cluster:
                continue  # the cluster's, listed a moment after the group was read
            return sid
        return ""

    def _ingress_rules(self, sg: Any) -> tuple[tuple[P.RuleRef, ...], tuple[str, ...]]:
        """The group's ingress rules, read from the group's own record (Neutron lists them
        in it: no request more): the ones `up` manages, and how the others read."""
        refs: list[P.RuleRef] = []
        foreign: list[str] = []
        for r in sg.security_group_rules or []:
            if r.get("direction") != "ingress":
                continue  # Neutron's default egress rules
            rule, ours = _as_ingress_rule(r, sg.id), r.get("description") == self.description
            if rule is not None and (ours or rule.from_own_group):
                refs.append(P.RuleRef(r["id"], rule))
                continue
            if rule is not None:
                refs.append(P.RuleRef(r["id"], rule, ours=False))
            foreign.append(P.describe_rule(rule) if rule is not None else _rule_text(r))
        return tuple(refs), tuple(sorted(foreign))  # Neutron's order varies

    def nodes_at(self, addresses: list[str], *, role: str) -> list[P.Node]:
        """Servers of the project with one of these fixed or floating addresses, in the
        order given (servers launched by hand carry no cluster identity: found by IP)."""
        wanted = set(addresses)
        if not wanted:
            return []
        servers = self._list("list servers", lambda: self.conn.compute.servers(details=True))
        found: dict[str, P.Node] = {}
        for s in servers:
            addrs = [a.get("addr", "") for net in (s.addresses or {}).values() for a in net]
            hit = next((a for a in addresses if a in addrs), None)
            if hit is None:
                continue
            fixed = next(
                (
                    a["addr"]
                    for net in s.addresses.values()
                    for a in net
                    if a.get("OS-EXT-IPS:type") != "floating" and "." in a["addr"]
                ),
                "",
            )
            floating = next((a["addr"] for net in s.addresses.values() for a in net
                             if a.get("OS-EXT-IPS:type") == "floating"), "")  # fmt: skip
            found[hit] = P.Node(
                name=s.name, role=role, index=0, id=s.id, status=s.status or "",
                fixed_ip=fixed, floating_ip=floating, created=s.created_at or "",
            )  # fmt: skip
        nodes = [found[a] for a in addresses if a in found]
        if role == P.WORKER:  # indices by the order the master lists them
            nodes = [dataclasses.replace(n, index=i) for i, n in enumerate(nodes, 1)]
        return nodes


def read_at_once(reads: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Independent reads, each in a daemon thread; the first error is raised once all
    ended. Daemon threads, not a pool: a read changes nothing, so Ctrl-C need not wait for
    a cloud that never answers (the interpreter joins a pool's threads at exit)."""
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def one(key: str, read: Callable[[], Any]) -> None:
        try:
            results[key] = read()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=item, daemon=True, name=f"read-{item[0]}")
        for item in reads.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# 2.26: the `tags` filter; 2.47: the flavor's name in a server's record
SERVER_MICROVERSION = "2.47"
# a server in these states is on its way out, whoever made it
GONE = frozenset({"DELETED", "SOFT_DELETED"})


def _server_record(d: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(
        id=d.get("id", ""),
        name=d.get("name", ""),
        status=d.get("status", ""),
        metadata=d.get("metadata") or {},
        addresses=d.get("addresses") or {},
        flavor=d.get("flavor") or {},
        fault=d.get("fault"),
        created_at=d.get("created", ""),
        tags=d.get("tags") or [],
    )


def _as_ingress_rule(r: dict[str, Any], group_id: str) -> P.IngressRule | None:
    """The rule as the planner's IngressRule, if it has a shape sparkstack makes."""
    eth, low, high = r.get("ethertype", ""), r.get("port_range_min"), r.get("port_range_max")
    if r.get("remote_group_id") == group_id and not r.get("protocol") and low is None:
        return P.IngressRule(eth)
    prefix = r.get("remote_ip_prefix")
    if r.get("protocol") == "tcp" and low is not None and low == high and prefix:
        return P.IngressRule(eth, int(low), P.normal_cidr(prefix))
    return None


def _rule_text(r: dict[str, Any]) -> str:
    """Any other ingress rule, in a line: what, which ports, from where."""
    low, high = r.get("port_range_min"), r.get("port_range_max")
    ports = "" if low is None else f" {low}" if low == high else f" {low}-{high}"
    source = r.get("remote_ip_prefix") or (
        f"group {r['remote_group_id']}" if r.get("remote_group_id") else "anywhere"
    )
    return f"{r.get('protocol') or 'any protocol'}{ports} from {source} ({r.get('ethertype')})"


def port_ip(port: Any) -> str:
    for ip in port.fixed_ips or []:
        addr: str = ip.get("ip_address", "")
        if addr and ":" not in addr:
            return addr
    return ""
