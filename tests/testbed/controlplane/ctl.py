"""Build, start, check and stop the test bed's OpenStack control plane.

Run by up.sh / down.sh with Debian's python (/usr/bin/python3), which has the OpenStack
packages and their openstacksdk. Every step checks before it changes, so a second `up`
only confirms that each service answers and resets the test project's quotas.

Processes are started in their own session with stdout/stderr in <state>/logs/<name>.log;
<state>/run/<name>.pid holds "<pid> <starttime>" (the start time in clock ticks from
/proc/<pid>/stat), so `down` never signals a recycled pid.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import faulthandler
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import bed  # noqa: E402  (tests/testbed/bed.py: the names shared with the tests)

log = logging.getLogger("testbed")

DATABASES = (
    "keystone", "glance", "placement", "nova_api", "nova", "nova_cell0", "neutron", "heat"
)
SERVICE_USERS = ("glance", "placement", "nova", "neutron", "heat")
# Heat's own domain for the users it makes inside stacks, and its admin there.
HEAT_DOMAIN = "heat"
HEAT_DOMAIN_ADMIN = "heat_domain_admin"
START_ORDER = bed.PROCESSES


class BedError(RuntimeError):
    """A step of bringing the bed up failed; the message says which and quotes its log."""


class Paths:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.logs = state / "logs"
        self.run = state / "run"
        self.etc = state / "etc"
        self.done = state / "done"
        self.secrets = state / "secrets.json"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"


# ---------------------------------------------------------------- processes


def _starttime(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces; fields after the closing paren are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    state = fields[0]
    if state in ("Z", "X"):
        return None
    return fields[19]


def running_pid(paths: Paths, name: str) -> int | None:
    """The recorded pid of `name` if that very process is still alive."""
    try:
        pid_s, start = paths.pidfile(name).read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_s)
    return pid if _starttime(pid) == start else None


def spawn(paths: Paths, name: str, argv: list[str], *, env: dict[str, str] | None = None):
    logfile = paths.logs / f"{name}.log"
    with open(logfile, "ab") as out:
        out.write(f"\n==== {time.strftime('%F %T')} starting {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=str(paths.state),
            start_new_session=True,
        )
    start = _starttime(proc.pid)
    paths.pidfile(name).write_text(f"{proc.pid} {start}\n")
    log.info("started %s (pid %d)", name, proc.pid)
    return proc


def stop(paths: Paths, names: list[str], timeout: float = 30) -> None:
    """SIGTERM the recorded processes of `names` together, SIGKILL what outlives timeout.

    Each service leads its own process group (start_new_session), so the group is
    signalled: uwsgi workers and Erlang helpers go with their parent.
    """
    pids = {}
    for name in names:
        pid = running_pid(paths, name)
        if pid is None:
            paths.pidfile(name).unlink(missing_ok=True)
            continue
        pids[name] = pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(running_pid(paths, n) for n in pids):
        time.sleep(0.2)
    for name, pid in pids.items():
        if running_pid(paths, name) is not None:
            log.warning("%s (pid %d) ignored SIGTERM for %ss, killing it", name, pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        paths.pidfile(name).unlink(missing_ok=True)
        log.info("stopped %s (pid %d)", name, pid)


def wait_for(what: str, check, *, timeout: float, paths: Paths, name: str | None = None):
    """Wait until check() is true; fail early with the log tail if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if name and running_pid(paths, name) is None:
            raise BedError(f"{name} exited while waiting for {what}:\n{_tail(paths, name)}")
        if time.monotonic() > deadline:
            raise BedError(
                f"timed out after {timeout}s waiting for {what}\n"
                + (_tail(paths, name) if name else "")
            )
        time.sleep(0.25)


def _tail(paths: Paths, name: str, lines: int = 30) -> str:
    try:
        text = (paths.logs / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3):
            return True
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False


