"""Where the local OpenStack test bed lives and how tests reach it.

One module holds the bed's names and numbers so the scripts that build the bed
(controlplane/ctl.py, run by Debian's python) and the tests (project python) cannot drift
apart. It only uses the standard library at import time; openstacksdk and yaml are
imported inside the functions that need them, because ctl.py imports this module before
those packages are installed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/sparkstack-testbed"
ADMIN_CLOUD = "sparkstack-admin"
USER_CLOUD = "sparkstack-test"
PROJECT = "sparkstack-test"
USER = "sparkstack-user"
ADMIN_USER = "admin"
ADMIN_PROJECT = "admin"
REGION = "RegionOne"
HOST = "127.0.0.1"

# service type -> (port, path of the catalog URL)
SERVICES = {
    "identity": (5000, "/v3"),
    "image": (9292, ""),
    "placement": (8778, ""),
    "compute": (8774, "/v2.1"),
    "network": (9696, ""),
    # Heat's URL carries the project; keystone fills it in per token.
    "orchestration": (8004, "/v1/%(project_id)s"),
}

COMPUTE_HOSTS = ("compute-1", "compute-2", "compute-3")

# Every process up.sh starts, in start order (down.sh stops them in reverse).
PROCESSES = (
    "mariadb",
    "epmd",
    "rabbitmq",
    "keystone",
    "glance-api",
    "placement-api",
    "nova-conductor",
    "nova-scheduler",
    "nova-api",
    *(f"nova-compute-{h}" for h in COMPUTE_HOSTS),
    "neutron-server",
    "heat-engine",
    "heat-api",
)

IMAGE = {"name": "debian-12", "min_disk": 1, "min_ram": 512}
# Images whose servers the hosts bed boots from a stock Debian tree (nothing pre-installed:
# nodes install at boot through the bed's mirrors); the property names the tree.
STOCK_IMAGES = {
    "debian-12-stock": {"min_disk": 1, "min_ram": 512,
                        "properties": {"sparkstack_testbed_rootfs": "stock-bookworm"}},
    "debian-13-stock": {"min_disk": 1, "min_ram": 512,
                        "properties": {"sparkstack_testbed_rootfs": "stock-trixie"}},
}

# name -> (vcpus, ram MB, disk GB)
FLAVORS = {
    "m1.tiny": (1, 512, 1),
    "m1.small": (1, 2048, 10),
    "m1.medium": (2, 4096, 20),
    "m1.large": (4, 8192, 40),
}

PRIVATE_NET = {
    "name": "private",
    "subnet": "private-subnet",
    "cidr": "10.77.0.0/24",
    "gateway": "10.77.0.1",
    "pool": ("10.77.0.10", "10.77.0.250"),
}
PUBLIC_NET = {
    "name": "public",
    "subnet": "public-subnet",
    "cidr": "10.78.0.0/24",
    "gateway": "10.78.0.1",
    "pool": ("10.78.0.10", "10.78.0.250"),
    "physical_network": "public",
}
ROUTER = "router"

# Large enough for a master + 50 workers of any flavor above, with room for a second cluster.
QUOTAS = {
    "compute": {
        "instances": 60,
        "cores": 400,
        "ram": 600000,
        "server_groups": 10,
        "server_group_members": 60,
        "key_pairs": 100,
    },
    "network": {
        "ports": 200,
        "floatingip": 10,
        "security_group": 20,
        "security_group_rule": 200,
        "network": 20,
        "subnet": 20,
        "router": 10,
    },
}


def state_dir() -> Path:
    """The bed's state directory: env SPARKSTACK_TESTBED_DIR, else the default."""
    return Path(os.environ.get("SPARKSTACK_TESTBED_DIR") or DEFAULT_STATE_DIR)


def clouds_yaml_path() -> Path:
    return state_dir() / "clouds.yaml"


def controlplane_dir() -> Path:
    return Path(__file__).resolve().parent / "controlplane"


def endpoints() -> dict[str, str]:
    """The real URL of each service as registered in the catalog, by service type."""
    return {st: f"http://{HOST}:{port}{path}" for st, (port, path) in SERVICES.items()}


def process_alive(name: str) -> bool:
    """True if the process up.sh recorded for `name` is still that process.

    The pid file holds "<pid> <starttime>"; a pid reused by another program has another
    start time (field 22 of /proc/<pid>/stat).
    """
    try:
        pid, start = (state_dir() / "run" / f"{name}.pid").read_text().split()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] not in ("Z", "X") and fields[19] == start


