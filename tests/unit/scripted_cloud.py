"""A scripted stand-in of the cloud edge's own interface (ClusterCloud's methods), not of
openstacksdk: it keeps a list of servers, plays a script of what Nova does to each create,
and records every call in order, so the converger and the executor run without a cloud."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from provisioner import plan as P


class LostAnswer(ConnectionError):
    """The POST reached the cloud, the answer did not (a transient failure)."""


@dataclass
class Boot:
    """What happens to one create: statuses the server shows on successive lists (the last
    one stays), an optional fault, and whether the answer to the POST is lost."""

    statuses: tuple[str, ...] = ("BUILD", "ACTIVE")
    fault: str = ""
    lose_answer: bool = False
    create_twice: bool = False  # the cloud made two servers for one POST (a retried POST)


@dataclass
class _Server:
    node: P.Node
    statuses: list[str]
    fault: str = ""  # Nova shows it only while the server is in ERROR


@dataclass
class ScriptedCloud:
    cluster: str = "c1"
    # per server name, one Boot per create attempt in order (default: BUILD then ACTIVE)
    script: dict[str, list[Boot]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    requests: list[tuple[str, int]] = field(default_factory=list)  # (name, count) per POST
    on_create: Callable[[str], None] | None = None
    _servers: list[_Server] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- what tests set up and read
    def add(self, name: str, role: str, index: int, status: str = "ACTIVE",
            stack: str = "") -> P.Node:  # fmt: skip
        node = P.Node(
            name=name, role=role, index=index, id=f"s{next(self._ids)}", status=status,
            created=f"t{next(self._clock):04d}", stack=stack,
        )  # fmt: skip
        self._servers.append(_Server(node, [status]))
        return node

    def posts(self) -> list[str]:
        return [what for kind, what in self.calls if kind == "create_server"]

    def names(self) -> list[str]:
        return sorted(s.node.name for s in self._servers)

    # --- the cloud edge's interface
    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        return isinstance(exc, ConnectionError)

    def list_nodes(self) -> list[P.Node]:
        with self._lock:
            self.calls.append(("list_nodes", ""))
            out = []
            for s in self._servers:
                status = s.statuses.pop(0) if len(s.statuses) > 1 else s.statuses[0]
                fault = s.fault if status == "ERROR" else ""
                s.node = P.Node(**{**s.node.to_json(), "status": status, "fault": fault})
                out.append(s.node)
            return out

    def create_server(
        self, *, name: str, role: str, index: int, count: int = 1, **_: object
    ) -> str:
        """As Nova: count > 1 makes <name>-1 ... <name>-<count> in one request (each name
        follows its own script; calls list each name, `requests` the POSTs)."""
        made = [(name, index)] if count == 1 else [(f"{name}-{i}", i) for i in range(1, count + 1)]
        ids: list[str] = []
        lose = False
        with self._lock:
            self.requests.append((name, count))
            for one, idx in made:
                self.calls.append(("create_server", one))
                attempt = sum(1 for k, n in self.calls if k == "create_server" and n == one) - 1
                boots = self.script.get(one, [])
                boot = boots[attempt] if attempt < len(boots) else Boot()
                lose = lose or boot.lose_answer
                for _copy in range(2 if boot.create_twice else 1):
                    node = P.Node(
                        name=one, role=role, index=idx, id=f"s{next(self._ids)}",
                        status=boot.statuses[0], created=f"t{next(self._clock):04d}",
                        fault=boot.fault,
                    )  # fmt: skip
                    self._servers.append(_Server(node, list(boot.statuses), boot.fault))
                    ids.append(node.id)
        if self.on_create:
            for one, _index in made:
                self.on_create(one)
        if lose:
            raise LostAnswer(f"connection reset while creating {name}")
        return ids[0]

    def delete_server(self, server_id: str, *, name: str = "") -> None:
        with self._lock:
            self.calls.append(("delete_server", name or server_id))
            self._servers = [s for s in self._servers if s.node.id != server_id]


@dataclass
class ScriptedProject(ScriptedCloud):
    """The whole cloud edge for a workflow: ScriptedCloud's servers plus the shared
    resources, resolution and quotas of a roomy project. Every call is recorded in order."""

    fail_on: str = ""  # a method name that raises ValueError (a bug, not a cloud failure)
    refs: dict[str, P.Ref] = field(default_factory=dict)
    attached: str = ""
    rules: dict[str, P.RuleRef] = field(default_factory=dict)  # the group's, by id
    _rule_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _record(self, kind: str, what: str) -> None:
        self.calls.append((kind, what))
        if kind == self.fail_on:
            raise ValueError(f"scripted bug in {kind}")

    def observe(self) -> P.Observed:
        return P.Observed(
            cluster=self.cluster,
            nodes=tuple(self.list_nodes()),
            security_group=self.refs.get("sg"),
            security_group_rules=tuple(self.rules.values()),
            server_group=self.refs.get("group"),
            master_port=self.refs.get("port"),
            attached_ip=self.attached,
            keypair=self.refs.get("keypair"),
        )

    def resolve(self, desired: P.Desired) -> tuple[P.Resolved, list[str]]:
        flavor = P.Flavor(name="m1.tiny", vcpus=1, ram=512, disk=1)
        return (
            P.Resolved(
                image_id="img", image=P.Image(name="debian-12", status="active"),
                flavors={desired.master_flavor: flavor, desired.worker_flavor: flavor},
                flavor_ids={desired.master_flavor: "f1", desired.worker_flavor: "f1"},
                network_id="net", external_network_id="ext",
            ),
            [],
        )  # fmt: skip

    def quotas(self) -> dict[str, P.Quota]:
        return {}

    def find_keypair(self, name: str) -> bool:
        return True

    def create_security_group(
        self,
        *,
        name: str,
        cidrs: Iterable[str],
        ports: Iterable[int],
        world_ports: Iterable[int] = (),
    ) -> str:
        self._record("create_security_group", name)
        self.refs["sg"] = P.Ref("sg-id", name)
        self._add_rules(P.security_group_rules(cidrs, ports, world_ports))
        return "sg-id"

    def _add_rules(self, rules: Iterable[P.IngressRule]) -> None:
        for rule in rules:
            rule_id = f"rule-{next(self._rule_ids)}"
            self.rules[rule_id] = P.RuleRef(rule_id, rule)

    def update_security_group(
        self,
        group_id: str,
        *,
        name: str,
        add: Iterable[P.IngressRule] = (),
        remove: Iterable[str] = (),
    ) -> None:
        add, remove = list(add), list(remove)
        self._record("update_security_group", f"{name} +{len(add)} -{len(remove)}")
        for rule_id in remove:
            self.rules.pop(rule_id, None)
        self._add_rules(add)

    def create_keypair(self, *, name: str, public_key: str) -> None:
        self._record("create_keypair", name)
        self.refs["keypair"] = P.Ref(name, name, public_key)  # as Nova keeps it

    def delete_keypair(self, name: str) -> None:
        self._record("delete_keypair", name)
        self.refs.pop("keypair", None)

    def create_server_group(self, *, name: str, policy: str) -> str:
        self._record("create_server_group", name)
        self.refs["group"] = P.Ref("group-id", name, policy)
        return "group-id"

    def create_master_port(self, *, name: str, **_: object) -> P.Ref:
        self._record("create_master_port", name)
        self.refs["port"] = P.Ref("port-id", name, "10.77.0.10")
        return self.refs["port"]

    def attach_floating_ip(self, *, address: str, **_: object) -> str:
        self._record("attach_floating_ip", address)
        self.attached = address or "10.78.0.20"
        return self.attached

    def delete_floating_ip(self, fip_id: str, *, address: str = "") -> None:
        self._record("delete_floating_ip", address or fip_id)
        self.attached = ""

    def delete_port(self, port_id: str, *, name: str = "") -> None:
        self._record("delete_port", name or port_id)
        self.refs.pop("port", None)

    def delete_security_group(self, sg_id: str, *, name: str = "") -> None:
        self._record("delete_security_group", name or sg_id)
        self.refs.pop("sg", None)
        self.rules.clear()

    def resize_stack(self, name: str, *, workers: int, timeout: float = 900) -> None:
        """As Heat's ResourceGroup would: the highest indices go, the next ones come."""
        self._record("resize_stack", f"{name} {workers}")
        with self._lock:
            members = [s for s in self._servers if s.node.stack == name
                       and s.node.role == P.WORKER]  # fmt: skip
            self._servers = [s for s in self._servers if s not in members
                             or s.node.index <= workers]  # fmt: skip
            have = {s.node.index for s in members}
        for index in range(1, workers + 1):
            if index not in have:
                self.add(f"{self.cluster}-worker-{index}", P.WORKER, index, stack=name)

    def delete_stack(self, name: str, *, timeout: float = 600) -> None:
        """As Heat would: the stack's servers go with it."""
        self._record("delete_stack", name)
        with self._lock:
            self._servers = [s for s in self._servers if s.node.stack != name]

    def delete_server_group(self, group_id: str, *, name: str = "") -> None:
        self._record("delete_server_group", name or group_id)
        self.refs.pop("group", None)

    def console_output(self, server_id: str, *, name: str = "") -> str:
        self._record("console_output", name or server_id)
        return ""  # as Nova before the console has anything

    def nodes_at(self, addresses: list[str], *, role: str) -> list[P.Node]:
        with self._lock:
            self.calls.append(("nodes_at", ",".join(addresses)))
            nodes = [s.node for s in self._servers]
        by_ip = {ip: n for n in nodes for ip in (n.fixed_ip, n.floating_ip) if ip}
        return [
            P.Node(**{**by_ip[a].to_json(), "role": role})
            for a in addresses
            if a in by_ip
        ]


if TYPE_CHECKING:
    from provisioner.workflows.ports import Cloud, Servers

    def _conforms(servers: ScriptedCloud, project: ScriptedProject) -> tuple[Servers, Cloud]:
        """Never run: mypy checks that the stand-ins take every call the workflows make, as
        the real edge does (provisioner/cloud/__init__.py), with the same signatures."""
        return servers, project
