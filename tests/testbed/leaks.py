"""The leak audit: everything a test could leave behind, before and after it.

A cluster tool that leaves one security-group rule, one namespace host or one private key
behind is a tool that leaks, so every cloud and e2e test is audited (the `clean_project`
fixture calls this module; tests never do by hand): every resource of the test project
(servers, images such as server snapshots, ports, floating IPs, security groups and
their rules, server groups, the test user's keypairs), the hosts bed's namespace hosts
(stopped ones too: a stopped host whose server was deleted is a leaked disk), and the
files under each sparkstack config directory (generated keys, credentials.toml, the
pinned known_hosts files).

`take` records the three, `leaked` names every difference, `clean` removes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.testbed import bed
from tests.testbed.hosts import hosts

log = logging.getLogger(__name__)

# A host goes some seconds after its server (the hypervisor polls Nova), so an audit
# right after a `down` waits this long for the hosts of deleted servers to go too.
HOST_GRACE = 60.0


@dataclass
class Holdings:
    """What exists at one moment: cloud resources, namespace hosts, local files."""

    project: bed.ProjectSnapshot
    hosts: dict[str, str] = field(default_factory=dict)  # server id -> host name
    files: set[Path] = field(default_factory=set)


def local_files(config_dirs: Iterable[Path]) -> set[Path]:
    """Every file under the given sparkstack config directories (<XDG_CONFIG_HOME>/sparkstack)."""
    return {p for d in config_dirs if d.is_dir() for p in d.rglob("*") if not p.is_dir()}


def host_records(hosts_state: Path | None = None) -> dict[str, str]:
    return {h.server_id: h.name for h in hosts.list_hosts(state_dir=hosts_state)}


def take(admin, *, config_dirs: Iterable[Path], hosts_state: Path | None = None) -> Holdings:
    return Holdings(
        project=bed.snapshot_project(admin),
        hosts=host_records(hosts_state),
        files=local_files(config_dirs),
    )


def _new_hosts(before: Holdings, hosts_state: Path | None, wait: float) -> dict[str, str]:
    deadline = time.monotonic() + wait
    while True:
        new = {k: v for k, v in host_records(hosts_state).items() if k not in before.hosts}
        if not new or time.monotonic() >= deadline:
            return new
        time.sleep(0.5)


def leaked(
    admin,
    before: Holdings,
    *,
    config_dirs: Iterable[Path],
    hosts_state: Path | None = None,
    host_grace: float = HOST_GRACE,
) -> list[str]:
    """One line per thing that exists now and did not in `before`, naming it."""
    now = bed.snapshot_project(admin)
    lines = bed.describe_new(now, before.project)
    # Only a server that is gone should take its host with it: wait for those alone.
    grace = 0.0 if now.new_since(before.project).get("server") else host_grace
    lines += [
        f"namespace host {name} (server {sid})"
        for sid, name in sorted(_new_hosts(before, hosts_state, grace).items())
    ]
    lines += [f"local file {p}" for p in sorted(local_files(config_dirs) - before.files)]
    return lines


def clean(
    admin,
    before: Holdings,
    *,
    config_dirs: Iterable[Path],
    hosts_state: Path | None = None,
    host_grace: float = HOST_GRACE,
) -> None:
    """Remove whatever appeared since `before`: cloud resources, hosts, local files."""
    bed.cleanup_project(admin, keep=before.project)
    # The hypervisor removes the hosts of deleted servers itself; what it leaves, we do.
    for sid in _new_hosts(before, hosts_state, host_grace):
        hosts.kill_host(sid, state_dir=hosts_state)
    for path in local_files(config_dirs) - before.files:
        path.unlink(missing_ok=True)
