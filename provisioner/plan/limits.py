"""Pure: what each hub user's server, and everything it starts, may use on the master.

One reckoning serves the dry run (from the master's flavor) and the hub (from the memory
and CPUs the master itself reports), so both say the same for the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.inventory.limits import NOTEBOOK_EXTRA_MIB
from provisioner.plan.model import Flavor

# The master's memory besides the notebooks: the OS, the hub and its proxy, and the Spark
# master daemon (a 1 GiB heap by Spark's default).
MASTER_CORE_MIB = 1536
# "auto" shares among the listed users; single sign-on by groups alone names nobody, and
# is reckoned as this many.
UNNAMED_USERS = 2


@dataclass(frozen=True)
class UserLimits:
    memory_mib: int  # each user's server and all it starts
    cpu: float  # cores, each user
    users_memory_mib: int  # all users' servers together: what the core leaves

    def describe(self) -> str:
        cores = f"{self.cpu:g} CPU" + ("" if self.cpu == 1 else "s")
        return (f"{self.memory_mib} MiB and {cores} per user, {self.users_memory_mib} MiB "
                "for all users together")


def user_limits(
    *, ram_mib: int, vcpus: int, users: int, driver_mib: int,
    memory_mib: int | None = None, cpu: float | None = None,
) -> UserLimits:
    """The limits for a master of `ram_mib` and `vcpus`; `memory_mib` and `cpu` are the
    inventory's own (None: "auto").

    "auto" memory shares what the core leaves evenly, but never below one notebook (its
    driver plus NOTEBOOK_EXTRA_MIB): fewer users then fit at once, which the capacity
    note says. "auto" CPU shares the vCPUs, at least one each, and keeps one for the
    core when there are two or more. All users together never get the core's share, so a
    notebook that runs away is killed inside the users' slice, not the hub or Spark.
    """
    notebook = driver_mib + NOTEBOOK_EXTRA_MIB
    room = max(ram_mib - MASTER_CORE_MIB, notebook)
    count = max(users, 1) if users else UNNAMED_USERS
    each = memory_mib if memory_mib is not None else max(notebook, room // count)
    if cpu is None:
        spare = vcpus - 1 if vcpus > 1 else max(vcpus, 1)
        cpu = round(max(1.0, min(float(spare), vcpus / count)), 2)
    return UserLimits(memory_mib=each, cpu=cpu, users_memory_mib=max(room, each))


def limits_shortfalls(
    master: Flavor | None, *, memory_mib: int | None, cpu: float | None
) -> list[str]:
    """Limits the inventory names that the master's flavor cannot give (refused before
    anything is created)."""
    if master is None:
        return []
    out: list[str] = []
    room = master.ram - MASTER_CORE_MIB
    if memory_mib is not None and memory_mib > room:
        out.append(
            f"jupyterhub.limits.memory ({memory_mib} MiB per user) is more than master.flavor "
            f"{master.name} has for notebooks: {master.ram} MiB less {MASTER_CORE_MIB} for "
            f"the hub, its proxy and the Spark master = {max(room, 0)} MiB; lower it (or "
            'use "auto") or pick a bigger master.flavor'
        )
    if cpu is not None and cpu > master.vcpus:
        out.append(
            f"jupyterhub.limits.cpu ({cpu:g} per user) is more than master.flavor "
            f"{master.name} has: {master.vcpus} vCPUs; lower it or use \"auto\""
        )
    return out


def limits_note(master: Flavor | None, *, users: int, driver_mib: int,
                memory_mib: int | None, cpu: float | None) -> str | None:
    """What the dry run and `up` say of the users' limits, with where they come from."""
    if master is None:
        return None
    limits = user_limits(ram_mib=master.ram, vcpus=master.vcpus, users=users,
                         driver_mib=driver_mib, memory_mib=memory_mib, cpu=cpu)
    auto = [key for key, value in (("memory", memory_mib), ("cpu", cpu)) if value is None]
    source = ""
    if auto:
        counted = f"{users} hub users" if users else f"{UNNAMED_USERS} users (none listed)"
        vcpus = f"{master.vcpus} vCPU" + ("" if master.vcpus == 1 else "s")
        source = (f"; {' and '.join(auto)} \"auto\" from master.flavor {master.name} "
                  f"({master.ram} MiB, {vcpus}) and {counted}, reckoned again from the "
                  "master's own memory when the hub is installed")
    return (f"jupyterhub.limits: {limits.describe()}, enforced by systemd on the master for "
            f"each user's server and all it starts (kernels, the Spark driver){source}")
