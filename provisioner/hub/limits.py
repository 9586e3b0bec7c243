"""Each hub user's server in a systemd scope of its own, with the user's memory and CPU.

Why scopes made by our own spawner and not jupyterhub-systemdspawner: a scope keeps
LocalProcessSpawner as it is (its process tracking, `cleanup_servers = False`, the
command that sets the umask and the OOM score), needs no package in the node lock, and
holds everything the server starts: kernels, terminals and the PySpark driver JVM. The
hub (root) runs `systemd-run --scope`, which makes the scope and execs `setpriv`, which
becomes the user and execs the server: one pid from the hub's Popen to the server.

All users' scopes sit in one slice capped at what the hub, its proxy and the Spark master
leave (plan/limits.py), so a notebook that runs away meets its own limit, or at worst the
users' cap, and the kernel's OOM killer then picks inside the users' slice; the core runs
in a slice of its own. A master whose PID 1 is not systemd (a container) cannot enforce
any of it: the hub then spawns as before and the step says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from provisioner.errors import RemoteError
from provisioner.hub.shell import MASTER, Shell, Step
from provisioner.inventory.names import CORE_SLICE, USERS_SLICE
from provisioner.plan.limits import UserLimits, user_limits

if TYPE_CHECKING:  # hub/config.py imports this module for the spawner's config lines
    from provisioner.hub.config import HubSettings

MIB = 1024 * 1024

# One line each: systemd as PID 1 or not, MemTotal in MiB, online CPUs.
_PROBE = (
    "if [ -d /run/systemd/system ]; then echo systemd; else echo other; fi; "
    "awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; nproc"
)


@dataclass(frozen=True)
class AppliedLimits:
    limits: UserLimits
    enforced: bool  # systemd is the master's PID 1

    def describe(self) -> str:
        how = ("enforced by systemd" if self.enforced else
               "NOT enforced: the master's PID 1 is not systemd")
        return f"{self.limits.describe()}; {how}"


def read_master(shell: Shell) -> tuple[bool, int, int]:
    """(systemd is PID 1, memory in MiB, CPUs) as the master itself reports them."""
    _, out, _ = shell.run(_PROBE)
    lines = out.split()
    try:
        return lines[0] == "systemd", int(lines[1]), int(lines[2])
    except (IndexError, ValueError):
        raise RemoteError(f"could not read the master's memory and CPUs: {out.strip()!r}",
                          resource=MASTER, step="hub limits") from None


def _slice(description: str, *settings: str) -> str:
    return "\n".join([
        "# Written by sparkstack; rewritten on every run.",
        "[Unit]",
        f"Description={description} of the sparkstack cluster",
        "Before=slices.target",
        "",
        "[Slice]",
        "MemoryAccounting=yes",
        "CPUAccounting=yes",
        *settings,
        "",
    ])


def render_users_slice(limits: UserLimits) -> str:
    return _slice("The hub users' servers, each in a scope",
                  "# All users together: what the hub, its proxy and the Spark master leave.",
                  f"MemoryMax={limits.users_memory_mib * MIB}")


def render_core_slice() -> str:
    return _slice("The hub, its proxy and the Spark master")


def ensure_limits(shell: Shell, settings: HubSettings) -> tuple[Step, AppliedLimits]:
    """The slices, for the limits reckoned from the master's own memory and CPUs; systemd
    reloads when they changed. The spawner's part is in the hub's config."""
    systemd, ram, vcpus = read_master(shell)
    limits = user_limits(ram_mib=ram, vcpus=vcpus, users=len(settings.users),
                         driver_mib=settings.driver_mib, memory_mib=settings.user_memory_mib,
                         cpu=settings.user_cpu)
    changed = False
    for name, text in ((USERS_SLICE, render_users_slice(limits)),
                       (CORE_SLICE, render_core_slice())):
        changed |= shell.put(f"{settings.paths.unit_dir}/{name}", text.encode(), mode=0o644,
                             owner="root", group="root")
    if changed and systemd:
        # A loaded slice takes its new MemoryMax= with the reload.
        shell.run("systemctl daemon-reload")
    applied = AppliedLimits(limits=limits, enforced=systemd)
    return Step("limits", changed, applied.describe()), applied


# The spawner the hub's config defines: LocalProcessSpawner, but each server in a scope.
_SPAWNER = '''\
import os, pwd, secrets
from jupyterhub.spawner import LocalProcessSpawner


class ScopedSpawner(LocalProcessSpawner):
    """Each server in a systemd scope of its own with the user's limits (mem_limit,
    cpu_limit); kernels, terminals and the Spark driver stay in it."""

    def make_preexec_fn(self, name):
        # Still root here: systemd-run makes the scope, then setpriv becomes the user.
        home = pwd.getpwnam(name).pw_dir

        def preexec():
            try:
                os.chdir(home)
            except OSError:
                pass

        return preexec

    async def start(self):
        account = pwd.getpwnam(self.user.name)
        scope = [
            "/usr/bin/systemd-run", "--scope", "--quiet", "--collect",
            "--unit=sparkstack-user-%s-%s" % (account.pw_name, secrets.token_hex(4)),
            "--slice=@SLICE@",
            "--property=MemoryMax=%d" % self.mem_limit,
            "--property=CPUQuota=%d%%" % round(self.cpu_limit * 100),
            "--", "/usr/bin/setpriv", "--reuid=%d" % account.pw_uid,
            "--regid=%d" % account.pw_gid, "--init-groups", "--",
        ]
        command = self.cmd
        self.cmd = scope + list(command)
        try:
            return await super().start()
        finally:
            self.cmd = command


c.JupyterHub.spawner_class = ScopedSpawner  # noqa: F821
'''


def spawner_config_lines(applied: AppliedLimits) -> list[str]:
    """jupyterhub_config.py's lines for the users' limits: the spawner that enforces them
    when systemd can, and the limits themselves (each server also sees them as MEM_LIMIT
    and CPU_LIMIT)."""
    limits = applied.limits
    lines = [
        "# Each user's server and all it starts: memory and CPU (jupyterhub.limits).",
        f"c.Spawner.mem_limit = {limits.memory_mib * MIB}",
        f"c.Spawner.cpu_limit = {limits.cpu!r}",
    ]
    if not applied.enforced:
        return lines + ["# Not enforced: the master's PID 1 is not systemd."]
    return lines + _SPAWNER.replace("@SLICE@", USERS_SLICE).splitlines()
