"""Per-user limits enforced by systemd, on a host whose PID 1 is systemd.

One namespace host boots the real systemd (tests/testbed/hosts: the systemd layer, a
cgroup namespace of its own). On it: a Spark master (in the core's slice, as the master's
unit puts it) and a worker, both as the spark user, and the hub installed by the same
steps `up` runs, for alice and bob with a memory limit. alice's notebook then allocates
past her limit: her kernel alone is killed, by the OOM killer of her own scope; the hub
answers, the Spark master runs, and bob's kernel, whose driver JVM is in his scope, still
runs a job. The servers also outlive a restart of the hub.
"""

from __future__ import annotations

import secrets
import threading
import uuid

import pytest

from provisioner.errors import RemoteError
from provisioner.hub.limits import MIB
from provisioner.hubapi import HubApi
from provisioner.inventory.names import CORE_SLICE, USERS_SLICE
from tests.testbed.hosts import hosts, rootfs

from .conftest import wait_for
from .test_hub import (
    HostShell,
    PinnedClient,
    _inventory,
    _run,
    host_images,
    in_host_mounts,
    spark_unpack,
)

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

USERS = ("alice", "bob")
CANDIDATE_IPS = [f"10.77.0.{n}" for n in range(220, 230)]
# Per user: one notebook of the bed's inventory (driver 512m + 512 MiB) and some room.
LIMIT = "1536m"
LIMIT_BYTES = 1536 * MIB
SPARK = "/opt/spark"
JOB = "print(sc.parallelize(range(100000), 8).map(lambda x: x * x).sum())"
# Past the limit, and written to, so every page is really taken.
HOG = "hog = b'\\x01' * (2 * 1024 ** 3)\nprint(len(hog))"


@pytest.fixture
def systemd_host():
    base, tarball = host_images()
    layer = rootfs.ensure_systemd_layer(base)
    hosts.ensure_bridge()
    state_dir = hosts.default_state_dir().parent / "e2e-limits"
    server_id = f"{uuid.uuid4().hex[:8]}-e2e-limits"
    host = hosts.boot_host("e2e-limits", server_id, fixed_ip=hosts.free_ip(CANDIDATE_IPS),
                           user_data="#cloud-config\n", public_keys=[], rootfs=[layer, base],
                           state_dir=state_dir, init="systemd")
    try:
        hosts.wait_systemd_ready(host, timeout=120)
        shell = HostShell(host)
        # Spark as the master's bootstrap would leave it, from the bed's tarball.
        in_host_mounts(host, spark_unpack(host, tarball))
        yield host, shell
    finally:
        hosts.kill_host(server_id, state_dir=state_dir)


def _start_spark(shell: HostShell, ip: str) -> None:
    """The Spark master in the core's slice, as the master's unit runs it, and a worker."""
    java = "/usr/lib/jvm/java-17-openjdk-amd64"
    shell.run("install -d -o spark -g spark /var/lib/spark/work /var/lib/spark/logs")
    # Each application's share, as the bootstrap writes the inventory's spark.limits:
    # both users' kernels start an application, and each must leave the other room.
    shell.put(f"{SPARK}/conf/spark-defaults.conf",
              b"spark.cores.max 1\nspark.executor.cores 1\nspark.executor.memory 512m\n",
              mode=0o644, owner="root", group="root")
    common = (f"--uid=spark --gid=spark --setenv=JAVA_HOME={java} "
              f"--setenv=SPARK_HOME={SPARK} --setenv=SPARK_LOG_DIR=/var/lib/spark/logs "
              "-p WorkingDirectory=/var/lib/spark")
    shell.run(f"systemd-run --unit=spark-master --slice={CORE_SLICE} {common} "
              f"{SPARK}/bin/spark-class org.apache.spark.deploy.master.Master "
              f"--host {ip} --port 7077 --webui-port 8080")
    shell.run(f"systemd-run --unit=spark-worker {common} "
              f"{SPARK}/bin/spark-class org.apache.spark.deploy.worker.Worker "
              f"--host {ip} --cores 2 --memory 1g --work-dir /var/lib/spark/work "
              f"spark://{ip}:7077")

    def worker_registered() -> bool:
        _, out, _ = shell.run(f"curl -s http://{ip}:8080/json/", check=False)
        return '"aliveworkers" : 1' in out or '"aliveworkers": 1' in out

    wait_for(worker_registered, timeout=120, what="the Spark worker to register",
             on_timeout=lambda: shell.run("journalctl -u spark-master -u spark-worker -n 30 "
                                          "--no-pager", check=False)[1])


