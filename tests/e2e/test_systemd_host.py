"""A namespace host whose PID 1 is systemd enforces the resource limits of its units.

No OpenStack: the host boots the test rootfs with the systemd layer on top
(rootfs.ensure_systemd_layer) and an empty cloud-config; commands run as root in its
namespaces (hosts.enter). Its systemd must make its slices inside the host's own cgroups,
never at the machine's cgroup roots, and killing the host must leave nothing behind.
"""

from __future__ import annotations

import logging
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.testbed.fixtures import bed_required, cannot_run_reason
from tests.testbed.hosts import hosts, rootfs

pytestmark = [pytest.mark.hosts, pytest.mark.slow]
log = logging.getLogger(__name__)

CANDIDATE_IPS = [f"10.77.0.{n}" for n in range(230, 240)]
# What systemd makes at the top of its cgroup tree: seen at a machine's root, a systemd
# escaped its host.
SYSTEMD_TOPS = ("init.scope", "system.slice", "user.slice")
HOG = "b = bytearray(256 * 2**20)"  # 256 MiB, touched
# Spins for one second of wall time and prints the CPU seconds it got.
SPIN = ("import time; end = time.time() + 1; "
        "exec('while time.time() < end: pass'); print(time.process_time())")


def _skip_or_fail(reason: str) -> None:
    if bed_required():
        pytest.fail(f"systemd host test is required here but {reason}", pytrace=False)
    pytest.skip(reason)


def _systemd_tops(dirs: list[Path]) -> set[Path]:
    return {d / top for d in dirs for top in SYSTEMD_TOPS if (d / top).is_dir()}


def _no_controllers(host: hosts.Host) -> str | None:
    """Why the host's systemd could not enforce memory and CPU limits: its cgroups lack
    the controllers (a cgroup v1 hierarchy each, or in cgroup2's cgroup.controllers)."""
    files, v2 = set(), set()
    for cg in map(Path, host.cgroups):
        files |= {f.name for f in cg.iterdir()}
        if (cg / "cgroup.controllers").exists():
            v2 |= set((cg / "cgroup.controllers").read_text().split())
    missing = [name for name, v1_file in (("memory", "memory.limit_in_bytes"),
                                          ("cpu", "cpu.cfs_quota_us"))
               if v1_file not in files and name not in v2]
    return f"the host's cgroups have no {' or '.join(missing)} controller" if missing else None


def _run(host: hosts.Host, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = hosts.enter(host, "/bin/sh", "-c", command, timeout=timeout)
    log.info("$ %s -> %d\n%s%s", command, proc.returncode, proc.stdout.decode(),
             proc.stderr.decode())
    return proc


def _unit(host: hosts.Host, unit: str) -> dict[str, str]:
    out = _run(host, f"systemctl show -p Result,ExecMainCode,ExecMainStatus {unit}").stdout
    return dict(line.split("=", 1) for line in out.decode().split())


def test_systemd_host_enforces_memory_and_cpu_limits(record_property):
    reason = cannot_run_reason()
    if reason:
        _skip_or_fail(reason)
    base = rootfs.rootfs_path()
    if not (base / "etc/os-release").exists():
        _skip_or_fail("no test rootfs: run `python3 -m tests.testbed.hosts.hostbed build`")
    layer = rootfs.ensure_systemd_layer(base)
    hosts.ensure_bridge()
    # The machine's cgroup roots, and the cgroups this process is in (the host's go below).
    hierarchies = hosts.cgroup_hierarchies()
    outside = [hosts.CGROUP_ROOT / rel for rel, _, _ in hierarchies]
    outside += [mine for _, _, mine in hierarchies]
    tops_before = _systemd_tops(outside)

    state_dir = hosts.default_state_dir().parent / "e2e-systemd"
    server_id = f"{uuid.uuid4().hex[:8]}-e2e-systemd"
    start = time.monotonic()
    host = hosts.boot_host("e2e-systemd", server_id, fixed_ip=hosts.free_ip(CANDIDATE_IPS),
                           user_data="#cloud-config\n", public_keys=[],
                           rootfs=[layer, base], state_dir=state_dir, init="systemd")
    try:
        reason = _no_controllers(host)
        if reason:
            _skip_or_fail(reason)
        state = hosts.wait_systemd_ready(host, timeout=60)
        ready = time.monotonic() - start
        record_property("boot_to_ready_s", round(ready, 1))
        log.info("systemd host %s: %s after %.1f s", server_id, state, ready)
        assert state in ("running", "degraded"), state
        assert host.init == "systemd" and hosts.get_host(server_id, state_dir=state_dir).init \
            == "systemd"
        assert _run(host, "cat /proc/1/comm").stdout.decode().strip() == "systemd"

        # systemd's tree is inside the host's cgroups, nowhere else.
        assert _systemd_tops(outside) == tops_before
        pid1 = Path(f"/proc/{hosts.init_pid(host)}/cgroup").read_text().splitlines()
        assert any(line.endswith(f"/{hosts.cgroup_name(server_id)}/init.scope")
                   for line in pid1), pid1

        # cgroup v1 cannot tell systemd of an OOM kill (Result=oom-kill on v2): the
        # kernel's SIGKILL inside the unit's memory cgroup is what shows.
        tight = _run(host, "systemd-run --wait --quiet --unit=e2e-hog-64m -p MemoryMax=64M "
                     f"/usr/bin/python3 -c '{HOG}'")
        assert tight.returncode != 0
        shown = _unit(host, "e2e-hog-64m.service")
        assert shown["Result"] in ("oom-kill", "signal"), shown
        assert shown["ExecMainStatus"] == "9", shown  # SIGKILL
        roomy = _run(host, "systemd-run --wait --quiet --unit=e2e-hog-512m -p MemoryMax=512M "
                     f"/usr/bin/python3 -c '{HOG}'")
        assert roomy.returncode == 0, roomy.stderr.decode()

        assert _run(host, "systemd-run --quiet --scope -p CPUQuota=50% true").returncode == 0
        # Throttled to half a CPU: about 0.5 s of CPU in a second (a whole one without).
        scope = _run(host, f'systemd-run --quiet --scope -p CPUQuota=50% python3 -c "{SPIN}"')
        assert scope.returncode == 0, scope.stderr.decode()
        assert 0.2 < float(scope.stdout) < 0.7, scope.stdout
    finally:
        hosts.kill_host(server_id, state_dir=state_dir)

    assert not [cg for cg in host.cgroups if Path(cg).exists()]
    assert str(host.dir) not in Path("/proc/self/mountinfo").read_text()
    assert host.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                            text=True, check=True).stdout.split()
    assert not host.dir.exists()
    assert _systemd_tops(outside) == tops_before