def _answers(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        # 401/300 from an API root still means the service is up and speaking HTTP.
        return True
    except OSError:
        return False


def is_healthy(timeout: float = 3.0) -> bool:
    """True when every recorded process runs, every API answers and clouds.yaml exists.

    Anything less is not healthy, and up.sh then starts what is missing.
    """
    if not clouds_yaml_path().exists():
        return False
    if not all(process_alive(name) for name in PROCESSES):
        return False
    return all(_answers(f"http://{HOST}:{port}/", timeout) for port, _ in SERVICES.values())


def up(*, log_file: Path | None = None, timeout: float = 1800) -> float:
    """Run controlplane/up.sh (install, configure, start, provision); return seconds taken.

    Output goes to log_file (default <state>/logs/up.log) so a failure can quote its tail.
    """
    log_file = log_file or state_dir() / "logs" / "up.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_file, "ab") as out:
        proc = subprocess.run(
            [str(controlplane_dir() / "up.sh")],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(
            f"test bed up.sh failed with exit {proc.returncode}; see {log_file}:\n"
            + "\n".join(tail)
        )
    return time.monotonic() - started


def down() -> None:
    """Run controlplane/down.sh: stop only the processes up.sh started."""
    subprocess.run([str(controlplane_dir() / "down.sh")], check=True)


def read_clouds(path: Path | None = None) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((path or clouds_yaml_path()).read_text())


def write_clouds_yaml(
    path: Path | str,
    *,
    endpoint_overrides: dict[str, str] | None = None,
    auth_url: str | None = None,
    clouds: list[str] | None = None,
) -> Path:
    """Write a copy of the bed's clouds.yaml, e.g. one that routes through a proxy.

    endpoint_overrides maps a service type ("compute", "network", ...) to the URL clients
    should use instead of the catalog's; auth_url replaces keystone's for authentication.
    openstacksdk reads these as `<service_type>_endpoint_override` keys of a cloud.
    """
    import yaml

    src = read_clouds()["clouds"]
    wanted = clouds or list(src)
    out: dict[str, Any] = {}
    for name in wanted:
        cloud = json.loads(json.dumps(src[name]))
        if auth_url:
            cloud["auth"]["auth_url"] = auth_url
        for service_type, url in (endpoint_overrides or {}).items():
            cloud[f"{service_type}_endpoint_override"] = url
        out[name] = cloud
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"clouds": out}, sort_keys=False))
    path.chmod(0o600)
    return path


def connect(cloud: str, *, config_file: Path | str | None = None, **kwargs: Any):
    """An openstacksdk Connection to one of the bed's clouds, read from its clouds.yaml."""
    import openstack.config

    # load_envvars=False: OS_CLIENT_CONFIG_FILE (exported by the testbed fixture) would
    # otherwise be read before config_files and shadow a proxied clouds.yaml given here.
    config = openstack.config.OpenStackConfig(
        config_files=[str(config_file or clouds_yaml_path())], load_envvars=False
    )
    region = config.get_one(cloud=cloud, **kwargs)
    import openstack.connection

    return openstack.connection.Connection(config=region)


def admin_connection(**kwargs: Any):
    return connect(ADMIN_CLOUD, **kwargs)


def user_connection(**kwargs: Any):
    return connect(USER_CLOUD, **kwargs)


def project_id(admin_conn) -> str:
    return admin_conn.identity.find_project(PROJECT, ignore_missing=False).id


def user_id(admin_conn) -> str:
    return admin_conn.identity.find_user(USER, ignore_missing=False).id