def run(
    argv: list[str], *, paths: Paths, name: str, env: dict | None = None, stdin: str | None = None
) -> str:
    """Run a setup command; its output goes to logs/<name>.log, and into the error."""
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    with open(paths.logs / f"{name}.log", "a") as out:
        out.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise BedError(
            f"{' '.join(argv)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc.stdout


def _digest(parts) -> str:
    """A short stable name for a set of things, for markers that must change with it."""
    return hashlib.sha256(repr(sorted(parts)).encode()).hexdigest()[:12]


def once(paths: Paths, marker: str, func) -> None:
    """Run a one-time setup step (a DB sync, a bootstrap) unless it already succeeded."""
    done = paths.done / marker
    if done.exists():
        return
    func()
    done.write_text(time.strftime("%F %T\n"))


class Timer:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    def step(self, label: str, func, *args, **kwargs):
        t0 = time.monotonic()
        result = func(*args, **kwargs)
        took = time.monotonic() - t0
        self.steps.append((label, took))
        print(f"[testbed] {label}: {took:.1f}s", flush=True)
        return result


# ---------------------------------------------------------------- configuration


def load_secrets(paths: Paths) -> dict[str, str]:
    if paths.secrets.exists():
        return json.loads(paths.secrets.read_text())
    values = {k: secrets.token_urlsafe(18) for k in ("db", "admin", "service", "user")}
    paths.secrets.write_text(json.dumps(values))
    paths.secrets.chmod(0o600)
    return values


def render_configs(paths: Paths, sec: dict[str, str]) -> None:
    tmpl_dir = HERE / "etc"

    def tmpl(name: str) -> string.Template:
        return string.Template((tmpl_dir / name).read_text())

    transport = "rabbit://guest:guest@127.0.0.1:5672/"
    common = {
        "state": str(paths.state),
        "db_password": sec["db"],
        "service_password": sec["service"],
        "transport_url": transport,
    }

    def authtoken(user: str) -> str:
        return tmpl("authtoken.ini").substitute(common, service_user=user)

    nova_clients = tmpl("nova-clients.ini").substitute(common)
    files = {
        "my.cnf": tmpl("my.cnf").substitute(common),
        "rabbitmq/rabbitmq.conf": tmpl("rabbitmq.conf").substitute(common),
        "rabbitmq/enabled_plugins": "[].\n",
        "keystone/keystone.conf": tmpl("keystone.conf").substitute(common),
        "glance/glance-api.conf": tmpl("glance-api.conf").substitute(
            common, authtoken=authtoken("glance")
        ),
        "placement/placement.conf": tmpl("placement.conf").substitute(
            common, authtoken=authtoken("placement")
        ),
        "nova/nova.conf": tmpl("nova.conf").substitute(
            common, authtoken=authtoken("nova"), nova_clients=nova_clients
        ),
        "neutron/neutron.conf": tmpl("neutron.conf").substitute(
            common, authtoken=authtoken("neutron")
        ),
        "neutron/ml2_conf.ini": tmpl("ml2_conf.ini").substitute(common),
        "heat/heat.conf": tmpl("heat.conf").substitute(common, authtoken=authtoken("heat")),
    }
    for host in bed.COMPUTE_HOSTS:
        files[f"nova/nova-compute-{host}.conf"] = tmpl("nova-compute.conf").substitute(
            common, host=host, nova_clients=nova_clients
        )
    uwsgi = {
        "keystone": (
            5000,
            "/usr/bin/keystone-wsgi-public",
            2,
            {"OS_KEYSTONE_CONFIG_DIR": str(paths.etc / "keystone")},
        ),
        "placement-api": (
            8778,
            "/usr/bin/placement-api",
            1,
            {"OS_PLACEMENT_CONFIG_DIR": str(paths.etc / "placement")},
        ),
        # nova-api takes the first file of its list as the paste config: keep it first.
        "nova-api": (
            8774,
            "/usr/bin/nova-api-wsgi",
            2,
            {
                "OS_NOVA_CONFIG_DIR": str(paths.etc / "nova"),
                "OS_NOVA_CONFIG_FILES": "/etc/nova/api-paste.ini;nova.conf",
            },
        ),
    }
    for name, (port, wsgi_file, processes, env) in uwsgi.items():
        env_lines = "\n".join(f"env = {k}={v}" for k, v in env.items())
        text = tmpl("uwsgi.ini").substitute(
            port=port, wsgi_file=wsgi_file, processes=processes, env=""
        )
        files[f"uwsgi/{name}.ini"] = text.replace("env = \n", env_lines + "\n")
    for rel, text in files.items():
        target = paths.etc / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            target.chmod(0o600)
    # The ML2 driver is visible to neutron-server only: a module plus a dist-info with
    # its entry point, in a directory put on that one process's PYTHONPATH.
    plugin = paths.state / "neutron-plugin"
    dist = plugin / "sparkstack_testbed_ml2-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / "ml2_bind_all.py", plugin / "sparkstack_testbed_ml2.py")
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sparkstack-testbed-ml2\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[neutron.ml2.mechanism_drivers]\n"
        "sparkstack_bind_all = sparkstack_testbed_ml2:BindAllMechanismDriver\n"
    )
    # The console driver is loaded by the nova-compute processes only, through a launcher
    # that adds this directory to nova.virt's path (nova imports compute_driver from
    # there). Copied only when changed: a newer file restarts nova-compute (ensure_nova).
    nova_plugin = paths.state / "nova-plugin"
    nova_plugin.mkdir(parents=True, exist_ok=True)
    for src, dst in (("nova_compute.py", "nova_compute.py"),
                     ("console_driver.py", "sparkstack_console.py")):
        _copy_if_changed(HERE / src, nova_plugin / dst)
    for sub in (
        "glance/images",
        "glance/staging",
        "glance/tasks",
        "glance/lock",
        "nova/lock",
        "neutron/lock",
        "heat/lock",
        "keystone",
        "rabbitmq",
        "logs/rabbitmq",
    ):
        (paths.state / sub).mkdir(parents=True, exist_ok=True)
    for host in bed.COMPUTE_HOSTS:
        (paths.state / "nova" / host / "instances").mkdir(parents=True, exist_ok=True)


