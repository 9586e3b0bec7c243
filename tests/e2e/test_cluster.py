"""The whole product on servers that really boot, through the CLI as a user runs it, on one
cluster that the tests of this module share in order (booting it is the slow part; each
test reads it, and only the last ones change it):

`up` (1 master + 3 workers) -> the hub trusted through the cluster's CA -> `smoke` -> two
inventory users run a job each at once, each its own Spark application within
spark.limits -> a browser logs in and runs a PySpark cell -> `up` again changes nothing ->
a user added to the inventory gets an account on the next `up` -> no secret in any
server's user_data, the master as a hub user finds it hardened -> `ssh`, `logs`, `status`,
`tunnel` -> signals end `tunnel`, `logs -f` and `ssh` with 128+N, a refused login ends
`logs -f` with 3 -> `scale` from 3 workers to 1 while a notebook's job runs on all three -> `down`
leaves nothing."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import gzip
import html
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest
import requests
import tomllib
import websockets.exceptions

from provisioner.errors import RemoteError
from provisioner.hub.steps import KERNEL_PATH
from provisioner.hubapi import HubApi
from provisioner.inventory import load_inventory
from provisioner.render import READY_MARKER
from tests.cloud.test_workflows import cli_env, cluster_resources, run_cli
from tests.testbed.fixtures import ProjectAudit
from tests.testbed.hosts import hosts
from tests.testbed.oidc.provider import running

from .browser import Trust, browser_session, missing_tools
from .conftest import host_key, host_log_tail, wait_for
from .test_hub import HostShell, PinnedClient
from .test_hub_sso import ACCOUNTS as SSO_ACCOUNTS
from .test_hub_sso import BRIDGE as SSO_BRIDGE
from .test_hub_sso import CLIENT_ID as SSO_CLIENT_ID
from .test_hub_sso import CLIENT_SECRET as SSO_CLIENT_SECRET
from .test_hub_sso import sign_in, sso_port

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BED_INVENTORY = ROOT / "tests" / "testbed" / "inventory.testbed.toml"
NAME = "e2e"
JOB = "sc.parallelize(range(100000), 8).map(lambda x: x * x).sum()"
JOB_ANSWER = "333328333350000"
# 60 elements, 30 tasks of about 4 s: about a minute on three one-core executors. Started
# in a thread of the kernel, as a notebook cell still running, and read back with short
# requests: one websocket held silent for minutes on a loaded 2-core bed gets dropped.
LONG_JOB = (
    "import threading, time\n"
    "job_result = []\n"
    "def _job():\n"
    "    try:\n"
    "        job_result.append(sc.parallelize(range(60), 30)"
    ".map(lambda x: (time.sleep(2), x * x)[1]).sum())\n"
    "    except Exception as exc:\n"
    "        job_result.append(repr(exc))\n"
    "threading.Thread(target=_job, daemon=True).start()\n"
    "print('started')"
)
JOB_POLL = "print(job_result[0] if job_result else 'running')"
LONG_JOB_ANSWER = str(sum(x * x for x in range(60)))


def write_inventory(path: Path, *, name: str, users: list[str]) -> Path:
    text = BED_INVENTORY.read_text()
    text = re.sub(r'(?m)^name = "demo"$', f'name = "{name}"', text)
    text = re.sub(r"(?m)^users = .*$", f"users = {json.dumps(users)}", text)
    path.write_text(text)
    return path


def _team_inventory(path: Path, users: list[str]) -> Path:
    write_inventory(path, name=NAME, users=users)
    text = path.read_text()
    text = re.sub(r"(?m)^count = 2$", "count = 3", text)
    # one executor on each of the three workers; two applications fit side by side
    text = re.sub(r"(?m)^cores_max = 2$", "cores_max = 3", text)
    path.write_text(text)
    return path


def run_job(client: PinnedClient, api_host: str, port: int, fingerprint: str, user: str,
            password: str) -> tuple[str, str, str]:
    """As a person would: log in, start a server, open the PySpark kernel, run the job.
    The job's answer, its application's id, and where its UI is through the hub."""
    # the token request authenticates with the password itself (a cookie session would
    # need the form's _xsrf): ask for it before the browser-style login
    token = client.token(user, password)
    assert client.login(user, password) == 302
    status, _, _ = client.request("POST", f"/hub/api/users/{user}/server", token=token)
    assert status in (201, 202), status
    wait_for(lambda: client.server_ready(user, token), timeout=120, what=f"{user}'s server")
    api = HubApi(host=api_host, port=port, fingerprint=fingerprint, token=token)
    kernel = api.call("POST", f"/user/{user}/api/kernels", {"name": "pyspark"}, expect=(201,))
    answer = api.execute(user, kernel["id"], JOB, timeout=300)
    app = api.execute(user, kernel["id"], "print(sc.applicationId)", timeout=60)
    return answer, app, api.execute(user, kernel["id"], "print(spark_ui)", timeout=60)


def secrets_on(host: hosts.Host) -> list[str]:
    out = []
    for path in ("/etc/sparkstack/spark-auth-secret",
                 "/var/lib/sparkstack-hub/jupyterhub_cookie_secret",
                 "/var/lib/sparkstack-hub/proxy_auth_token",
                 "/var/lib/sparkstack-hub/smoke_api_token",
                 "/etc/sparkstack-hub/tls/hub.key"):  # fmt: skip
        f = host.file(path)
        if f.exists():
            out.append(f.read_text().strip())
    return out


@dataclass
class Team:
    """The module's cluster: where its files are and what the first `up` said."""

    tmp: Path
    env: dict[str, str]
    inv_path: Path
    admin: Any
    up: subprocess.CompletedProcess[str] | None = None
    # what the booted nodes showed before `up` brought Spark's secret (see the fixture)
    before_secret: dict[str, bool] = field(default_factory=dict)
    downed: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def creds_path(self) -> Path:
        return self.tmp / "config" / "sparkstack" / NAME / "credentials.toml"

    def creds(self) -> dict[str, Any]:
        return tomllib.loads(self.creds_path.read_text())

    def servers(self) -> list[Any]:
        return [s for s in self.admin.compute.servers(all_projects=True)
                if s.name.startswith(f"{NAME}-")]  # fmt: skip

    def address(self, server_name: str, *, floating: bool) -> str:
        server = next(s for s in self.servers() if s.name == server_name)
        return next(a["addr"] for addrs in server.addresses.values() for a in addrs
                    if (a.get("OS-EXT-IPS:type") == "floating") == floating)  # fmt: skip

    def hub_client(self) -> tuple[PinnedClient, str, int, str]:
        fip = self.address(f"{NAME}-master", floating=True)
        fingerprint = self.creds()["hub_certificate_sha256"]
        return PinnedClient(fip, 443, fingerprint), fip, 443, fingerprint

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env, check=False, timeout=timeout)

    def booted(self) -> list[hosts.Host]:
        ids = {s.id for s in self.servers()}
        return [h for h in hosts.list_hosts() if h.server_id in ids]