@dataclass
class ProjectSnapshot:
    """Ids of what the test project holds, by kind (what cleanup compares against)."""

    ids: dict[str, set[str]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    group_of: dict[str, str] = field(default_factory=dict)  # rule id -> security group id

    def new_since(self, before: ProjectSnapshot) -> dict[str, set[str]]:
        return {
            kind: ids - before.ids.get(kind, set())
            for kind, ids in self.ids.items()
            if ids - before.ids.get(kind, set())
        }


def snapshot_project(admin_conn) -> ProjectSnapshot:
    """What the test project (and its user's keypairs) hold right now."""
    pid = project_id(admin_conn)
    uid = user_id(admin_conn)
    snap = ProjectSnapshot()

    def add(kind: str, items) -> None:
        snap.ids[kind] = set()
        for item in items:
            snap.ids[kind].add(item.id)
            snap.names[item.id] = item.name or ""

    # Heat lists a project's stacks to that project only (its global index is denied to
    # everybody by default): ask as the admin scoped to the test project.
    add("stack", admin_conn.connect_as_project(PROJECT).orchestration.stacks())
    add("server", admin_conn.compute.servers(all_projects=True, project_id=pid))
    # The project's own images (server snapshots, whatever their status); the bed's
    # public base images belong to the admin project.
    add("image", admin_conn.image.images(owner=pid))
    add("floating_ip", admin_conn.network.ips(project_id=pid))
    add(
        "port",
        (
            p
            for p in admin_conn.network.ports(project_id=pid)
            if not (p.device_owner or "").startswith("network:")
        ),
    )
    add(
        "security_group",
        (sg for sg in admin_conn.network.security_groups(project_id=pid) if sg.name != "default"),
    )
    # Rules too, the default group's included: a rule added to a group the project
    # already had outlives every cluster resource.
    snap.ids["security_group_rule"] = set()
    for rule in admin_conn.network.security_group_rules(project_id=pid):
        snap.ids["security_group_rule"].add(rule.id)
        snap.group_of[rule.id] = rule.security_group_id
        port = f" {rule.port_range_min}-{rule.port_range_max}" if rule.port_range_min else ""
        snap.names[rule.id] = (
            f"{rule.direction} {rule.protocol or 'any'}{port}"
            f" from {rule.remote_ip_prefix or rule.remote_group_id or 'any'}"
            f" in group {rule.security_group_id}"
        )
    # The server-group API has no project filter: list all, keep the project's.
    add(
        "server_group",
        (g for g in admin_conn.compute.server_groups(all_projects=True) if g.project_id == pid),
    )
    # Keypairs belong to a user, not a project: list the test user's.
    snap.ids["keypair"] = set()
    for kp in admin_conn.compute.keypairs(user_id=uid):
        snap.ids["keypair"].add(kp.name)
        snap.names[kp.name] = kp.name
    return snap


def describe_new(now: ProjectSnapshot, before: ProjectSnapshot) -> list[str]:
    """ "kind id (name)" of each thing in `now` and not in `before`; the rules of a new
    security group are part of it and not listed on their own."""
    new = now.new_since(before)
    new_groups = new.get("security_group", set())
    return [
        f"{kind} {rid}"
        + (f" ({now.names[rid]})" if now.names.get(rid) not in (None, "", rid) else "")
        for kind in CLEANUP_ORDER
        for rid in sorted(new.get(kind, ()))
        if not (kind == "security_group_rule" and now.group_of.get(rid) in new_groups)
    ]


CLEANUP_ORDER = (
    "stack",
    "server",
    "image",
    "floating_ip",
    "port",
    "security_group_rule",
    "security_group",
    "server_group",
    "keypair",
)


def cleanup_project(
    admin_conn, *, keep: ProjectSnapshot | None = None, timeout: float = 120
) -> list[str]:
    """Delete what the test project holds beyond `keep`; return "kind id name" of each.

    Servers go first and are waited for, because their ports and floating IPs cannot be
    removed while attached; security groups last, because ports use them.
    """
    keep = keep or ProjectSnapshot()
    extra = snapshot_project(admin_conn)
    new = extra.new_since(keep)
    deleted = describe_new(extra, keep)
    uid = user_id(admin_conn)
    deadline = time.monotonic() + timeout
    # A stack first, through Heat, which deletes what it made; what it leaves (or a stack
    # that fails to delete) the resource kinds below pick up.
    orchestration = admin_conn.connect_as_project(PROJECT).orchestration
    for stack_id in new.get("stack", ()):
        orchestration.delete_stack(stack_id, ignore_missing=True)
    for stack_id in new.get("stack", ()):
        stack = orchestration.find_stack(stack_id, ignore_missing=True)
        if stack is not None:
            orchestration.wait_for_delete(
                stack, interval=1, wait=max(1, int(deadline - time.monotonic()))
            )
    extra = snapshot_project(admin_conn)
    new = extra.new_since(keep)
    for sid in new.get("server", ()):
        admin_conn.compute.delete_server(sid, ignore_missing=True)
    for sid in new.get("server", ()):
        server = admin_conn.compute.find_server(sid, all_projects=True)
        if server is not None:
            admin_conn.compute.wait_for_delete(
                server, interval=1, wait=max(1, int(deadline - time.monotonic()))
            )
    # After the servers: a snapshot still uploading from one is gone with it.
    for iid in new.get("image", ()):
        admin_conn.image.delete_image(iid, ignore_missing=True)
    for fid in new.get("floating_ip", ()):
        admin_conn.network.delete_ip(fid, ignore_missing=True)
    for port_id in new.get("port", ()):
        admin_conn.network.delete_port(port_id, ignore_missing=True)
    # A new group's rules go with it; a rule added to an older group is deleted itself.
    for rule_id in new.get("security_group_rule", ()):
        admin_conn.network.delete_security_group_rule(rule_id, ignore_missing=True)
    for sgid in new.get("security_group", ()):
        admin_conn.network.delete_security_group(sgid, ignore_missing=True)
    for gid in new.get("server_group", ()):
        admin_conn.compute.delete_server_group(gid, ignore_missing=True)
    for name in new.get("keypair", ()):
        admin_conn.compute.delete_keypair(name, ignore_missing=True, user_id=uid)
    return deleted


def reset_quotas(admin_conn) -> None:
    """Put the test project's quotas back to QUOTAS (tests that lower one call this)."""
    pid = project_id(admin_conn)
    admin_conn.set_compute_quotas(pid, **QUOTAS["compute"])
    admin_conn.set_network_quotas(pid, **QUOTAS["network"])
