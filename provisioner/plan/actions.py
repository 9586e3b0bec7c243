"""The actions a plan is made of. Each one says what it does in a line (the dry run) and
in JSON; the executor in provisioner.workflows runs them in the order the plan lists them.

Actions whose class names the same non-empty ``together`` run as one batch when they stand
next to each other in a plan: the prerequisites (security group then master port, keypair,
server group) at once; servers created (or deleted) concurrently, the batch ending when the
cloud shows them all ACTIVE (or gone), with the floating IP attached while they boot. On
deletion, whatever Nova and Neutron let go while servers still exist (floating IP, master
port, server group, keypair) goes beside them; only the security group waits for the
servers' ports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from provisioner.plan.rules import IngressRule, RuleRef, describe_rule


@dataclass(frozen=True)
class Action:
    kind: ClassVar[str] = "action"
    together: ClassVar[str] = ""  # a batch name: neighbours with the same one run at once

    def describe(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["description"] = self.describe()
        return out


PREREQUISITES = "prerequisites"
CREATE_SERVERS = "create servers"
DELETE_SERVERS = "delete servers"
CLEAN_UP = "clean up"  # what is left once the servers are gone


@dataclass(frozen=True)
class CreateSecurityGroup(Action):
    kind: ClassVar[str] = "create_security_group"
    together: ClassVar[str] = PREREQUISITES
    name: str
    allowed_cidrs: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    # Open to 0.0.0.0/0 and ::/0 whatever allowed_cidrs says (80 for ACME validation).
    world_ports: tuple[int, ...] = ()

    def rule_count(self) -> int:
        # all traffic from the group itself (IPv4 + IPv6), one rule per port and CIDR, and
        # an IPv4 and an IPv6 rule per world-open port
        return 2 + len(self.allowed_cidrs) * len(self.ports) + 2 * len(self.world_ports)

    def describe(self) -> str:
        outside = (
            f"tcp {','.join(map(str, self.ports))} from {', '.join(self.allowed_cidrs)}"
            if self.allowed_cidrs
            else "nothing from outside"
        )
        if self.world_ports:
            outside += f", tcp {','.join(map(str, self.world_ports))} from anywhere"
        return f"create security group {self.name}: all traffic between nodes, {outside}"


@dataclass(frozen=True)
class UpdateSecurityGroup(Action):
    """Bring an existing group's rules to what the inventory says now: its rules that are
    no longer wanted go first (what closes, closes before anything opens), then the
    missing ones are added."""

    kind: ClassVar[str] = "update_security_group"
    together: ClassVar[str] = PREREQUISITES
    name: str
    id: str
    add: tuple[IngressRule, ...] = ()
    remove: tuple[RuleRef, ...] = ()

    def rule_count(self) -> int:
        """Rules the project holds afterwards beyond today's (quota)."""
        return max(0, len(self.add) - len(self.remove))

    def describe(self) -> str:
        changes = [f"close {describe_rule(r.rule)}" for r in self.remove]
        changes += [f"open {describe_rule(r)}" for r in self.add]
        return f"update security group {self.name}: " + "; ".join(changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.kind,
            "name": self.name,
            "id": self.id,
            "add": [dataclasses.asdict(r) for r in self.add],
            "remove": [{"id": r.id, **dataclasses.asdict(r.rule)} for r in self.remove],
            "description": self.describe(),
        }


@dataclass(frozen=True)
class CreateKeypair(Action):
    kind: ClassVar[str] = "create_keypair"
    together: ClassVar[str] = PREREQUISITES
    name: str
    source: str  # generate | import

    def describe(self) -> str:
        how = (
            "from a key generated for this cluster"
            if self.source == "generate"
            else ("from the public key of ssh.private_key")
        )
        return f"create keypair {self.name} {how}"


@dataclass(frozen=True)
class CreateServerGroup(Action):
    kind: ClassVar[str] = "create_server_group"
    together: ClassVar[str] = PREREQUISITES
    name: str
    policy: str

    def describe(self) -> str:
        return f"create server group {self.name} ({self.policy})"


@dataclass(frozen=True)
class CreateMasterPort(Action):
    kind: ClassVar[str] = "create_master_port"
    together: ClassVar[str] = PREREQUISITES  # after the security group, in the same batch
    name: str
    network: str

    def describe(self) -> str:
        return f"create port {self.name} on network {self.network} (fixes the master's IP)"


@dataclass(frozen=True)
class CreateServer(Action):
    kind: ClassVar[str] = "create_server"
    together: ClassVar[str] = CREATE_SERVERS
    name: str
    role: str
    index: int
    flavor: str

    def describe(self) -> str:
        return f"create server {self.name} ({self.role}, {self.flavor})"


@dataclass(frozen=True)
class Decommission(Action):
    kind: ClassVar[str] = "decommission"
    names: tuple[str, ...]

    def describe(self) -> str:
        return f"decommission {', '.join(self.names)} gracefully"


@dataclass(frozen=True)
class DeleteServer(Action):
    kind: ClassVar[str] = "delete_server"
    together: ClassVar[str] = DELETE_SERVERS
    name: str
    id: str
    reason: str = ""

    def describe(self) -> str:
        return f"delete server {self.name}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class AttachFloatingIP(Action):
    kind: ClassVar[str] = "attach_floating_ip"
    together: ClassVar[str] = CREATE_SERVERS
    address: str  # "" = allocate a new one from the pool
    pool: str

    def describe(self) -> str:
        if self.address:
            return f"attach existing floating IP {self.address} to the master"
        return f"allocate a floating IP from {self.pool} and attach it to the master"


@dataclass(frozen=True)
class DeleteFloatingIP(Action):
    kind: ClassVar[str] = "delete_floating_ip"
    together: ClassVar[str] = DELETE_SERVERS
    address: str
    id: str

    def describe(self) -> str:
        return f"release floating IP {self.address}"


@dataclass(frozen=True)
class _DeleteNamed(Action):
    """Deleting one named resource found by its id: only the noun differs between kinds."""

    noun: ClassVar[str] = ""
    together: ClassVar[str] = CLEAN_UP
    name: str
    id: str

    def describe(self) -> str:
        return f"delete {self.noun} {self.name}"


@dataclass(frozen=True)
class DeletePort(_DeleteNamed):
    kind: ClassVar[str] = "delete_port"
    noun: ClassVar[str] = "port"
    # Neutron deletes a port a server still has (Nova then forgets the interface), and
    # Nova's own delete of a server tolerates its pre-created port being gone already.
    together: ClassVar[str] = DELETE_SERVERS


@dataclass(frozen=True)
class DeleteSecurityGroup(_DeleteNamed):
    kind: ClassVar[str] = "delete_security_group"
    noun: ClassVar[str] = "security group"


@dataclass(frozen=True)
class DeleteServerGroup(_DeleteNamed):
    kind: ClassVar[str] = "delete_server_group"
    noun: ClassVar[str] = "server group"
    together: ClassVar[str] = DELETE_SERVERS  # Nova deletes a group that still has members


@dataclass(frozen=True)
class DeleteKeypair(Action):
    kind: ClassVar[str] = "delete_keypair"
    together: ClassVar[str] = DELETE_SERVERS  # a server keeps a copy of its key
    name: str

    def describe(self) -> str:
        return f"delete keypair {self.name}"

