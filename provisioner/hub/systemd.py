"""systemd on the master: a unit enabled and running, (re)started only when asked."""

from __future__ import annotations

from dataclasses import dataclass, field

from provisioner.hub.shell import Shell, q


@dataclass
class Started:
    """What ensure_running changed ("enabled", "started"/"restarted"), or how the start
    failed: (action, exit status, stderr)."""

    changes: list[str] = field(default_factory=list)
    failed: tuple[str, int, str] | None = None


def ensure_running(shell: Shell, unit: str, *, restart: bool, timeout: float) -> Started:
    """`unit` enabled and active; restarted when `restart` says its inputs changed."""
    quoted = q(unit)
    started = Started()
    if shell.run(f"systemctl is-enabled {quoted}", check=False)[0] != 0:
        shell.run(f"systemctl enable {quoted}")
        started.changes.append("enabled")
    active = shell.run(f"systemctl is-active {quoted}", check=False)[0] == 0
    if active and not restart:
        return started
    action = "restart" if active else "start"
    status, _, err = shell.run(f"systemctl {action} {quoted}", check=False, timeout=timeout)
    if status != 0:
        started.failed = (action, status, err)
    else:
        started.changes.append("restarted" if active else "started")
    return started
