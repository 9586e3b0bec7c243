"""JupyterHub installed for real by provisioner.hub on one namespace host, no OpenStack.

The host boots from the test rootfs with an empty cloud-config; the hub steps reach it
through a root shell that enters the host's namespaces (what SSH as root would be on a
VM). Users then talk to the hub over HTTPS from this machine, pinning the self-signed
certificate by the fingerprint the steps returned.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import shlex
import ssl
import subprocess
import urllib.parse
import uuid
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import tomllib

from provisioner.errors import RemoteError, UserInputError
from provisioner.hub import HubSettings, ensure_hub
from provisioner.hub.steps import KERNEL_PATH
from provisioner.hub.tls import cert_problem
from provisioner.inventory import Inventory, load_inventory
from provisioner.workflows.users import list_users, reset_password
from tests.testbed.fixtures import bed_required, cannot_run_reason
from tests.testbed.hosts import hosts, mirror, rootfs

from .conftest import wait_for

pytestmark = [pytest.mark.hosts, pytest.mark.slow]
log = logging.getLogger(__name__)

INVENTORY = Path(__file__).resolve().parents[1] / "testbed" / "inventory.testbed.toml"
# The top of the bed's private range: Neutron's pool reaches it last, if ever.
CANDIDATE_IPS = [f"10.77.0.{n}" for n in range(240, 251)]


# --- A root shell inside a namespace host -----------------------------------------------


class HostShell:
    """Satisfies provisioner.hub.Shell: /bin/sh as root in the host's namespaces, cgroups
    and root directory (the bed's `hosts.enter`), with a clean environment like an SSH
    login's."""

    def __init__(self, host: hosts.Host) -> None:
        self.host = host.name
        self.host_record = host

    def _exec(self, command: str, *, input: bytes | None, timeout: float | None
              ) -> tuple[int, bytes, bytes]:
        try:
            proc = hosts.enter(self.host_record, "/bin/sh", "-c", command, input=input or b"",
                               timeout=timeout or 300)
        except subprocess.TimeoutExpired as exc:
            raise RemoteError(f"command did not finish in {timeout} s: {command[:80]}",
                              resource=self.host) from exc
        except hosts.HostError as exc:
            raise RemoteError(str(exc), resource=self.host) from exc
        return proc.returncode, proc.stdout, proc.stderr

    def run(self, command: str, *, input: bytes | None = None, timeout: float | None = None,
            check: bool = True) -> tuple[int, str, str]:
        status, out, err = self._exec(command, input=input, timeout=timeout)
        if check and status != 0:
            raise RemoteError(f"`{command[:120]}` failed with exit status {status}",
                              resource=self.host, log_tail=err.decode(errors="replace"))
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    # The temporary file is made by mktemp (0600, root) beside the target and only then
    # filled; its final owner and mode are set before it replaces the target.
    _PUT = (
        'set -eu\ndst=$1; mode=$2; owner=$3\n'
        'tmp=$(mktemp "$(dirname "$dst")/.e2e-put.XXXXXX")\n'
        "trap 'rm -f \"$tmp\"' EXIT\n"
        'cat >"$tmp"\nchown "$owner" "$tmp"\nchmod "$mode" "$tmp"\n'
        'if [ -f "$dst" ] && cmp -s "$tmp" "$dst" &&'
        ' [ "$(stat -c "%a %U:%G" "$tmp")" = "$(stat -c "%a %U:%G" "$dst")" ]; then\n'
        '  echo same\nelse\n  mv -f "$tmp" "$dst"; trap - EXIT; echo changed\nfi\n'
    )

    def put(self, path: str, data: bytes, *, mode: int, owner: str, group: str) -> bool:
        args = " ".join(shlex.quote(a) for a in (path, format(mode, "o"), f"{owner}:{group}"))
        command = f"sh -c {shlex.quote(self._PUT)} put {args}"
        _, out, _ = self.run(command, input=data)
        return out.strip() == "changed"

    def read(self, path: str) -> bytes | None:
        quoted = shlex.quote(path)
        status, out, err = self._exec(f"[ -e {quoted} ] || exit 3; cat {quoted}", input=None,
                                      timeout=60)
        if status == 3:
            return None
        if status != 0:
            raise RemoteError(f"cannot read {path}", resource=self.host,
                              log_tail=err.decode(errors="replace"))
        return out


# --- An HTTPS client that pins the hub's certificate -------------------------------------


class PinnedClient:
    """HTTP over TLS to one address, accepting only the certificate with `fingerprint`;
    keeps cookies like a browser session."""

    def __init__(self, address: str, port: int, fingerprint: str) -> None:
        self.address, self.port = address, port
        self.fingerprint = fingerprint.replace(":", "").lower()
        self.cookies: dict[str, str] = {}
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # No CA vouches for a self-signed certificate: the pin below is the check.
        self._ctx.check_hostname = False
        self._ctx.verify_mode = ssl.CERT_NONE

    def request(self, method: str, path: str, *, form: dict | None = None,
                body: dict | None = None, token: str | None = None,
                ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPSConnection(self.address, self.port, context=self._ctx,
                                           timeout=30)
        try:
            conn.connect()
            der = conn.sock.getpeercert(binary_form=True)
            served = hashlib.sha256(der).hexdigest()
            assert served == self.fingerprint, f"certificate {served} is not the pinned one"
            headers = {}
            data = None
            if form is not None:
                data = urllib.parse.urlencode(form).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            elif body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            if token:
                headers["Authorization"] = f"token {token}"
            elif self.cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            for header in resp.headers.get_all("Set-Cookie") or []:
                jar = SimpleCookie()
                jar.load(header)
                self.cookies.update({k: m.value for k, m in jar.items()})
            return resp.status, resp.headers, payload
        finally:
            conn.close()

    def login(self, user: str, password: str) -> int:
        """The browser's login: the form's _xsrf cookie, then the POST; 302 means in."""
        self.cookies.clear()
        status, _, _ = self.request("GET", "/hub/login")
        assert status == 200 and "_xsrf" in self.cookies, status
        status, headers, _ = self.request(
            "POST", "/hub/login",
            form={"username": user, "password": password, "_xsrf": self.cookies["_xsrf"]},
        )
        if status == 302:
            assert "/hub/login" not in headers.get("Location", ""), headers.get("Location")
        return status

    def token(self, user: str, password: str) -> str:
        status, _, payload = self.request(
            "POST", f"/hub/api/users/{user}/tokens",
            body={"auth": {"username": user, "password": password}, "note": "e2e",
                  "expires_in": 3600},
        )
        assert status in (200, 201), (status, payload[:300])
        return json.loads(payload)["token"]

    def server_ready(self, user: str, token: str) -> bool:
        status, _, payload = self.request("GET", f"/hub/api/users/{user}", token=token)
        assert status == 200, (status, payload[:300])
        return bool(json.loads(payload)["servers"].get("", {}).get("ready"))


# --- The host -------------------------------------------------------------------------------


def _skip_or_fail(reason: str) -> None:
    if bed_required():
        pytest.fail(f"hub e2e test is required here but {reason}", pytrace=False)
    pytest.skip(reason)


def host_images() -> tuple[Path, Path]:
    """The bed's rootfs and Spark tarball, which a hub host is made from; without them
    (or without what namespace hosts need) the test skips, or fails where the bed is
    required."""
    reason = cannot_run_reason()
    if reason:
        _skip_or_fail(reason)
    image = rootfs.rootfs_path()
    tarball = mirror.tarball_path(mirror.DEFAULT_VERSION)
    if not (image / "etc/os-release").exists() or not tarball.exists():
        _skip_or_fail("no test rootfs or Spark tarball: run "
                      "`python3 -m tests.testbed.hosts.hostbed build`")
    return image, tarball


def spark_unpack(host: hosts.Host, tarball: Path, *members: str) -> str:
    """A shell command that unpacks Spark from the bed's tarball into the host's
    /opt/spark (only the `members`, shell patterns, if any): what the node's bootstrap
    installs from the mirror. Run it with `in_host_mounts`."""
    spark = f"{host.dir}/root/opt/spark"
    only = "".join(f" --wildcards {shlex.quote(m)}" for m in members)
    return f"mkdir -p {spark} && tar -xzf {tarball} -C {spark} --strip-components=1{only}"


def in_host_mounts(host: hosts.Host, command: str) -> None:
    """`command` in the host's mount namespace, where its root is mounted at
    <host.dir>/root, but with this machine's root: how files go in from outside."""
    pid = wait_for(lambda: hosts.init_pid(host), timeout=10, what="the host's PID 1")
    subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "sh", "-c", command],
                   check=True, capture_output=True, timeout=300)


