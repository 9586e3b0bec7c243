"""Private homes and JupyterLab's team defaults, through real kernels of two users.

One namespace host (tests/e2e/test_hub.py's `hub_host`) gets the hub for alice and bob.
Spark does not run there: the kernels are the PySpark kernel, and only the last cell names
Spark, to see what a notebook shows when Spark does not start.
"""

from __future__ import annotations

import json
import re
import secrets

import pytest

from provisioner.errors import RemoteError
from provisioner.hub.singleuser import NOTEBOOK_OOM_SCORE_ADJ
from provisioner.hubapi import HubApi
from provisioner.render import KERNEL_STARTUP

from .conftest import wait_for
from .test_hub import HostShell, PinnedClient, _inventory, _run, hub_host  # noqa: F401

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

USERS = ("alice", "bob")

# Defined once in each kernel; each probe then prints one JSON object, and
# PermissionError is the answer looked for.
HELPERS = """\
import json, os

def attempt(action):
    try:
        return ["ok", action()]
    except PermissionError:
        return ["denied", None]

def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return oct(os.stat(path).st_mode & 0o777)

def read(path):
    with open(path) as f:
        return f.read()
"""

BOB_WRITES = """\
print(json.dumps({
    "home": write("/home/bob/notes.txt", "bob's notes"),
    "tmp": write("/tmp/from-bob.txt", "bob's scratch"),
}))
"""

ALICE_PROBES = """\
print(json.dumps({
    "list_bob": attempt(lambda: os.listdir("/home/bob")),
    "read_bob": attempt(lambda: read("/home/bob/notes.txt")),
    "read_bob_tmp": attempt(lambda: read("/tmp/from-bob.txt")),
    "write_own": attempt(lambda: write("/home/alice/mine.txt", "alice's")),
    "read_own": attempt(lambda: read("/home/alice/mine.txt")),
    "list_own": attempt(lambda: sorted(os.listdir("/home/alice"))),
    "tmp": write("/tmp/from-alice.txt", "alice's scratch"),
}))
"""

BOB_PROBES = """\
print(json.dumps({
    "list_alice": attempt(lambda: os.listdir("/home/alice")),
    "read_alice_tmp": attempt(lambda: read("/tmp/from-alice.txt")),
    "read_alice_notebook": attempt(lambda: read("/home/alice/private.ipynb")),
}))
"""

# Each process of the host: its user, its OOM score adjustment, the start of its command.
OOM_SCORES = r"""
import os, pwd
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
        user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
        adj = open(f"/proc/{pid}/oom_score_adj").read().strip()
    except (OSError, KeyError):
        continue
    print(user, adj, cmd.decode(errors="replace")[:200])
"""

# A web server in the kernel's own process, on a port of the kernel's user; prints its port.
FAKE_UI = """\
import http.server, json, threading

class _UI(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        context = self.headers.get("X-Forwarded-Context", "")
        if self.path in ("/away", "/"):  # "/" as Spark's own: without the prefix
            self.send_response(302)
            base = context if self.path == "/away" else ""
            self.send_header("Location", f"http://{self.headers['Host']}{base}/jobs/")
            self.end_headers()
            return
        body = json.dumps({"path": self.path, "context": context}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

_ui = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _UI)
threading.Thread(target=_ui.serve_forever, daemon=True).start()
print(_ui.server_address[1])
"""

NOTEBOOK = {
    "type": "notebook",
    "format": "json",
    "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
}


def _step(report, name: str):
    return next(s for s in report.steps if s.name == name)


def _modes(shell: HostShell, *paths: str) -> dict[str, str]:
    _, out, _ = shell.run("stat -c '%n %a' " + " ".join(paths))
    return dict(line.rsplit(" ", 1) for line in out.splitlines())


def _page_config(html: str) -> dict:
    found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                      html, re.S)  # fmt: skip
    assert found, html[:500]
    return json.loads(found.group(1))