def _all_booted(cluster: Team) -> bool:
    booted = cluster.booted()
    return len(booted) == 4 and all(h.file(READY_MARKER).exists() for h in booted)


def _refused(address: str, port: int) -> bool:
    """True if the address refuses the connection (nothing listens there)."""
    try:
        with socket.create_connection((address, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def _spark_before_the_secret(cluster: Team) -> dict[str, bool]:
    """Each booted node waits for the secret, and nothing listens on Spark's ports (asked
    from this machine's root namespace, over the cluster's network)."""
    facts = {}
    for host in cluster.booted():
        marker = host.file(READY_MARKER).read_text()
        facts[f"{host.name} waits for the secret"] = "spark=waiting-for-secret\n" in marker
        ip = cluster.address(host.name, floating=False)
        ports = (7077, 8080) if host.name.endswith("-master") else (7078,)
        for port in ports:
            facts[f"{host.name}:{port} refused"] = _refused(ip, port)
    return facts


@pytest.fixture(scope="module")
def team(hostbed, testbed, tmp_path_factory) -> Iterator[Team]:
    tmp = tmp_path_factory.mktemp("team")
    audit = ProjectAudit(testbed, tmp)
    cluster = Team(tmp=tmp, env=cli_env(tmp, testbed.clouds_yaml), admin=testbed.admin(),
                   inv_path=_team_inventory(tmp / "inv.toml", ["alice", "bob"]))  # fmt: skip
    t = time.monotonic()
    try:
        # Servers first, and the nodes' boot scripts to their end: the window every cluster
        # passes through before its SSH stage brings Spark's secret. `up` then goes on.
        servers = cluster.cli("up", "-i", str(cluster.inv_path), "--until", "servers")
        if servers.returncode != 0:
            pytest.fail(f"up --until servers exited {servers.returncode}:\n"
                        f"{servers.stderr[-3000:]}", pytrace=False)  # fmt: skip
        wait_for(lambda: _all_booted(cluster), timeout=600, what="every node's boot script",
                 on_timeout=lambda: "\n".join(host_log_tail(h) for h in cluster.booted()))
        cluster.before_secret = _spark_before_the_secret(cluster)
        cluster.up = cluster.cli("up", "-i", str(cluster.inv_path), timeout=900)
        cluster.timings["up 1+3 (servers, SSH, boot, hub, Spark auth)"] = time.monotonic() - t
        if cluster.up.returncode != 0:
            pytest.fail(f"up exited {cluster.up.returncode}:\n{cluster.up.stderr[-3000:]}",
                        pytrace=False)  # fmt: skip
        yield cluster
    finally:
        if not cluster.downed:
            cluster.cli("down", "-i", str(cluster.inv_path), "--yes")
        print("timings:", json.dumps(cluster.timings, indent=1))
        hostbed.timings.update(cluster.timings)
        audit.finish()


def test_up_names_the_credentials_file_off_a_terminal_and_logs_no_password(team):
    up = team.up
    assert up is not None
    assert "every worker is ALIVE on the Spark master" in up.stderr
    # pre-baked from this very lock (which the image keeps): nothing to install
    assert ("hub packages: unchanged (hub and proxy installed from this sparkstack's "
            "locks)") in up.stderr
    assert f"admin alice: initial password in {team.creds_path}" in up.stdout
    assert team.creds_path.stat().st_mode & 0o777 == 0o600
    creds = team.creds()
    assert set(creds["users"]) == {"alice", "bob"}
    assert creds["users"]["alice"] not in up.stdout + up.stderr  # stdout: no terminal
    assert creds["users"]["bob"] not in up.stdout + up.stderr
    log = (team.tmp / "state" / "sparkstack" / NAME / "sparkstack.log").read_text()
    assert not any(p in log for p in creds["users"].values()), "a password reached the log"


# A driver as a hub user runs one (the venv's PySpark, the master's address), minus whatever
# the environment adds: the test decides which Spark config it reads.
DRIVER = (
    "from pyspark.sql import SparkSession; "
    "s = SparkSession.builder.master('spark://{ip}:7077')"
    ".config('spark.driver.host', '{ip}').getOrCreate(); "
    "print('RESULT', s.sparkContext.parallelize(range(10)).sum())"
)


def test_spark_listens_only_once_the_secret_is_there_and_refuses_a_client_without_it(team):
    """Between a node's boot and the SSH stage nothing listens on 7077 (master) or 7078
    (workers); the SSH stage brings the secret and starts the daemons (started, not
    restarted); then a client without the secret is refused at the handshake. (Clients
    with it: smoke and the users' jobs below; a second `up` keeps the daemons: below.)"""
    assert len(team.before_secret) == 4 + 5, team.before_secret
    assert all(team.before_secret.values()), team.before_secret
    err = " ".join(team.up.stderr.split())
    started = re.search(r"Spark authentication on; started ((?:[\w-]+, )*[\w-]+)", err)
    assert started, err
    names = {f"{NAME}-master"} | {f"{NAME}-worker-{i}" for i in (1, 2, 3)}
    assert set(started.group(1).split(", ")) == names, started.group(0)
    assert "restarted" not in err  # a fresh cluster: nothing to restart
    for host in team.booted():
        assert "spark=authenticated\n" in host.file(READY_MARKER).read_text(), host.name

    master_ip = team.address(f"{NAME}-master", floating=False)
    shell = _master_shell(team)
    driver = shlex.quote(DRIVER.format(ip=master_ip))
    python = ("PYTHONPATH=/opt/spark/python:$(ls /opt/spark/python/lib/py4j-*-src.zip) "
              "/opt/sparkstack/venv/bin/python")  # fmt: skip
    # An empty Spark config, so no secret: the master refuses it at the handshake, and
    # says so in its log. The client would go on trying: it is stopped once that is there.
    script = f"""
refusals() {{ cat /var/log/spark/*Master*.out | grep -c 'Expected SaslMessage'; }}
before=$(refusals)
mkdir -p /tmp/noconf && cd /tmp
timeout 90 runuser -u nobody -- env HOME=/tmp SPARK_HOME=/opt/spark \\
  SPARK_CONF_DIR=/tmp/noconf {python} -c {driver} >/tmp/noconf/out 2>&1 &
client=$!
tries=0
while [ "$(refusals)" -le "$before" ] && kill -0 $client 2>/dev/null && [ $tries -lt 180 ]; do
  sleep 0.5; tries=$((tries + 1))
done
echo "refused $(( $(refusals) - before ))"
kill $client 2>/dev/null; wait $client
cat /tmp/noconf/out
"""
    _, out, _ = shell.run(script, check=False, timeout=150)
    assert out.startswith("refused ") and not out.startswith("refused 0"), out[-2000:]
    assert "RESULT" not in out, out[-2000:]


def _master_shell(team: Team) -> HostShell:
    master_host = next(h for h in team.booted() if h.name == f"{NAME}-master")
    return HostShell(master_host)


def _daemon_pids(team: Team) -> dict[str, str]:
    out = {}
    for host in team.booted():
        shell = HostShell(host)
        out[host.name] = shell.run("cat /var/lib/spark/run/*.pid", check=False)[1]
    return out


def test_the_hub_is_trusted_through_the_clusters_ca_with_its_address_checked(team):
    ca = team.tmp / "config" / "sparkstack" / NAME / "hub-ca.crt"
    assert f"certificate authority to trust once: {ca}" in " ".join(team.up.stdout.split())
    fip = team.address(f"{NAME}-master", floating=True)
    # what a user's Python does with REQUESTS_CA_BUNDLE: the CA, the hostname checked
    answer = requests.get(f"https://{fip}/hub/api", verify=str(ca), timeout=30)
    assert answer.status_code == 200 and "version" in answer.json()
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{fip}/hub/api", timeout=30)  # the system's CAs do not know it


def test_smoke_runs_a_job_through_the_hub(team):
    t = time.monotonic()
    smoke = team.cli("smoke", "-i", str(team.inv_path), "--json")
    team.timings["smoke"] = time.monotonic() - t
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    report = json.loads(smoke.stdout)
    assert report["ok"] and len(report["checks"]) == 6, report


def test_two_users_at_once_are_two_applications_within_cores_max(team):
    inv = load_inventory(team.inv_path)
    client, fip, port, fingerprint = team.hub_client()
    creds = team.creds()
    t = time.monotonic()
    try:
        with cf.ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(run_job, PinnedClient(fip, port, fingerprint), fip, port,
                            fingerprint, user, creds["users"][user])
                for user in ("alice", "bob")
            ]  # fmt: skip
            results = [f.result() for f in futures]
        team.timings["two users, a job each, at once"] = time.monotonic() - t
        assert [answer for answer, _, _ in results] == [JOB_ANSWER] * 2
        apps = {app for _, app, _ in results}
        assert len(apps) == 2, results
        # each application's UI, through its user's own server: for that user, and for
        # admins (alice is one), not for other users (bob)
        tokens = {u: client.token(u, creds["users"][u]) for u in ("alice", "bob")}
        for (user, other, other_may), (_, _, ui) in zip(
            (("alice", "bob", False), ("bob", "alice", True)), results, strict=True
        ):
            assert re.fullmatch(rf"/user/{user}/sparkui/\d+/", ui), ui
            status, headers, _ = client.request("GET", ui, token=tokens[user])
            assert (status, headers["Location"]) == (302, f"{ui}jobs/")
            status, _, page = client.request("GET", f"{ui}jobs/", token=tokens[user])
            assert status == 200 and b"Spark Jobs" in page, (status, page[:300])
            assert f'href="{ui}stages/"'.encode() in page  # its links work under the prefix
            status, _, page = client.request("GET", f"{ui}jobs/", token=tokens[other])
            assert (status == 200 and b"Spark Jobs" in page) == other_may, (user, other, status)
        # both still hold their executors: each within the per-application core limit
        master_ip = team.address(f"{NAME}-master", floating=False)
        active = {a["id"]: a for a in _master_json(master_ip)["activeapps"]}
        assert apps <= set(active), (apps, list(active))
        for app in apps:
            assert 0 < active[app]["cores"] <= inv.spark.limits.cores_max, active[app]
    except BaseException as exc:
        if isinstance(exc, RemoteError):
            print(exc.render())
        hub_log = team.cli("logs", "-i", str(team.inv_path), "--hub", "-n", "200")
        print("the hub's log (its users' servers and kernels write there):\n", hub_log.stdout)
        raise
    finally:
        # their servers go, and their applications with them: the cores are free again
        # (for the tests after this one too, whatever happened here)
        for user in ("alice", "bob"):
            _stop_server(client, user, creds["users"][user])


def _stop_server(client: PinnedClient, user: str, password: str) -> None:
    """Stop the user's notebook server (with it the kernel's Spark application) and wait."""
    token = client.token(user, password)
    status, _, _ = client.request("DELETE", f"/hub/api/users/{user}/server", token=token)
    assert status in (202, 204), status

    def gone() -> bool:
        code, _, payload = client.request("GET", f"/hub/api/users/{user}", token=token)
        assert code == 200, (code, payload[:300])
        return json.loads(payload)["servers"] == {}

    wait_for(gone, timeout=60, what=f"{user}'s server to stop")


def _local(client: PinnedClient, location: str) -> str:
    """A redirect's target as a path on the hub's address (where every redirect must stay)."""
    target = urllib.parse.urlsplit(location)
    assert target.hostname in (None, client.address), location
    return target.path + (f"?{target.query}" if target.query else "")


def _follow(client: PinnedClient, path: str, *, hops: int = 8) -> tuple[int, bytes, str]:
    """GET `path` and follow redirects on the hub's address, keeping cookies, as a browser
    does: the status, page and path it ends on."""
    for _ in range(hops):
        status, headers, page = client.request("GET", path)
        if status not in (301, 302, 303, 307):
            return status, page, path
        path = _local(client, headers["Location"])
    raise AssertionError(f"more than {hops} redirects, the last to {path}")


def test_admins_reach_the_spark_master_and_worker_uis_through_the_hub(team):
    """/services/spark/: the hub's OAuth login as a browser goes through it, then the
    master's page with every worker linked through the service, and a worker's page
    linking back. Not for bob, who is no admin, nor for any address but a worker's."""
    client, fip, port, fingerprint = team.hub_client()
    creds = team.creds()
    master_ip = team.address(f"{NAME}-master", floating=False)
    workers = sorted(
        urllib.parse.urlsplit(w["webuiaddress"]).hostname
        for w in _master_json(master_ip)["workers"]
        if w["state"] == "ALIVE"
    )
    assert len(workers) == 3, workers
    # bob's notebook runs an application; the master's page links it to bob's server
    answer, _, bobs_ui = run_job(PinnedClient(fip, port, fingerprint), fip, port, fingerprint,
                                 "bob", creds["users"]["bob"])  # fmt: skip
    assert answer == JOB_ANSWER
    try:
        _admins_see_the_cluster(client, (fip, port, fingerprint), creds, master_ip, workers,
                                bobs_ui)  # fmt: skip
    finally:  # its executors would hold cores (a client without alice's cookies)
        _stop_server(PinnedClient(fip, port, fingerprint), "bob", creds["users"]["bob"])


def _admins_see_the_cluster(client, where, creds, master_ip, workers, bobs_ui) -> None:
    fip, port, fingerprint = where
    assert client.login("alice", creds["users"]["alice"]) == 302
    status, _, home = client.request("GET", "/hub/home")
    assert status == 200 and b'href="/services/spark/"' in home  # the hub's Services menu
    status, page, path = _follow(client, "/services/spark/")
    assert (status, path) == (200, "/services/spark/"), (status, path, page[:500])
    assert f"Spark Master at spark://{master_ip}:7077".encode() in page, page[:500]
    assert b'"/services/spark/static/' in page  # Spark's own links under the prefix
    for ip in workers:
        assert f'href="/services/spark/worker/{ip}"'.encode() in page, ip
    assert f'href="{bobs_ui}"'.encode() in page, bobs_ui  # bob's application's UI
    # alice is an admin, so she may open it; the hub asks her once, as it does for any
    # server that is not her own, and she clicks "Authorize"
    status, page, path = _follow(client, f"{bobs_ui}jobs/")
    assert status == 200 and b"Authorize access" in page, page[:500]
    fields = re.findall(rb'name="(_xsrf|scopes)" value="([^"]*)"', page)
    form = [(k.decode(), html.unescape(v.decode())) for k, v in fields]
    status, headers, _ = client.request("POST", path, form=form)
    assert status == 302, status
    status, page, _ = _follow(client, _local(client, headers["Location"]))
    assert status == 200 and b"Spark Jobs" in page, page[:500]
    status, page, _ = _follow(client, f"/services/spark/worker/{workers[0]}")
    assert status == 200 and f"Spark Worker at {workers[0]}".encode() in page, page[:500]
    assert b'href="/services/spark"' in page  # back to the master, through here too
    status, _, _ = _follow(client, "/services/spark/worker/127.0.0.1/")
    assert status == 404  # not a worker: the service goes nowhere else

    bob = PinnedClient(fip, port, fingerprint)
    assert bob.login("bob", creds["users"]["bob"]) == 302
    status, _, home = bob.request("GET", "/hub/home")
    assert status == 200 and b"/services/spark/" not in home
    status, page, _ = _follow(bob, "/services/spark/")
    assert status == 403 and b"Spark Master" not in page, (status, page[:500])
    # API clients: a token of alice's is let in, one of bob's is not
    api = PinnedClient(fip, port, fingerprint)  # no cookies: a token alone
    tokens = {u: api.token(u, creds["users"][u]) for u in ("alice", "bob")}
    status, _, page = api.request("GET", "/services/spark/json/", token=tokens["alice"])
    assert status == 200 and len(json.loads(page)["workers"]) >= 3, (status, page[:300])
    status, _, page = api.request("GET", "/services/spark/json/", token=tokens["bob"])
    assert status == 403 and b"workers" not in page, (status, page[:300])


def test_a_browser_trusting_the_ca_logs_in_and_runs_a_pyspark_cell(team, tmp_path):
    """As a person does it: headless Chromium (tests/e2e/browser.py), which trusts the hub
    through the cluster's CA in its own trust store, not by skipping checks."""
    if missing := missing_tools():
        pytest.fail(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver "
                    "libnss3-tools", pytrace=False)  # fmt: skip
    ca = team.tmp / "config" / "sparkstack" / NAME / "hub-ca.crt"
    master = next(h for h in team.booted() if h.name == f"{NAME}-master")
    kernel = json.loads(master.file(KERNEL_PATH).read_text())["display_name"]
    fip = team.address(f"{NAME}-master", floating=True)
    password = team.creds()["users"]["bob"]
    artifacts = tmp_path / "browser"
    print(f"browser artifacts (kept when a step fails): {artifacts}")
    try:
        with browser_session(base_url=f"https://{fip}", trust=Trust(ca, is_ca=True),
                             artifacts=artifacts) as browser:  # fmt: skip
            browser.login("bob", "not-his-password")
            assert browser.login_error() == "Invalid username or password"
            browser.login("bob", password)
            assert browser.login_error() is None
            browser.wait_for_lab()
            browser.open_notebook(kernel)
            # the first Spark cell: its answer, under a link to the application's UI
            shown = browser.run_cell("sc.parallelize(range(10)).sum()", timeout=180)
            assert shown.splitlines() == ["Spark UI", "45"], shown
            # a URL a cell prints is a link that opens in a new tab, still logged in
            home = f"https://{fip}/hub/home"
            assert browser.run_cell(f"print({home!r})") == home
            notebook = browser.driver.current_window_handle
            assert browser.open_link_in_new_tab(home) == home
            assert browser.visible("#stop").text.strip() == "Stop My Server"
            # and the Spark UI link opens the application's jobs, through bob's server
            browser.driver.switch_to.window(notebook)
            ui = browser.open_link_in_new_tab("Spark UI")
            assert re.fullmatch(rf"https://{re.escape(fip)}/user/bob/sparkui/\d+/jobs/", ui), ui
            assert "Spark Jobs" in browser.driver.title, browser.driver.title
        team.timings.update({f"browser: {k}": v for k, v in browser.timings.items()})
    finally:
        client, *_ = team.hub_client()
        _stop_server(client, "bob", password)  # its executors would hold cores


def test_up_again_changes_nothing_and_a_user_added_later_logs_in(team):
    pids = _daemon_pids(team)
    assert all(pids.values()) and len(pids) == 4, pids
    again = team.cli("up", "-i", str(team.inv_path))
    assert again.returncode == 0, again.stderr
    assert "nothing to create" in again.stdout
    assert "nothing changed" in again.stderr
    assert "Spark authentication on" not in again.stderr
    assert _daemon_pids(team) == pids  # Spark's daemons kept running as they were

    _team_inventory(team.inv_path, ["alice", "bob", "carol"])
    added = team.cli("up", "-i", str(team.inv_path))
    assert added.returncode == 0, added.stderr
    assert "created carol" in added.stderr
    client, *_ = team.hub_client()
    assert client.login("carol", team.creds()["users"]["carol"]) == 302


def test_no_secret_in_user_data_and_a_hardened_master(team):
    booted = team.booted()
    assert len(booted) == 4
    secrets = [v for h in booted for v in secrets_on(h)]
    secrets += list(team.creds()["users"].values())
    assert len(secrets) >= 8
    # no secret in any server's user_data (any process on a VM can read it)
    for server in team.servers():
        full = team.admin.compute.get_server(server.id)
        # gzip-compressed, as `up` sends it
        user_data = gzip.decompress(base64.b64decode(full.user_data)).decode()
        for secret in secrets:
            assert secret not in user_data, f"a secret is in {server.name}'s user_data"

    # (a client without the cluster's secret is refused: the test after `up` shows it)
    master_host = next(h for h in booted if h.name == f"{NAME}-master")
    shell = HostShell(master_host)

    # the node as a hub user finds it: no password SSH, Spark's logs closed, and (last,
    # since the sandbox may not carry the rule) the metadata service for root only
    fip = team.address(f"{NAME}-master", floating=True)
    guard = hardening_checks(master_host, shell, fip, team.creds()["users"]["alice"])
    if guard != "active":
        # everything else passed; only this check cannot run here
        pytest.skip(f"the metadata guard cannot be loaded in this sandbox's hosts: {guard}")


def hardening_checks(host: hosts.Host, shell: HostShell, address: str, password: str) -> str:
    """SSH, Spark's directories and the metadata service as the hub user alice sees them
    on the master. Returns the metadata guard's state ("active" or why not)."""
    _, settings, _ = shell.run("sshd -T")
    for want in ("passwordauthentication no", "kbdinteractiveauthentication no",
                 "permitrootlogin no"):  # fmt: skip
        assert want in settings.splitlines(), want
    # and sshd really refuses a password, even alice's right one (the key pinned first)
    transport = paramiko.Transport((address, 22))
    transport.get_security_options().key_types = ["ssh-ed25519"]
    try:
        transport.start_client(timeout=10)
        assert transport.get_remote_server_key() == host_key(host)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password("alice", password)
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()

    status, out, err = shell.run("runuser -u alice -- ls /var/log/spark", check=False)
    assert status != 0 and "Permission denied" in out + err, (status, out, err)
    _, modes, _ = shell.run("stat -c '%n %a %U:%G' /var/log/spark /var/lib/spark/work "
                            "/var/lib/spark/run /etc/sparkstack /etc/sparkstack/*")  # fmt: skip
    listed = dict(line.split(" ", 1) for line in modes.splitlines())
    for d in ("/var/log/spark", "/var/lib/spark/work", "/var/lib/spark/run"):
        assert listed[d] == "750 spark:spark", (d, listed[d])
    assert listed.pop("/etc/sparkstack") == "755 root:root"
    assert listed.pop("/etc/sparkstack/spark-auth-secret") == "600 root:root"
    # the locks the master installed from: public, readable by all, changed by root only
    assert listed.pop("/etc/sparkstack/locks") == "755 root:root"
    rest = {path: mode for path, mode in listed.items() if path.startswith("/etc/sparkstack/")}
    assert set(rest.values()) == {"644 root:root"}, rest

    guard = shell.run("cat /var/lib/sparkstack/metadata-guard")[1].strip()
    if guard != "active":
        return guard
    # The bed has no metadata service: the address goes on the node's own loopback (inside
    # its network namespace, so nothing leaves it) with a web server run by root.
    script = """
ip addr add 169.254.169.254/32 dev lo
python3 -m http.server --bind 169.254.169.254 80 >/dev/null 2>&1 & server=$!
for _ in $(seq 50); do curl -s -o /dev/null --max-time 1 http://169.254.169.254/ && break
  sleep 0.2; done
echo "root: $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://169.254.169.254/)"
echo "alice: $(runuser -u alice -- python3 -c "$probe")"
kill $server; ip addr del 169.254.169.254/32 dev lo
"""
    probe = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('169.254.169.254', 80), timeout=5).close()\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    _, out, _ = shell.run(f"probe={shlex.quote(probe)} bash -c {shlex.quote(script)}",
                          timeout=60)  # fmt: skip
    assert "root: 200\n" in out, out
    assert "alice: ConnectionRefusedError\n" in out, out  # reset at once, not a timeout
    return guard


