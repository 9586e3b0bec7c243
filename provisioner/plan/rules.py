"""The cluster's security group rules, decided once for every way a cluster is made.

`up` sends these to Neutron one by one (provisioner.cloud.write) and `render --heat` writes
them into a template (provisioner.heat): the same list, so a stack's group and an
`up`-made group cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
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
