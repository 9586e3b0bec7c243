"""The cluster's security group rules, decided once for every way a cluster is made.

`up` sends these to Neutron (provisioner.cloud.write) and `render --heat` writes them into a
template (provisioner.heat): the same list, so a stack's group and an `up`-made group cannot
drift apart. A later `up` compares the list with the group's rules and adds what is missing
and deletes what it made that is no longer wanted (`rule_changes`), so narrowing
`allowed_cidrs` or leaving ACME closes what was open.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# HTTP-01 validation comes from anywhere (see desired_from_inventory), over both families.
WORLD_CIDRS = ("0.0.0.0/0", "::/0")
ETHERTYPES = ("IPv4", "IPv6")


@dataclass(frozen=True)
class IngressRule:
    """One ingress rule. Without a port: all traffic from the group's own members (Spark's
    executors connect back to drivers on ports chosen at run time)."""

    ethertype: str
    port: int | None = None
    cidr: str = ""

    @property
    def from_own_group(self) -> bool:
        return self.port is None


def ethertype(cidr: str) -> str:
    return "IPv6" if ":" in cidr else "IPv4"


def own_group_rules() -> list[IngressRule]:
    return [IngressRule(eth) for eth in ETHERTYPES]


def access_rules(
    cidrs: Iterable[str], ports: Iterable[int], world_ports: Iterable[int] = ()
) -> list[IngressRule]:
    """`ports` open to `cidrs`, `world_ports` to every address; each (address, port) once,
    because Neutron answers 409 to a duplicate rule (a world-open port that allowed_cidrs
    also opens to 0.0.0.0/0)."""
    ports = tuple(ports)
    pairs = [(cidr, port) for cidr in cidrs for port in ports]
    pairs += [(cidr, port) for port in world_ports for cidr in WORLD_CIDRS]
    return [IngressRule(ethertype(cidr), port, cidr) for cidr, port in dict.fromkeys(pairs)]


def security_group_rules(
    cidrs: Iterable[str], ports: Iterable[int], world_ports: Iterable[int] = ()
) -> list[IngressRule]:
    return own_group_rules() + access_rules(cidrs, ports, world_ports)


def normal_cidr(cidr: str) -> str:
    """One spelling per range (Neutron may hand back "::0/0" or a compressed address)."""
    return str(ipaddress.ip_network(cidr, strict=False))


def describe_rule(rule: IngressRule) -> str:
    if rule.from_own_group:
        return f"all {rule.ethertype} traffic between nodes"
    where = f"anywhere ({rule.cidr})" if normal_cidr(rule.cidr) in WORLD_CIDRS else rule.cidr
    return f"tcp {rule.port} from {where}"


@dataclass(frozen=True)
class RuleRef:
    """An ingress rule the cloud holds. `ours`: made by sparkstack (its description, or the
    group-to-itself shape only sparkstack adds), so `up` may delete it; a rule someone
    added by hand is never deleted."""

    id: str
    rule: IngressRule
    ours: bool = True


def rule_changes(
    wanted: Sequence[IngressRule], held: Iterable[RuleRef]
) -> tuple[list[IngressRule], list[RuleRef]]:
    """What to add (wanted and held by no rule, ours or not: Neutron refuses a duplicate
    whatever its description) and what to delete (our rules no longer wanted)."""
    held = list(held)
    present = {r.rule for r in held}
    add = [r for r in dict.fromkeys(wanted) if r not in present]
    remove = [r for r in held if r.ours and r.rule not in wanted]
    # in a stable order for the dry run (Neutron lists rules in no fixed order)
    remove.sort(key=lambda r: (r.rule.ethertype, r.rule.port or 0, r.rule.cidr))
    return add, remove