def _master_json(master_ip: str) -> dict:
    with urllib.request.urlopen(f"http://{master_ip}:8080/json/", timeout=10) as resp:
        return json.load(resp)


def _closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_ssh_logs_status_and_tunnel(team):
    inv = str(team.inv_path)
    # ssh: a command on a worker, through the master; its exit code comes back
    t = time.monotonic()
    ssh = team.cli("ssh", "-i", inv, "2", "--", "hostname; exit 7", timeout=120)
    team.timings["ssh worker-2 command"] = time.monotonic() - t
    assert ssh.returncode == 7, ssh.stderr
    assert ssh.stdout.strip() == f"{NAME}-worker-2"
    master_cmd = team.cli("ssh", "-i", inv, "--", "hostname", timeout=120)
    assert (master_cmd.returncode, master_cmd.stdout.strip()) == (0, f"{NAME}-master")
    assert not (Path.home() / ".ssh" / "known_hosts").exists() or NAME not in (
        Path.home() / ".ssh" / "known_hosts"
    ).read_text()

    # logs: the node's cloud-init output (the boot script's ready line is in it)
    logs = team.cli("logs", "-i", inv, "worker-1", "-n", "0", timeout=120)
    assert logs.returncode == 0, logs.stderr
    assert "sparkstack[ready]: node ready" in logs.stdout
    spark_log = team.cli("logs", "-i", inv, "--spark")
    assert "Master" in spark_log.stdout, spark_log.stdout[-500:]

    # status: Spark's view and the hub's beside the cloud's
    status = json.loads(team.cli("status", "-i", inv, "--json").stdout)
    assert status["hub"]["state"] == "running", status
    spark = {n["name"]: n["spark"] for n in status["nodes"]}
    assert {k: v["state"] for k, v in spark.items()} == {
        f"{NAME}-master": "ALIVE", **{f"{NAME}-worker-{i}": "ALIVE" for i in (1, 2, 3)}
    }, spark
    master_ip = next(n["fixed_ip"] for n in status["nodes"] if n["role"] == "master")

    # tunnel: the master UI on localhost until Ctrl-C, which exits 0 and closes it
    tunnel = _cli_process("tunnel", "-i", inv, env=team.env)
    try:
        assert tunnel.stdout is not None
        first = tunnel.stdout.readline()
        match = re.match(r"Spark master UI\s+http://127\.0\.0\.1:(\d+)/", first)
        assert match, first + (tunnel.communicate()[1] if tunnel.poll() is not None else "")
        local = int(match.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/json/", timeout=10) as r:
            assert json.load(r)["url"] == f"spark://{master_ip}:7077"
        tunnel.send_signal(signal.SIGINT)
        _, err = tunnel.communicate(timeout=30)
        assert tunnel.returncode == 0, err
    finally:
        _reap(tunnel)
    assert _closed(local)


def _cli_process(*args: str, env: dict[str, str], new_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner.cli", *args], cwd=ROOT, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=new_session,
    )  # fmt: skip


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _tunnel_until(sig: signal.Signals, inv: Path, env: dict[str, str]) -> tuple[int, str, int]:
    """(exit code, stderr, the master UI's local port) of a tunnel that got `sig` once
    every forward listened."""
    tunnel = _cli_process("tunnel", "-i", str(inv), "--apps", "1", env=env)
    try:
        assert tunnel.stdout is not None
        first = tunnel.stdout.readline()  # printed once every forward listens
        match = re.match(r"Spark master UI\s+http://127\.0\.0\.1:(\d+)/", first)
        assert match, first + (tunnel.communicate()[1] if tunnel.poll() is not None else "")
        local = int(match.group(1))
        assert not _closed(local)
        tunnel.send_signal(sig)
        _, err = tunnel.communicate(timeout=60)
    finally:
        _reap(tunnel)
    return tunnel.returncode, err, local


def _follow_until(
    sig: signal.Signals, inv: Path, env: dict[str, str], *, group: bool
) -> tuple[int, str]:
    """(exit code, stderr) of `logs -f` on worker 1 that got `sig` once a line came."""
    follow = _cli_process("logs", "-i", str(inv), "-f", "-n", "1", "worker-1", env=env,
                          new_session=True)  # fmt: skip
    try:
        assert follow.stdout is not None
        line = follow.stdout.readline()  # the log's last line: ssh is in, following
        assert line, follow.communicate()[1]
        if group:
            os.killpg(follow.pid, sig)
        else:
            follow.send_signal(sig)
        _, err = follow.communicate(timeout=60)
    finally:
        _reap(follow)
    return follow.returncode, err


def test_signals_end_tunnel_and_logs_with_128_plus_n_and_a_refused_login_exits_3(team):
    for sig in (signal.SIGTERM, signal.SIGHUP):
        code, err, local = _tunnel_until(sig, team.inv_path, team.env)
        assert code == 128 + sig, err
        assert f"interrupted by {sig.name}" in " ".join(err.split()), err
        assert "Traceback" not in err
        assert _closed(local), f"the forward on {local} outlived the tunnel ({sig.name})"

    # logs -f: a SIGTERM to sparkstack alone is 143; Ctrl-C at a terminal (the whole
    # process group) is how a follow ends, 0.
    for sig, group, expected in ((signal.SIGTERM, False, 143), (signal.SIGINT, True, 0)):
        code, err = _follow_until(sig, team.inv_path, team.env, group=group)
        assert code == expected, err
        assert "Traceback" not in err

    # ssh: a remote command stopped by a SIGTERM to sparkstack is 143, not ssh's 255
    remote = _cli_process("ssh", "-i", str(team.inv_path), "worker-1", "--",
                          "echo in; sleep 60", env=team.env)  # fmt: skip
    try:
        assert remote.stdout is not None and remote.stdout.readline() == "in\n"
        remote.send_signal(signal.SIGTERM)
        _, err = remote.communicate(timeout=60)
    finally:
        _reap(remote)
    assert remote.returncode == 143, err
    assert "interrupted by SIGTERM" in " ".join(err.split()) and "Traceback" not in err, err

    # A user the nodes do not have: sshd refuses the login and ssh exits 255.
    text = team.inv_path.read_text()
    refused = team.tmp / "refused.toml"
    refused.write_text(re.sub(r'(?m)^user = "debian"$', 'user = "nobody-here"', text))
    assert refused.read_text() != text
    logs = team.cli("logs", "-i", str(refused), "-f", "worker-1", timeout=120)
    err = " ".join(logs.stderr.split())
    assert logs.returncode == 3, logs.stderr
    assert f"[logs] {NAME}-worker-1: ssh could not connect:" in err, err
    assert "Permission denied" in err.split("ssh could not connect:", 1)[1], err


def test_scale_from_3_to_1_drains_while_a_notebooks_job_runs_on_all_three(team):
    client, fip, port, fingerprint = team.hub_client()
    master_ip = team.address(f"{NAME}-master", floating=False)
    leaving = {f"{NAME}-worker-2", f"{NAME}-worker-3"}
    removed = {team.address(name, floating=False) for name in leaving}
    token = client.token("alice", team.creds()["users"]["alice"])
    status_code, _, _ = client.request("POST", "/hub/api/users/alice/server", token=token)
    assert status_code in (201, 202)
    wait_for(lambda: client.server_ready("alice", token), timeout=120, what="alice's server")
    api = HubApi(host=fip, port=port, fingerprint=fingerprint, token=token)
    kernel = api.call("POST", "/user/alice/api/kernels", {"name": "pyspark"}, expect=(201,))
    assert api.execute("alice", kernel["id"], LONG_JOB, timeout=300).strip() == "started"

    def on_all_three() -> bool:
        apps = _master_json(master_ip)["activeapps"]
        return len(apps) == 1 and apps[0]["cores"] == 3

    wait_for(on_all_three, timeout=240, what="the job's executors on all three workers",
             interval=1)  # fmt: skip
    t = time.monotonic()
    scale = team.cli("scale", "-i", str(team.inv_path), "-w", "1", "--yes", timeout=900)
    team.timings["scale 3 -> 1 with a job running"] = time.monotonic() - t
    assert scale.returncode == 0, scale.stdout + scale.stderr
    drained = re.search(r"decommissioned \S+, \S+ in (\d+) s", scale.stdout)
    assert drained, scale.stdout
    team.timings["decommission waited"] = float(drained.group(1))
    # each leaving worker's state was shown while it drained
    for leaving_worker in sorted(leaving):
        assert re.search(rf"{leaving_worker}: (decommissioning|draining)", scale.stderr)
        assert f"{leaving_worker}: drained" in scale.stderr
    after = _master_json(master_ip)
    assert not [w for w in after["workers"] if w["host"] in removed and w["state"] == "ALIVE"]

    def finished() -> str | None:
        # A poll that the loaded bed's proxy or kernel drops is asked again; the job
        # itself runs on in the kernel meanwhile.
        try:
            out = api.execute("alice", kernel["id"], JOB_POLL, timeout=120).strip()
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            print("poll failed, asking again:", exc)
            return None
        return None if out == "running" else out

    assert wait_for(finished, timeout=600, what="the job", interval=5) == LONG_JOB_ANSWER
    team.timings["job (started before the scale)"] = time.monotonic() - t
    later = _master_json(master_ip)
    assert not [w for w in later["workers"] if w["host"] in removed and w["state"] == "ALIVE"]
    assert [s.name for s in team.servers() if "-worker-" in s.name] == [f"{NAME}-worker-1"]
    # alice's server goes, and her application with it: the one worker's core is free
    # again for the tests after this one
    _stop_server(client, "alice", team.creds()["users"]["alice"])
    wait_for(lambda: not _master_json(master_ip)["activeapps"], timeout=120,
             what="no application left on the master", interval=1)  # fmt: skip


def _inventory_now(team: Team) -> Path:
    """The team's inventory with the workers the cluster has now (the scale test leaves
    one): `up` with the file's count would make the others again."""
    workers = len([s for s in team.servers() if "-worker-" in s.name])
    text = re.sub(r"(?m)^count = \d+$", f"count = {workers}", team.inv_path.read_text())
    path = team.tmp / "inv-now.toml"
    path.write_text(text)
    return path


def _sso_inventory(team: Team, issuer: str, ca_file: Path, secret: Path) -> Path:
    """The team's inventory with single sign-on through the bed's provider."""
    text = _inventory_now(team).read_text().replace(
        "[jupyterhub]\n", '[jupyterhub]\nauthenticator = "oidc"\n', 1)
    text += ("\n[jupyterhub.oidc]\n"
             f'issuer = "{issuer}"\nclient_id = "{SSO_CLIENT_ID}"\n'
             f'client_secret_file = "{secret}"\nca_file = "{ca_file}"\n'
             'scopes = ["openid", "profile", "email", "groups"]\n'
             'allowed_groups = ["spark-users"]\n')  # fmt: skip
    path = team.tmp / "inv-sso.toml"
    path.write_text(text)
    return path


def _in_spark_group(team: Team, inv: Path, user: str) -> bool:
    done = team.cli("ssh", "-i", str(inv), "--", f"id -nG {user}", timeout=120)
    assert done.returncode == 0, done.stderr
    return "sparkstack-spark" in done.stdout.split()


def test_single_sign_on_through_up_and_a_job_as_the_person_the_provider_names(team, tmp_path):
    """`up` moves the running cluster to single sign-on through the bed's OIDC provider;
    erin, whom the provider knows and the inventory does not, signs in, gets her account
    in the Spark group and runs a job; `up` again keeps her there; back to PAM, she is out
    of the Spark group and the inventory's users log in with their passwords again."""
    fip = team.address(f"{NAME}-master", floating=True)
    hub = f"https://{fip}/"
    secret = tmp_path / "client-secret"
    secret.write_text(SSO_CLIENT_SECRET + "\n")
    client = {"client_id": SSO_CLIENT_ID, "client_secret": SSO_CLIENT_SECRET,
              "redirect_uris": [hub + "hub/oauth_callback"]}  # fmt: skip
    accounts = {"erin": SSO_ACCOUNTS["erin"]}
    with running(ip=SSO_BRIDGE, port=sso_port(), client=client, accounts=accounts,
                 workdir=tmp_path / "idp") as idp:  # fmt: skip
        inv = _sso_inventory(team, idp.issuer, idp.ca_file, secret)
        t = time.monotonic()
        up = team.cli("up", "-i", str(inv), timeout=600)
        team.timings["up: PAM to single sign-on"] = time.monotonic() - t
        assert up.returncode == 0, up.stderr
        assert "nothing to create" in up.stdout, up.stdout
        assert f"redirect URI to register at the provider: {hub}hub/oauth_callback" in up.stdout
        assert f"people sign in through {idp.issuer}" in up.stdout
        assert "password" not in up.stdout
        bundle = tmp_path / "trust.pem"
        ca = team.tmp / "config" / "sparkstack" / NAME / "hub-ca.crt"
        bundle.write_bytes(ca.read_bytes() + idp.ca_file.read_bytes())

        session, page = sign_in(hub, bundle, "erin", "erin-pw")
        assert page.status_code == 200 and page.url.startswith(hub), (page.status_code, page.url)
        assert _in_spark_group(team, inv, "erin")
        # an API token of her own, asked with her browser session (the hub's XSRF check)
        session.get(hub + "hub/home", timeout=30)
        made = session.post(hub + "hub/api/users/erin/tokens", timeout=30,
                            headers={"X-XSRFToken": session.cookies.get("_xsrf", "")},
                            json={"note": "e2e", "expires_in": 3600})  # fmt: skip
        assert made.status_code in (200, 201), (made.status_code, made.text[:300])
        token = made.json()["token"]
        fingerprint = team.creds()["hub_certificate_sha256"]
        pinned = PinnedClient(fip, 443, fingerprint)
        wait_for(lambda: pinned.server_ready("erin", token), timeout=120, what="erin's server")
        api = HubApi(host=fip, port=443, fingerprint=fingerprint, token=token)
        kernel = api.call("POST", "/user/erin/api/kernels", {"name": "pyspark"}, expect=(201,))
        assert api.execute("erin", kernel["id"], JOB, timeout=300).strip() == JOB_ANSWER
        assert api.execute("erin", kernel["id"], "import getpass; print(getpass.getuser())",
                           timeout=60).strip() == "erin"  # fmt: skip

        # `up` again: nothing to change, and she stays a member of the Spark group.
        again = team.cli("up", "-i", str(inv), timeout=600)
        assert again.returncode == 0, again.stderr
        assert "nothing changed" in again.stderr
        assert _in_spark_group(team, inv, "erin")

        # her server goes, and her application with it; then `sparkstack smoke`, which
        # acts as the hub's own service whatever the login, gets the cores
        status, _, _ = pinned.request("DELETE", "/hub/api/users/erin/server", token=token)
        assert status in (202, 204), status
        master_ip = team.address(f"{NAME}-master", floating=False)
        wait_for(lambda: not _master_json(master_ip)["activeapps"], timeout=120,
                 what="erin's application gone", interval=1)  # fmt: skip
        smoke = team.cli("smoke", "-i", str(inv), timeout=600)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr

    # Back to PAM: the SSO accounts leave the Spark group, the inventory's users log in.
    t = time.monotonic()
    pam = _inventory_now(team)
    back = team.cli("up", "-i", str(pam), timeout=600)
    team.timings["up: single sign-on back to PAM"] = time.monotonic() - t
    assert back.returncode == 0, back.stderr
    assert "nothing to create" in back.stdout, back.stdout
    # single sign-on's files are gone from the master, the client secret first
    assert "hub sso: changed (removed /var/lib/sparkstack-hub/oidc_client_secret," in " ".join(
        back.stderr.split()), back.stderr
    assert not _in_spark_group(team, pam, "erin")
    client_pam, *_ = team.hub_client()
    assert client_pam.login("alice", team.creds()["users"]["alice"]) == 302


def test_down_leaves_nothing(team):
    """And keeps the team's work: alice's notebook, written as alice on the master, is in
    the archive `down` makes before any server goes."""
    inv = str(team.inv_path)
    notebook = json.dumps({"cells": [], "metadata": {"kept": "by down"}, "nbformat": 4,
                           "nbformat_minor": 5})  # fmt: skip
    write = (f"printf %s {shlex.quote(notebook)} | sudo runuser -u alice -- "
             "sh -c 'umask 077; cat > /home/alice/kept-by-down.ipynb'")  # fmt: skip
    made = team.cli("ssh", "-i", inv, "--", write, timeout=120)
    assert made.returncode == 0, made.stderr
    # cli_env turns the backup off for clusters that hold no one's work; this one does.
    env = {k: v for k, v in team.env.items() if k != "SPARKSTACK_NO_BACKUP"}
    env["XDG_DATA_HOME"] = str(team.tmp / "data")
    t = time.monotonic()
    down = run_cli("down", "-i", inv, "--yes", "--json", env=env, check=False, timeout=900)
    team.timings["down with the homes' backup"] = time.monotonic() - t
    team.downed = down.returncode == 0
    assert down.returncode == 0, down.stderr
    backup = json.loads(down.stdout)["backup"]
    archive = Path(backup["archive"])
    assert archive.parent == team.tmp / "data" / "sparkstack" / NAME / "backups"
    assert archive.stat().st_mode & 0o777 == 0o600
    assert archive.parent.stat().st_mode & 0o777 == 0o700
    with tarfile.open(archive) as tar:
        saved = tar.extractfile("homes/alice/kept-by-down.ipynb")
        assert saved is not None
        assert json.loads(saved.read())["metadata"] == {"kept": "by down"}
    assert {"alice", "bob"} <= set(backup["users"])
    assert cluster_resources(team.admin, NAME) == {}
    assert not team.creds_path.exists()
    assert not (team.tmp / "config" / "sparkstack" / NAME).exists()