# The namespace host of the hub tests: (host, its shell, server id, state dir).
_SHARED: dict[str, tuple[hosts.Host, HostShell, str, Path]] = {}


def _boot_hub_host() -> tuple[hosts.Host, HostShell, str, Path]:
    image, tarball = host_images()
    hosts.ensure_bridge()
    # A state dir of its own: the bed's hypervisor kills every host in the shared one
    # that has no Nova server, and this one has none.
    state_dir = hosts.default_state_dir().parent / "e2e-hub"
    server_id = f"{uuid.uuid4().hex[:8]}-e2e-hub"
    ip = hosts.free_ip(CANDIDATE_IPS)
    host = hosts.boot_host("e2e-hub", server_id, fixed_ip=ip, user_data="#cloud-config\n",
                           public_keys=[], rootfs=image, state_dir=state_dir)
    try:
        boot_log = host.file("/var/log/testbed-boot.log")
        wait_for(lambda: boot_log.exists() and "booted:" in boot_log.read_text(),
                 timeout=120, what="the host's boot",
                 on_timeout=lambda: boot_log.read_text() if boot_log.exists() else "")
        # The hub needs only Spark's py4j zip.
        in_host_mounts(host, spark_unpack(host, tarball, "*/python/lib/py4j-*-src.zip"))
    except BaseException:
        hosts.kill_host(server_id, state_dir=state_dir)
        raise
    return host, HostShell(host), server_id, state_dir