def test_homes_are_private_and_lab_defaults_to_pyspark(hub_host):  # noqa: F811
    host, shell = hub_host
    ip = host.fixed_ip
    inv = _inventory(list(USERS), ["alice"])
    first = _run(shell, inv, ip)
    # Passwords of our own: the accounts may be older than this run.
    passwords = {user: secrets.token_urlsafe(15) for user in USERS}
    shell.run("chpasswd", input="".join(f"{u}:{p}\n" for u, p in passwords.items()).encode())

    # What an older sparkstack (or useradd's defaults) left: a home anyone can read.
    shell.run("chmod 0755 /home/bob")
    fixed = _run(shell, inv, ip)
    assert [s.name for s in fixed.steps if s.changed] == ["homes"], [str(s) for s in fixed.steps]
    assert "bob" in _step(fixed, "homes").detail
    again = _run(shell, inv, ip)
    assert not again.changed, [str(s) for s in again.steps if s.changed]
    assert _modes(shell, "/home/alice", "/home/bob") == {"/home/alice": "700", "/home/bob": "700"}

    client = PinnedClient(ip, 443, first.fingerprint)
    tokens = {user: client.token(user, passwords[user]) for user in USERS}
    for user in USERS:
        if client.server_ready(user, tokens[user]):  # started under an older config
            client.request("DELETE", f"/hub/api/users/{user}/server", token=tokens[user])
            wait_for(lambda u=user: not client.server_ready(u, tokens[u]), timeout=60,
                     what=f"{user}'s old server to stop")  # fmt: skip
        status, _, payload = client.request("POST", f"/hub/api/users/{user}/server",
                                             token=tokens[user])  # fmt: skip
        assert status in (201, 202), payload[:300]

    def ready(user: str) -> bool:
        try:
            return client.server_ready(user, tokens[user])
        except TimeoutError:  # a hub busy spawning on a loaded machine answers late
            return False

    for user in USERS:
        wait_for(lambda u=user: ready(u), timeout=180, what=f"{user}'s server", interval=0.5)
    api = {u: HubApi(host=ip, port=443, fingerprint=first.fingerprint, token=tokens[u])
           for u in USERS}  # fmt: skip

    # JupyterLab as the server reports it: PySpark is the only kernel and the default.
    specs = api["alice"].call("GET", "/user/alice/api/kernelspecs")
    assert specs["default"] == "pyspark"
    assert sorted(specs["kernelspecs"]) == ["pyspark"], sorted(specs["kernelspecs"])
    env = specs["kernelspecs"]["pyspark"]["spec"]["env"]
    assert "--conf spark.ui.showConsoleProgress=false" in env["PYSPARK_SUBMIT_ARGS"]
    # Spark connects in the background (kernels/pyspark/startup.py), not in shell.py.
    assert env["PYTHONSTARTUP"] == KERNEL_STARTUP and shell.read(KERNEL_STARTUP)
    notification = api["alice"].call(
        "GET", "/user/alice/lab/api/settings/@jupyterlab/apputils-extension:notification"
    )
    defaults = {k: v.get("default") for k, v in notification["schema"]["properties"].items()}
    assert defaults["fetchNews"] == "false" and defaults["checkForUpdates"] is False, defaults
    status, _, page = client.request("GET", "/user/alice/lab", token=tokens["alice"])
    assert status == 200
    assert _page_config(page.decode())["news"] == {"disabled": True}

    # A kernel opened without naming one is the PySpark kernel.
    kernels = {u: api[u].call("POST", f"/user/{u}/api/kernels", {}, expect=(201,))
               for u in USERS}  # fmt: skip
    assert {k["name"] for k in kernels.values()} == {"pyspark"}

    def run(user: str, code: str) -> dict:
        return json.loads(api[user].execute(user, kernels[user]["id"], code, timeout=120))

    for user in USERS:
        api[user].execute(user, kernels[user]["id"], HELPERS, timeout=120)

    # The OOM killer's order: everything of a user's server (it, its kernel) carries the
    # notebooks' raised score; the hub and its proxy keep the score they started with.
    _, out, _ = shell.run("python3 -", input=OOM_SCORES.encode())
    scores = [line.split(" ", 2) for line in out.splitlines()]
    alices = [adj for user, adj, _ in scores if user == "alice"]
    assert len(alices) >= 2 and set(alices) == {str(NOTEBOOK_OOM_SCORE_ADJ)}, scores
    core = [adj for user, adj, cmd in scores if user == "root" and
            ("bin/jupyterhub " in cmd or "configurable-http-proxy" in cmd)]  # fmt: skip
    assert len(core) == 2 and str(NOTEBOOK_OOM_SCORE_ADJ) not in core, scores

    # Files a kernel writes are its user's alone, even in /tmp.
    assert run("bob", BOB_WRITES) == {"home": "0o600", "tmp": "0o600"}
    alice = run("alice", ALICE_PROBES)
    assert alice["list_bob"] == ["denied", None]
    assert alice["read_bob"] == ["denied", None]
    assert alice["read_bob_tmp"] == ["denied", None]
    assert alice["write_own"] == ["ok", "0o600"]
    assert alice["read_own"] == ["ok", "alice's"]
    assert alice["list_own"][0] == "ok" and "mine.txt" in alice["list_own"][1]
    assert alice["tmp"] == "0o600"

    # A notebook saved by JupyterLab (the contents API it uses) is private too.
    api["alice"].call("PUT", "/user/alice/api/contents/private.ipynb", NOTEBOOK,
                      expect=(200, 201))  # fmt: skip
    assert _modes(shell, "/home/alice/private.ipynb") == {"/home/alice/private.ipynb": "600"}
    assert run("bob", BOB_PROBES) == {
        "list_alice": ["denied", None],
        "read_alice_tmp": ["denied", None],
        "read_alice_notebook": ["denied", None],
    }

    # Spark is not on this host: the first cell naming it shows why it did not start
    # (shell.py missing, tried twice), and `sc` says so when used, not a NameError.
    with pytest.raises(RemoteError) as failed:
        api["bob"].execute("bob", kernels["bob"]["id"], "sc.parallelize([1]).count()",
                           timeout=120)  # fmt: skip
    assert failed.value.message.startswith(
        "the kernel raised RuntimeError: Spark did not start, so there is no `sc`"
    ), failed.value.message
    assert "shell.py" in (failed.value.log_tail or ""), failed.value.log_tail
    assert "restart the kernel" in failed.value.message

    # Spark's application UIs through each user's own server (the sparkstack_sparkui
    # extension): a listener of alice's own stands for her driver's UI, answering what
    # it was asked and redirecting as Spark's Jetty does (absolute, under the prefix).
    alice_port = int(api["alice"].execute("alice", kernels["alice"]["id"], FAKE_UI, timeout=60))
    bob_port = int(api["bob"].execute("bob", kernels["bob"]["id"], FAKE_UI, timeout=60))
    prefix = f"/user/alice/sparkui/{alice_port}"
    status, _, body = client.request("GET", f"{prefix}/echo?x=1", token=tokens["alice"])
    assert status == 200, body[:300]
    assert json.loads(body) == {"path": "/echo?x=1", "context": prefix}
    for path in ("/away", "/"):
        status, headers, _ = client.request("GET", f"{prefix}{path}", token=tokens["alice"])
        assert (status, headers["Location"]) == (302, f"{prefix}/jobs/"), path
    # bob may not use alice's server at all: the hub sends him to log in, nothing served
    status, headers, body = client.request("GET", f"{prefix}/echo", token=tokens["bob"])
    assert status != 200 and b'"context"' not in body, (status, body[:300])
    # through her own server, alice reaches only ports her own processes listen on
    for port in (bob_port, 443, 22):
        status, _, body = client.request("GET", f"/user/alice/sparkui/{port}/",
                                         token=tokens["alice"])  # fmt: skip
        assert status == 404, (port, status, body[:300])
