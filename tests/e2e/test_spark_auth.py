"""Spark's ports never take a client without the cluster's secret, on servers that really
boot: between a node's boot and the SSH stage nothing listens on 7077 (master) or 7078
(worker); the SSH stage brings the secret and starts the daemons (started, not
restarted); then a client without the secret is refused by the running master while one
with it runs a job; a second `up` leaves the daemons as they are."""

from __future__ import annotations

import datetime
import json
import shlex
import socket
import time

import pytest

from provisioner.render import READY_MARKER
from tests.cloud.test_workflows import cli_env, cluster_resources, run_cli

from .conftest import host_log_tail, wait_for
from .test_hub import HostShell, _init_pid
from .test_ssh_stage import hosts_of, inventory

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

NAME = "sauth"
# A driver as the master's hub users run one (the venv's PySpark, the master's address),
# minus whatever the environment adds: the test decides which Spark config it reads.
DRIVER = (
    "from pyspark.sql import SparkSession; "
    "s = SparkSession.builder.master('spark://{ip}:7077')"
    ".config('spark.driver.host', '{ip}').getOrCreate(); "
    "print('RESULT', s.sparkContext.parallelize(range(10)).sum())"
)


def refused(address: str, port: int) -> bool:
    """True if the address answers the connection with a refusal (nothing listens)."""
    try:
        with socket.create_connection((address, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def fixed_ips(admin) -> dict[str, str]:
    return {
        s.name: next(a["addr"] for addrs in s.addresses.values() for a in addrs
                     if a.get("OS-EXT-IPS:type") != "floating")
        for s in admin.compute.servers(all_projects=True) if s.name.startswith(f"{NAME}-")
    }  # fmt: skip


def logged_at(log: str, text: str) -> datetime.datetime:
    """When the CLI's log (millisecond timestamps) last said `text`."""
    stamps = [line[:23] for line in log.splitlines() if text in line]
    assert stamps, f"{text!r} is not in the log"
    return datetime.datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f")


def booted_hosts(admin) -> list | None:
    """The cluster's two hosts once both boot scripts have finished, else None."""
    found = hosts_of(admin, NAME)
    done = len(found) == 2 and all(h.file(READY_MARKER).exists() for h in found)
    return found if done else None


def pids(shell: HostShell) -> str:
    return shell.run("cat /var/lib/spark/run/*.pid", check=False)[1]


def test_spark_listens_only_once_the_secret_is_there(hostbed, clean_project, tmp_path):
    admin = clean_project.admin()
    inv = inventory(tmp_path / "inv.toml", name=NAME, workers=1)
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    timings: dict[str, float] = {}
    try:
        # Servers only: the nodes boot and run their boot script, and nothing brings the
        # secret: the window every cluster passes through before its SSH stage.
        servers = run_cli("up", "-i", str(inv), "--until", "servers", env=env, check=False)
        assert servers.returncode == 0, servers.stderr
        booted = wait_for(
            lambda: booted_hosts(admin), timeout=600, what="both nodes' ready markers",
            on_timeout=lambda: "\n".join(host_log_tail(h) for h in hosts_of(admin, NAME)),
        )  # fmt: skip
        ips = fixed_ips(admin)
        master_ip, worker_ip = ips[f"{NAME}-master"], ips[f"{NAME}-worker-1"]
        for host in booted:
            assert "spark=waiting-for-secret\n" in host.file(READY_MARKER).read_text()
        # from this machine's root namespace, over the cluster's network
        assert refused(master_ip, 7077), "the master listens before it has the secret"
        assert refused(worker_ip, 7078), "the worker listens before it has the secret"
        assert refused(master_ip, 8080)  # its UI too: no daemon at all

        t = time.monotonic()
        up = run_cli("up", "-i", str(inv), "--until", "ssh", env=env, check=False, timeout=900)
        timings["up --until ssh on booted nodes"] = time.monotonic() - t
        assert up.returncode == 0, up.stderr
        err = " ".join(up.stderr.split())
        assert f"Spark authentication on; started {NAME}-master, {NAME}-worker-1" in err, err
        assert "restarted" not in err  # a fresh cluster: nothing to restart
        assert "every worker is ALIVE on the Spark master" in err
        log = (tmp_path / "state" / "sparkstack" / NAME / "sparkstack.log").read_text()
        timings["secret delivered -> every worker ALIVE"] = (
            logged_at(log, "every worker is ALIVE on the Spark master")
            - logged_at(log, "booted and reachable over SSH")
        ).total_seconds()
        for host in booted:
            assert "spark=authenticated\n" in host.file(READY_MARKER).read_text()

        master_host = next(h for h in booted if h.name == f"{NAME}-master")
        shell = HostShell(master_host, _init_pid(master_host))
        driver = shlex.quote(DRIVER.format(ip=master_ip))
        python = ("PYTHONPATH=/opt/spark/python:$(ls /opt/spark/python/lib/py4j-*-src.zip) "
                  "/opt/sparkstack/venv/bin/python")  # fmt: skip
        # without the secret (an empty Spark config): refused at the handshake
        status, out, _ = shell.run(
            "mkdir -p /tmp/noconf && cd /tmp && timeout 30 runuser -u nobody -- env HOME=/tmp "
            f"SPARK_HOME=/opt/spark SPARK_CONF_DIR=/tmp/noconf {python} -c {driver}",
            check=False, timeout=120,
        )  # fmt: skip
        assert status != 0 and "RESULT" not in out, (status, out[-500:])
        _, master_log, _ = shell.run("cat /var/log/spark/*Master*.out", check=False)
        assert "Expected SaslMessage" in master_log
        # with it (the spark user reads the node's config): the job runs on the worker
        status, out, err_out = shell.run(
            "cd /tmp && timeout 120 runuser -u spark -- env HOME=/tmp SPARK_HOME=/opt/spark "
            f"{python} -c {driver}",
            check=False, timeout=180,
        )  # fmt: skip
        assert status == 0 and "RESULT 45" in out, (status, out[-500:], err_out[-2000:])

        # a second run: the daemons keep running as they are
        before = pids(shell)
        again = run_cli("up", "-i", str(inv), "--until", "ssh", env=env, check=False)
        assert again.returncode == 0, again.stderr
        assert "Spark authentication on" not in again.stderr
        assert pids(shell) == before
    finally:
        run_cli("down", "-i", str(inv), "--yes", env=env, check=False)
        print("timings:", json.dumps(timings, indent=1))
        hostbed.timings.update(timings)
    assert cluster_resources(admin, NAME) == {}