def _spark_story(shell: HostShell, ip: str) -> str:
    """What the master says of its workers and applications, and the daemons' and
    executors' last lines: why a job did not run."""
    _, out, _ = shell.run(
        f"curl -s http://{ip}:8080/json/; journalctl -u spark-master -u spark-worker -n 40 "
        "--no-pager; tail -n 30 /var/lib/spark/work/*/*/stderr", check=False)
    return out[-6000:]


def _show(shell: HostShell, unit: str, prop: str) -> str:
    return shell.run(f"systemctl show -P {prop} {unit}")[1].strip()


def _scope_of(shell: HostShell, pid: int) -> str:
    """The systemd unit a process of the host is in."""
    _, out, _ = shell.run(f"cat /proc/{pid}/cgroup")
    line = next(li for li in out.splitlines() if ":name=systemd:" in li or li.startswith("0::"))
    return line.rsplit("/", 1)[-1]


def _pids(shell: HostShell, user: str, pattern: str) -> list[int]:
    _, out, _ = shell.run(f"pgrep -u {user} -f {pattern!r}", check=False)
    return [int(p) for p in out.split()]


def test_a_notebook_past_its_limit_dies_alone(systemd_host, record_property):
    host, shell = systemd_host
    ip = host.fixed_ip
    _start_spark(shell, ip)
    inv = _inventory(list(USERS), ["alice"])
    hub = inv.jupyterhub.model_copy(update={"limits": inv.jupyterhub.limits.model_copy(
        update={"memory": LIMIT, "cpu": 1.0})})
    inv = inv.model_copy(update={"jupyterhub": hub})
    report = _run(shell, inv, ip)
    limits = next(s for s in report.steps if s.name == "limits")
    assert "enforced by systemd" in limits.detail and "1536 MiB and 1 CPU per user" in (
        limits.detail), limits.detail

    # The slices: users capped together, the hub and the Spark master beside them.
    assert int(_show(shell, USERS_SLICE, "MemoryMax")) >= LIMIT_BYTES
    _, hub_pid, _ = shell.run("systemctl show -P MainPID sparkstack-hub")
    assert _scope_of(shell, int(hub_pid)) == "sparkstack-hub.service"
    assert _show(shell, "sparkstack-hub", "Slice") == CORE_SLICE
    # the OOM killer's last turn; this machine refuses negative scores, which systemd in a
    # container ignores, so the unit's setting is what can be checked here
    assert _show(shell, "sparkstack-hub", "OOMScoreAdjust") == "-500"
    assert _show(shell, "spark-master", "Slice") == CORE_SLICE

    # The Spark client group, as the Spark stage of `up` makes it.
    shell.run("groupadd -f sparkstack-spark && usermod -aG sparkstack-spark alice && "
              "usermod -aG sparkstack-spark bob")
    passwords = {user: secrets.token_urlsafe(15) for user in USERS}
    shell.run("chpasswd", input="".join(f"{u}:{p}\n" for u, p in passwords.items()).encode())
    client = PinnedClient(ip, 443, report.fingerprint)
    tokens = {user: client.token(user, passwords[user]) for user in USERS}
    for user in USERS:
        status, _, payload = client.request("POST", f"/hub/api/users/{user}/server",
                                             token=tokens[user])  # fmt: skip
        assert status in (201, 202), payload[:300]
    for user in USERS:
        wait_for(lambda u=user: client.server_ready(u, tokens[u]), timeout=180,
                 what=f"{user}'s server", interval=0.5)  # fmt: skip
    api = {u: HubApi(host=ip, port=443, fingerprint=report.fingerprint, token=tokens[u])
           for u in USERS}  # fmt: skip

    # Each server in a scope of its own, with the user's limits.
    scopes = {}
    for user in USERS:
        (server,) = _pids(shell, user, "jupyterhub-singleuser")
        scopes[user] = _scope_of(shell, server)
        assert scopes[user].startswith(f"sparkstack-user-{user}-"), scopes[user]
        assert scopes[user].endswith(".scope")
        assert _show(shell, scopes[user], "Slice") == USERS_SLICE
        assert int(_show(shell, scopes[user], "MemoryMax")) == LIMIT_BYTES
        assert _show(shell, scopes[user], "CPUQuotaPerSecUSec") == "1s"
        # the server is the user's, in the user's groups (Spark's client group)
        _, groups, _ = shell.run(f"ps -o group=,user= -p {server}")
        assert groups.split() == [user, user], groups
        _, status, _ = shell.run(f"grep ^Groups: /proc/{server}/status")
        _, spark_gid, _ = shell.run("getent group sparkstack-spark | cut -d: -f3")
        assert spark_gid.strip() in status.split()[1:], status

    kernels = {u: api[u].call("POST", f"/user/{u}/api/kernels", {}, expect=(201,))
               for u in USERS}  # fmt: skip

    def run(user: str, code: str, timeout: float = 180) -> str:
        try:
            return api[user].execute(user, kernels[user]["id"], code, timeout=timeout)
        except RemoteError as exc:
            pytest.fail(f"{user}'s cell: {exc.message}\n{exc.log_tail}\n"
                        f"--- Spark on the host:\n{_spark_story(shell, ip)}", pytrace=False)

    # bob's job runs on the cluster; his driver JVM is in his scope.
    assert run("bob", JOB) == "333328333350000"
    (driver,) = _pids(shell, "bob", "org.apache.spark.deploy.SparkSubmit")
    assert _scope_of(shell, driver) == scopes["bob"]

    alice_kernel = int(run("alice", "import os; print(os.getpid())"))
    assert _scope_of(shell, alice_kernel) == scopes["alice"]
    master_pid = _show(shell, "spark-master", "MainPID")

    # alice's cell takes more than her limit: the kernel's OOM killer ends it, in her scope.
    outcome: dict[str, object] = {}

    def hog() -> None:
        try:
            outcome["out"] = api["alice"].execute("alice", kernels["alice"]["id"], HOG,
                                                  timeout=90)
        except RemoteError as exc:
            outcome["error"] = exc.message

    thread = threading.Thread(target=hog, daemon=True)
    thread.start()

    def alice_kernel_gone() -> bool:
        return shell.run(f"test -d /proc/{alice_kernel}", check=False)[0] != 0

    wait_for(alice_kernel_gone, timeout=120, what="alice's kernel to be killed")
    # cgroup v1's memory controller counts the kills it made (v2's memory.events, too)
    cgroup = _show(shell, scopes["alice"], "ControlGroup")
    _, oom, _ = shell.run(
        f"cat /sys/fs/cgroup/memory{cgroup}/memory.oom_control "
        f"/sys/fs/cgroup{cgroup}/memory.events 2>/dev/null", check=False)
    kills = [int(line.split()[1]) for line in oom.splitlines() if line.startswith("oom_kill ")]
    assert kills and kills[0] >= 1, oom
    record_property("oom", oom.replace("\n", "; "))
    # the client running the cell was told why, not left waiting
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert str(outcome.get("error", "")).startswith((
        "the kernel died while the cell ran", "the connection to the kernel closed")), outcome

    # Nobody else noticed: alice's server, the hub, the Spark master, bob's kernel.
    assert client.server_ready("alice", tokens["alice"])
    status, _, _ = client.request("GET", "/hub/api/")
    assert status == 200
    assert _show(shell, "spark-master", "ActiveState") == "active"
    assert _show(shell, "spark-master", "MainPID") == master_pid
    assert run("bob", JOB) == "333328333350000"
    # alice's server restarts her kernel, within the same limits
    wait_for(lambda: run("alice", "print(1 + 1)", timeout=60) == "2", timeout=120,
             what="alice's kernel to answer again")  # fmt: skip

    # A restart of the hub (any config change) leaves the servers in their scopes.
    servers = {u: _pids(shell, u, "jupyterhub-singleuser") for u in USERS}
    shell.run("systemctl restart sparkstack-hub")
    def hub_answers() -> bool:
        try:
            return client.request("GET", "/hub/api/")[0] == 200
        except OSError:  # the proxy is restarted with the hub
            return False

    wait_for(hub_answers, timeout=120, what="the hub after its restart", interval=0.5)
    assert {u: _pids(shell, u, "jupyterhub-singleuser") for u in USERS} == servers
    assert run("bob", JOB) == "333328333350000"