def release_hub_host() -> None:
    """Stop the shared hub host, if there is one (tests/e2e/conftest.py calls this once the
    next test does not ask for it, and at the end of the session)."""
    shared = _SHARED.pop("host", None)
    if shared is not None:
        hosts.kill_host(shared[2], state_dir=shared[3])


@pytest.fixture
def hub_host(request: pytest.FixtureRequest) -> tuple[hosts.Host, HostShell]:
    """A namespace host for the hub, shared by consecutive tests that ask for it: booting
    it and installing the hub is most of such a test's time, so each test takes the host
    as the one before left it and installs what it needs (ensure_hub reconciles). A test
    marked `fresh_hub_host` gets a host no test used."""
    if request.node.get_closest_marker("fresh_hub_host"):
        release_hub_host()
    if "host" not in _SHARED:
        _SHARED["host"] = _boot_hub_host()
    host, shell, _, _ = _SHARED["host"]
    return host, shell


def _inventory(users: list[str], admins: list[str]) -> Inventory:
    inv = load_inventory(INVENTORY)
    hub = inv.jupyterhub.model_copy(update={"users": users, "admins": admins})
    return inv.model_copy(update={"jupyterhub": hub})


def _hub_pid(shell: HostShell) -> str:
    _, out, _ = shell.run("pgrep -o -f 'venv/bin/jupyterhub --config'", check=False)
    return out.strip()


def _run(shell: HostShell, inv: Inventory, ip: str):
    settings = HubSettings.from_inventory(inv, master_ip=ip)
    return ensure_hub(shell, settings, inv=inv, ready_timeout=120)