def _copy_if_changed(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    if not dst.exists() or dst.read_bytes() != data:
        dst.write_bytes(data)


def nova_compute_files(paths: Paths, host: str) -> list[Path]:
    """What a nova-compute process reads at start: its config and the bed's driver."""
    plugin = paths.state / "nova-plugin"
    return [
        paths.etc / "nova" / f"nova-compute-{host}.conf",
        plugin / "nova_compute.py",
        plugin / "sparkstack_console.py",
    ]


def started_before_change(paths: Paths, name: str, files: list[Path]) -> bool:
    """True if the running `name` was started before one of `files` last changed."""
    if running_pid(paths, name) is None:
        return False
    started = paths.pidfile(name).stat().st_mtime
    return any(f.stat().st_mtime > started for f in files)


# ---------------------------------------------------------------- services


def ensure_mariadb(paths: Paths, sec: dict[str, str]) -> None:
    cnf = str(paths.etc / "my.cnf")
    if running_pid(paths, "mariadb") is None:
        if not (paths.state / "mysql" / "mysql").exists():
            run(
                [
                    "mariadb-install-db",
                    f"--defaults-file={cnf}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
                paths=paths,
                name="mariadb-setup",
            )
        spawn(paths, "mariadb", ["/usr/sbin/mariadbd", f"--defaults-file={cnf}"])
    wait_for(
        "mariadb",
        lambda: (paths.run / "mysqld.sock").exists() and port_open(3306),
        timeout=60,
        paths=paths,
        name="mariadb",
    )

    def create() -> None:
        sql = [f"CREATE USER IF NOT EXISTS 'testbed'@'127.0.0.1' IDENTIFIED BY '{sec['db']}';"]
        for db in DATABASES:
            sql.append(f"CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8;")
            sql.append(f"GRANT ALL PRIVILEGES ON {db}.* TO 'testbed'@'127.0.0.1';")
        run(
            ["mariadb", f"--defaults-file={cnf}", "-uroot"],
            stdin="\n".join(sql),
            paths=paths,
            name="mariadb-setup",
        )

    # The marker names the databases, so a bed made before one was added creates it.
    once(paths, "databases-" + _digest(DATABASES), create)


def rabbit_env(paths: Paths) -> dict[str, str]:
    return {
        "HOME": str(paths.state / "rabbitmq"),
        "RABBITMQ_NODENAME": "rabbit@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": "5672",
        "RABBITMQ_DIST_PORT": "25672",
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_EPMD_PORT": "4369",
        "RABBITMQ_CONFIG_FILE": str(paths.etc / "rabbitmq" / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(paths.etc / "rabbitmq" / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(paths.state / "rabbitmq" / "mnesia"),
        "RABBITMQ_LOG_BASE": str(paths.logs / "rabbitmq"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_PID_FILE": str(paths.run / "rabbitmq.self.pid"),
        # epmd is started (and recorded) by the bed; Erlang must not spawn its own.
        "RABBITMQ_SERVER_ERL_ARGS": "+P 1048576 -kernel inet_dist_use_interface {127,0,0,1}",
        "RABBITMQ_SERVER_START_ARGS": "-start_epmd false",
    }


def ensure_rabbitmq(paths: Paths) -> None:
    if running_pid(paths, "epmd") is None and not port_open(4369):
        spawn(paths, "epmd", ["epmd", "-address", "127.0.0.1", "-port", "4369"])
        wait_for("epmd", lambda: port_open(4369), timeout=20, paths=paths, name="epmd")
    if running_pid(paths, "rabbitmq") is None:
        spawn(paths, "rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env=rabbit_env(paths))
    wait_for("rabbitmq", lambda: port_open(5672), timeout=120, paths=paths, name="rabbitmq")


def start_uwsgi(paths: Paths, name: str, port: int) -> None:
    if running_pid(paths, name) is None:
        spawn(paths, name, ["uwsgi", "--ini", str(paths.etc / "uwsgi" / f"{name}.ini")])
    wait_for(
        name, lambda: http_answers(f"http://127.0.0.1:{port}/"), timeout=300, paths=paths, name=name
    )


def ensure_keystone(paths: Paths, sec: dict[str, str]) -> None:
    conf = ["--config-file", str(paths.etc / "keystone" / "keystone.conf")]
    once(
        paths,
        "keystone-db",
        lambda: run(["keystone-manage", *conf, "db_sync"], paths=paths, name="keystone-setup"),
    )

    def keys() -> None:
        for what in ("fernet_setup", "credential_setup"):
            run(
                [
                    "keystone-manage",
                    *conf,
                    what,
                    "--keystone-user",
                    "root",
                    "--keystone-group",
                    "root",
                ],
                paths=paths,
                name="keystone-setup",
            )

    once(paths, "keystone-keys", keys)
    url = bed.endpoints()["identity"]
    once(
        paths,
        "keystone-bootstrap",
        lambda: run(
            [
                "keystone-manage",
                *conf,
                "bootstrap",
                "--bootstrap-password",
                sec["admin"],
                "--bootstrap-admin-url",
                url,
                "--bootstrap-internal-url",
                url,
                "--bootstrap-public-url",
                url,
                "--bootstrap-region-id",
                bed.REGION,
            ],
            paths=paths,
            name="keystone-setup",
        ),
    )
    start_uwsgi(paths, "keystone", 5000)


def ensure_glance(paths: Paths) -> None:
    conf = str(paths.etc / "glance" / "glance-api.conf")
    once(
        paths,
        "glance-db",
        lambda: run(
            ["glance-manage", "--config-file", conf, "db_sync"], paths=paths, name="glance-setup"
        ),
    )
    if running_pid(paths, "glance-api") is None:
        spawn(paths, "glance-api", ["glance-api", "--config-file", conf])
    wait_for(
        "glance-api",
        lambda: http_answers("http://127.0.0.1:9292/"),
        timeout=300,
        paths=paths,
        name="glance-api",
    )


def ensure_placement(paths: Paths) -> None:
    env = {"OS_PLACEMENT_CONFIG_DIR": str(paths.etc / "placement")}
    once(
        paths,
        "placement-db",
        lambda: run(
            [
                "placement-manage",
                "--config-file",
                str(paths.etc / "placement" / "placement.conf"),
                "db",
                "sync",
            ],
            paths=paths,
            name="placement-setup",
            env=env,
        ),
    )
    start_uwsgi(paths, "placement-api", 8778)


def ensure_nova(paths: Paths) -> None:
    conf = ["--config-file", str(paths.etc / "nova" / "nova.conf")]
    once(
        paths,
        "nova-api-db",
        lambda: run(["nova-manage", *conf, "api_db", "sync"], paths=paths, name="nova-setup"),
    )
    once(
        paths,
        "nova-cell0",
        lambda: run(["nova-manage", *conf, "cell_v2", "map_cell0"], paths=paths, name="nova-setup"),
    )
    once(
        paths,
        "nova-cell1",
        lambda: run(
            ["nova-manage", *conf, "cell_v2", "create_cell", "--name", "cell1"],
            paths=paths,
            name="nova-setup",
        ),
    )
    once(
        paths,
        "nova-db",
        lambda: run(["nova-manage", *conf, "db", "sync"], paths=paths, name="nova-setup"),
    )
    for name in ("nova-conductor", "nova-scheduler"):
        if running_pid(paths, name) is None:
            spawn(paths, name, [name, *conf])
    # A nova-compute started with an older config or driver is restarted so the change
    # takes effect. FakeDriver's instances live in memory: servers it ran are gone from
    # the hypervisor afterwards, as after down.sh + up.sh.
    stale = [
        f"nova-compute-{host}"
        for host in bed.COMPUTE_HOSTS
        if started_before_change(paths, f"nova-compute-{host}", nova_compute_files(paths, host))
    ]
    if stale:
        log.info("restarting %s: config or console driver changed", ", ".join(stale))
        stop(paths, stale)
    for host in bed.COMPUTE_HOSTS:
        name = f"nova-compute-{host}"
        if running_pid(paths, name) is None:
            spawn(
                paths,
                name,
                [
                    "/usr/bin/python3",
                    str(paths.state / "nova-plugin" / "nova_compute.py"),
                    "--config-file",
                    str(paths.etc / "nova" / f"{name}.conf"),
                ],
            )
    start_uwsgi(paths, "nova-api", 8774)


def ensure_heat(paths: Paths) -> None:
    conf = ["--config-file", str(paths.etc / "heat" / "heat.conf")]
    once(
        paths,
        "heat-db",
        lambda: run(["heat-manage", *conf, "db_sync"], paths=paths, name="heat-setup"),
    )
    for name in ("heat-engine", "heat-api"):
        if running_pid(paths, name) is None:
            spawn(paths, name, [name, *conf])
    wait_for(
        "heat-api",
        lambda: http_answers("http://127.0.0.1:8004/"),
        timeout=300,
        paths=paths,
        name="heat-api",
    )


def ensure_neutron(paths: Paths) -> None:
    conf = [
        "--config-file",
        str(paths.etc / "neutron" / "neutron.conf"),
        "--config-file",
        str(paths.etc / "neutron" / "ml2_conf.ini"),
    ]
    once(
        paths,
        "neutron-db",
        lambda: run(
            ["neutron-db-manage", *conf, "upgrade", "heads"], paths=paths, name="neutron-setup"
        ),
    )
    if running_pid(paths, "neutron-server") is None:
        spawn(
            paths,
            "neutron-server",
            ["neutron-server", *conf],
            env={"PYTHONPATH": str(paths.state / "neutron-plugin")},
        )
    wait_for(
        "neutron-server",
        lambda: http_answers("http://127.0.0.1:9696/"),
        timeout=300,
        paths=paths,
        name="neutron-server",
    )


# ---------------------------------------------------------------- catalog and project


def admin_conn(sec: dict[str, str], project: str = bed.ADMIN_PROJECT):
    import openstack

    return openstack.connect(
        auth_url=bed.endpoints()["identity"],
        username=bed.ADMIN_USER,
        password=sec["admin"],
        project_name=project,
        user_domain_name="Default",
        project_domain_name="Default",
        region_name=bed.REGION,
        identity_api_version="3",
    )


def ensure_catalog(paths: Paths, sec: dict[str, str]) -> None:
    conn = admin_conn(sec)
    ident = conn.identity
    service_project = ident.find_project("service") or ident.create_project(
        name="service", domain_id="default"
    )
    admin_role = ident.find_role("admin")
    member_role = ident.find_role("member")
    for user_name in SERVICE_USERS:
        user = ident.find_user(user_name, domain_id="default")
        if user is None:
            user = ident.create_user(name=user_name, password=sec["service"], domain_id="default")
        ident.assign_project_role_to_user(service_project, user, admin_role)
    _ensure_heat_domain(ident, sec)
    names = {
        "image": "glance",
        "placement": "placement",
        "compute": "nova",
        "network": "neutron",
        "orchestration": "heat",
    }
    for stype, url in bed.endpoints().items():
        if stype == "identity":
            continue
        svc = next(iter(ident.services(type=stype)), None) or ident.create_service(
            name=names[stype], type=stype, enabled=True
        )
        existing = {e.interface: e for e in ident.endpoints(service_id=svc.id)}
        for interface in ("public", "internal", "admin"):
            if interface in existing:
                if existing[interface].url != url:
                    ident.update_endpoint(existing[interface], url=url)
                continue
            ident.create_endpoint(
                service_id=svc.id, interface=interface, url=url, region_id=bed.REGION
            )
    project = ident.find_project(bed.PROJECT, domain_id="default") or ident.create_project(
        name=bed.PROJECT, domain_id="default", description="sparkstack cloud tests"
    )
    user = ident.find_user(bed.USER, domain_id="default")
    if user is None:
        user = ident.create_user(
            name=bed.USER, password=sec["user"], domain_id="default", default_project_id=project.id
        )
    ident.assign_project_role_to_user(project, user, member_role)
    # The admin also gets a role on the test project, so cleanup and checks can scope to it.
    ident.assign_project_role_to_user(project, ident.find_user(bed.ADMIN_USER), admin_role)


def _ensure_heat_domain(ident, sec: dict[str, str]) -> None:
    """What Heat needs in keystone beyond its service user: a domain for the users it makes
    inside stacks, that domain's admin, and the role those users get (heat_stack_user;
    Heat's policy denies that role everything but signalling)."""
    domain = ident.find_domain(HEAT_DOMAIN) or ident.create_domain(
        name=HEAT_DOMAIN, description="users Heat creates inside stacks"
    )
    admin = ident.find_user(HEAT_DOMAIN_ADMIN, domain_id=domain.id)
    if admin is None:
        admin = ident.create_user(
            name=HEAT_DOMAIN_ADMIN, password=sec["service"], domain_id=domain.id
        )
    ident.assign_domain_role_to_user(domain, admin, ident.find_role("admin"))
    if ident.find_role("heat_stack_user") is None:
        ident.create_role(name="heat_stack_user")


def ensure_keystone_and_catalog(paths: Paths, sec: dict[str, str]) -> None:
    ensure_keystone(paths, sec)
    catalog = (*SERVICE_USERS, *bed.endpoints().values(), HEAT_DOMAIN, HEAT_DOMAIN_ADMIN)
    once(paths, "catalog-" + _digest(catalog), lambda: ensure_catalog(paths, sec))


def write_clouds_yaml(paths: Paths, sec: dict[str, str]) -> None:
    def cloud(user: str, project: str, password: str) -> dict:
        return {
            "auth": {
                "auth_url": bed.endpoints()["identity"],
                "username": user,
                "password": password,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": bed.REGION,
            "interface": "public",
            "identity_api_version": 3,
        }

    data = {
        "clouds": {
            bed.ADMIN_CLOUD: cloud(bed.ADMIN_USER, bed.ADMIN_PROJECT, sec["admin"]),
            bed.USER_CLOUD: cloud(bed.USER, bed.PROJECT, sec["user"]),
        }
    }
    # JSON is valid YAML, and Debian's python may lack nothing here to emit it.
    target = bed.clouds_yaml_path()
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.chmod(0o644)
    tmp.replace(target)


def _utc_epoch(timestamp: str | None) -> float:
    """Nova's naive UTC timestamps ("2026-12-01T10:00:00.000000") as epoch seconds."""
    if not timestamp:
        return 0.0
    stamp = datetime.datetime.fromisoformat(timestamp.rstrip("Z"))
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


def wait_compute_hosts(conn, paths: Paths, timeout: float = 120) -> None:
    """Wait until every compute host is up, reported by the process running now.

    A restarted nova-compute counts as up on its predecessor's last report for a minute;
    only a report newer than the current process's start shows that it runs and that its
    driver loaded.
    """
    deadline = time.monotonic() + timeout
    want = set(bed.COMPUTE_HOSTS)

    def started(host: str) -> float:
        try:
            # DB timestamps have whole seconds: allow for the truncation.
            return paths.pidfile(f"nova-compute-{host}").stat().st_mtime - 1
        except OSError:
            return 0.0

    while True:
        up = {
            s.host
            for s in conn.compute.services(binary="nova-compute")
            if s.state == "up"
            and s.status == "enabled"
            and _utc_epoch(s.updated_at) >= started(s.host)
        }
        if want <= up:
            return
        if time.monotonic() > deadline:
            raise BedError(f"compute hosts not up after {timeout}s: missing {want - up}")
        time.sleep(1)


def ensure_project_resources(paths: Paths, sec: dict[str, str]) -> None:
    conn = admin_conn(sec)
    project = conn.identity.find_project(bed.PROJECT, domain_id="default")

    # -- compute hosts: registered, mapped into cell1, visible to placement
    wait_compute_hosts(conn, paths)
    hypervisors = {h.name for h in conn.compute.hypervisors()}
    if not set(bed.COMPUTE_HOSTS) <= hypervisors or not (paths.done / "hosts-mapped").exists():
        run(
            [
                "nova-manage",
                "--config-file",
                str(paths.etc / "nova" / "nova.conf"),
                "cell_v2",
                "discover_hosts",
            ],
            paths=paths,
            name="nova-setup",
        )
        (paths.done / "hosts-mapped").write_text("")

    # -- flavors
    flavors = {f.name: f for f in conn.compute.flavors(is_public=None)}
    for name, (vcpus, ram, disk) in bed.FLAVORS.items():
        if name not in flavors:
            conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk, is_public=True)

    # -- images: a few bytes are enough, nothing boots them; the hosts bed reads the
    # stock images' property to pick the rootfs a server's namespace host boots from
    images = {bed.IMAGE["name"]: {**bed.IMAGE, "properties": {}}, **bed.STOCK_IMAGES}
    for name, spec in images.items():
        image = conn.image.find_image(name)
        if image is not None and image.status != "active":
            conn.image.delete_image(image)
            image = None
        if image is None:
            conn.image.create_image(
                name=name,
                data=b"sparkstack test image\n",
                disk_format="raw",
                container_format="bare",
                visibility="public",
                min_disk=spec["min_disk"],
                min_ram=spec["min_ram"],
                allow_duplicates=True,
                **spec["properties"],
            )

    # -- networks
    net = conn.network
    pub = net.find_network(bed.PUBLIC_NET["name"])
    if pub is None:
        pub = net.create_network(
            name=bed.PUBLIC_NET["name"],
            is_router_external=True,
            provider_network_type="flat",
            provider_physical_network=bed.PUBLIC_NET["physical_network"],
        )
    pub_subnet = net.find_subnet(bed.PUBLIC_NET["subnet"])
    if pub_subnet is None:
        start, end = bed.PUBLIC_NET["pool"]
        pub_subnet = net.create_subnet(
            name=bed.PUBLIC_NET["subnet"],
            network_id=pub.id,
            ip_version=4,
            cidr=bed.PUBLIC_NET["cidr"],
            gateway_ip=bed.PUBLIC_NET["gateway"],
            allocation_pools=[{"start": start, "end": end}],
            is_dhcp_enabled=False,
        )
    priv = net.find_network(bed.PRIVATE_NET["name"], project_id=project.id)
    if priv is None:
        priv = net.create_network(name=bed.PRIVATE_NET["name"], project_id=project.id)
    priv_subnet = net.find_subnet(bed.PRIVATE_NET["subnet"], project_id=project.id)
    if priv_subnet is None:
        start, end = bed.PRIVATE_NET["pool"]
        priv_subnet = net.create_subnet(
            name=bed.PRIVATE_NET["subnet"],
            network_id=priv.id,
            project_id=project.id,
            ip_version=4,
            cidr=bed.PRIVATE_NET["cidr"],
            gateway_ip=bed.PRIVATE_NET["gateway"],
            allocation_pools=[{"start": start, "end": end}],
            is_dhcp_enabled=False,
        )
    router = net.find_router(bed.ROUTER, project_id=project.id)
    if router is None:
        router = net.create_router(
            name=bed.ROUTER, project_id=project.id, external_gateway_info={"network_id": pub.id}
        )
    ports = list(net.ports(device_id=router.id, network_id=priv.id))
    if not ports:
        net.add_interface_to_router(router, subnet_id=priv_subnet.id)

    # -- quotas, reset on every run: a test that lowered one and crashed is undone here
    conn.set_compute_quotas(project.id, **bed.QUOTAS["compute"])
    conn.set_network_quotas(project.id, **bed.QUOTAS["network"])


# ---------------------------------------------------------------- commands


def cmd_up(paths: Paths) -> None:
    t_all = time.monotonic()
    timer = Timer()
    for d in (paths.state, paths.logs, paths.run, paths.etc, paths.done):
        d.mkdir(parents=True, exist_ok=True)
    paths.state.chmod(0o755)
    sec = load_secrets(paths)
    timer.step("configs", render_configs, paths, sec)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for f in [
            pool.submit(timer.step, "mariadb", ensure_mariadb, paths, sec),
            pool.submit(timer.step, "rabbitmq", ensure_rabbitmq, paths),
        ]:
            f.result()
    timer.step("keystone + catalog", ensure_keystone_and_catalog, paths, sec)
    # The other services' DB migrations are the slow part of a cold start; run each
    # service's chain (migrate, start, wait) side by side. They start after the catalog:
    # nova-conductor and nova-scheduler exit if their service users cannot log in yet.
    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        futures = [
            pool.submit(timer.step, "glance", ensure_glance, paths),
            pool.submit(timer.step, "placement", ensure_placement, paths),
            pool.submit(timer.step, "nova", ensure_nova, paths),
            pool.submit(timer.step, "neutron", ensure_neutron, paths),
            pool.submit(timer.step, "heat", ensure_heat, paths),
        ]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise BedError("\n\n".join(str(e) for e in errors))
    timer.step("project resources", ensure_project_resources, paths, sec)
    timer.step("clouds.yaml", write_clouds_yaml, paths, sec)
    print(
        f"[testbed] up in {time.monotonic() - t_all:.1f}s; clouds.yaml: "
        f"{bed.clouds_yaml_path()} (clouds {bed.ADMIN_CLOUD}, {bed.USER_CLOUD})",
        flush=True,
    )


def cmd_down(paths: Paths) -> None:
    # OpenStack services all at once, then the message bus, then the database they use.
    infra = ("rabbitmq", "epmd", "mariadb")
    stop(paths, [n for n in reversed(START_ORDER) if n not in infra])
    stop(paths, ["rabbitmq"])
    stop(paths, ["epmd"])
    stop(paths, ["mariadb"])


def cmd_status(paths: Paths) -> int:
    bad = 0
    for name in START_ORDER:
        pid = running_pid(paths, name)
        print(f"{name:28} {'pid ' + str(pid) if pid else 'not running'}")
        bad += pid is None
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[testbed] %(message)s")
    if os.geteuid() != 0:
        print("the test bed must be run as root", file=sys.stderr)
        return 2
    # `kill -USR1 <pid>` prints every thread's stack: the way to see where an up hangs.
    faulthandler.register(signal.SIGUSR1)
    paths = Paths(bed.state_dir())
    try:
        if args.command == "up":
            cmd_up(paths)
        elif args.command == "down":
            cmd_down(paths)
        else:
            return cmd_status(paths)
    except BedError as exc:
        print(f"[testbed] FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