@pytest.mark.fresh_hub_host
def test_hub_installs_reconciles_and_serves_users_over_https(hub_host, record_property,
                                                             monkeypatch, tmp_path):
    host, shell = hub_host
    ip = host.fixed_ip

    first = _run(shell, _inventory(["alice", "bob"], ["alice"]), ip)
    assert first.changed
    assert sorted(first.passwords) == ["alice", "bob"]
    assert {s.name for s in first.steps if s.changed} >= {"dirs", "secrets", "tls", "users",
                                                           "kernel", "config", "service"}
    hub_pid = _hub_pid(shell)
    assert hub_pid

    second = _run(shell, _inventory(["alice", "bob"], ["alice"]), ip)
    assert not second.changed, [str(s) for s in second.steps if s.changed]
    assert second.passwords == {} and second.fingerprint == first.fingerprint
    assert _hub_pid(shell) == hub_pid, "the hub was restarted although nothing changed"
    record_property("hub_first_run_s", round(first.seconds, 1))
    record_property("hub_second_run_s", round(second.seconds, 1))
    log.warning("hub: first run %.1f s, second run %.1f s", first.seconds, second.seconds)

    # What the hub reads is root's alone.
    _, modes, _ = shell.run("stat -c '%a %U %n' /var/lib/sparkstack-hub"
                            " /var/lib/sparkstack-hub/jupyterhub_cookie_secret"
                            " /var/lib/sparkstack-hub/proxy_auth_token"
                            " /etc/sparkstack-hub/tls/hub.key")
    assert [line.split()[:2] for line in modes.splitlines()] == [["700", "root"]] + [
        ["600", "root"]] * 3
    # The certificate served is for this host's address, not just any self-signed one.
    assert cert_problem(shell.read("/etc/sparkstack-hub/tls/hub.crt"), addresses=[ip]) is None
    kernel = json.loads(shell.read(KERNEL_PATH))
    py4j = kernel["env"]["PYTHONPATH"].split(":")[1]
    assert py4j.startswith("/opt/spark/python/lib/py4j-") and shell.read(py4j)
    assert f"spark://{ip}:7077" in kernel["env"]["PYSPARK_SUBMIT_ARGS"]

    client = PinnedClient(ip, 443, first.fingerprint)
    assert client.login("alice", first.passwords["alice"]) == 302
    assert client.login("alice", "not-her-password") == 403
    alice = client.token("alice", first.passwords["alice"])
    status, _, payload = client.request("POST", "/hub/api/users/alice/server", token=alice)
    assert status in (201, 202), payload[:300]
    wait_for(lambda: client.server_ready("alice", alice), timeout=120,
             what="alice's server", interval=0.5)
    status, _, _ = client.request("GET", "/user/alice/api/status", token=alice)
    assert status == 200
    assert shell.run("pgrep -u alice -f jupyterhub-singleuser", check=False)[0] == 0
    bob = client.token("bob", first.passwords["bob"])
    status, _, payload = client.request("POST", "/hub/api/users/bob/server", token=bob)
    assert status in (201, 202), payload[:300]
    wait_for(lambda: client.server_ready("bob", bob), timeout=120,
             what="bob's server", interval=0.5)
    # and a job of his own outside the server, as one started from a JupyterLab terminal
    shell.run("setsid runuser -u bob -- sleep 3600 </dev/null >/dev/null 2>&1 &")
    assert shell.run("pgrep -u bob -f jupyterhub-singleuser", check=False)[0] == 0
    assert shell.run("pgrep -u bob -x sleep", check=False)[0] == 0

    # bob leaves, carol arrives.
    third = _run(shell, _inventory(["alice", "carol"], ["alice"]), ip)
    assert list(third.passwords) == ["carol"]
    users = next(s for s in third.steps if s.name == "users")
    assert users.former == ("bob",)
    former = next(s for s in third.steps if s.name == "former users")
    assert former.changed and former.detail == "stopped bob", str(former)
    # Nothing runs as bob any more, and the hub no longer counts a server of his.
    assert shell.run("pgrep -u bob", check=False)[0] == 1
    wait_for(lambda: _servers(client, "bob", alice) == {}, timeout=60,
             what="bob's server gone from the hub", interval=1)
    assert client.login("carol", third.passwords["carol"]) == 302
    assert client.login("bob", first.passwords["bob"]) == 403
    # His token still names him, but carries no permission any more.
    status, _, payload = client.request("POST", "/hub/api/users/bob/server", token=bob)
    assert status == 403, (status, payload[:300])
    status, _, payload = client.request("GET", "/hub/api/users/bob", token=bob)
    assert status in (403, 404), (status, payload[:300])
    assert shell.run("test -d /home/bob")[0] == 0
    # The restart for carol left alice's notebook server running.
    assert client.server_ready("alice", alice)

    # The next run finds nothing of bob's to stop, and changes nothing.
    fourth = _run(shell, _inventory(["alice", "carol"], ["alice"]), ip)
    assert not fourth.changed, [str(s) for s in fourth.steps if s.changed]
    assert "former users: unchanged (nothing running as bob)" in map(str, fourth.steps)

    # `sparkstack users reset` and `users list`, as the commands run them (their SSH
    # part is `sparkstack hub`'s), with this host's root shell for the master's.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    inv = _inventory(["alice", "carol"], ["alice"])
    settings = HubSettings.from_inventory(inv, master_ip=ip)
    done = reset_password(shell, inv=inv, settings=settings, name="carol")
    assert done.password not in (third.passwords["carol"], "")
    assert client.login("carol", done.password) == 302
    assert client.login("carol", third.passwords["carol"]) == 403
    assert done.credentials.stat().st_mode & 0o777 == 0o600
    creds = tomllib.loads(done.credentials.read_text())
    assert creds["users"] == {"carol": done.password}
    assert creds["hub_certificate_sha256"] == first.fingerprint
    with pytest.raises(UserInputError, match="'bob' is not a hub user"):
        reset_password(shell, inv=inv, settings=settings, name="bob")
    assert client.login("bob", first.passwords["bob"]) == 403
    listed = {u.name: u for u in list_users(shell, inv=inv, settings=settings)}
    assert [(n, u.role, u.account, u.password_kept) for n, u in listed.items()] == [
        ("alice", "admin", True, False), ("carol", "user", True, True),
        ("bob", "former", True, False)]
    assert listed["alice"].processes > 0 and listed["bob"].processes == 0


def _servers(client: PinnedClient, user: str, token: str) -> dict:
    status, _, payload = client.request("GET", f"/hub/api/users/{user}", token=token)
    assert status == 200, (status, payload[:300])
    return json.loads(payload)["servers"]
