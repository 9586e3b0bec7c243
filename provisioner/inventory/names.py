"""Names, tags and ports every module must agree on: ONE place, pure functions of the
cluster name, so cloud code, templates and tests can never drift apart."""

from __future__ import annotations

import re

# --- Ports the nodes use. Pinned so that security groups and firewalls can be exact, and so
# the hub's public port can be checked against them. Spark's defaults where they exist.
SPARK_MASTER_PORT = 7077
SPARK_MASTER_UI_PORT = 8080
SPARK_WORKER_PORT = 7078
SPARK_WORKER_UI_PORT = 8081
# Driver, block manager and application UI ports are the first of a range: Spark tries
# base, base+1, ... up to spark.port.maxRetries more (one per concurrent notebook/executor).
SPARK_DRIVER_PORT = 40000
SPARK_BLOCK_MANAGER_PORT = 41000
SPARK_APP_UI_PORT = 4040
SPARK_PORT_MAX_RETRIES = 100
# JupyterHub's hub API defaults to 8081, the Spark worker UI's port: moved out of the way.
HUB_API_PORT = 15001
# configurable-http-proxy's REST API (its default).
PROXY_API_PORT = 8001
# The hub's service that shows admins Spark's master and worker UIs (loopback only).
CLUSTER_UI_PORT = 15002

# The account `sparkstack smoke` creates on the master for its test, and removes again; no
# inventory user may have this name.
SMOKE_USER = "sparkstack-smoke"
# The group on the master whose members may read Spark's config there, authentication
# secret included: the spark user, the hub's users and the smoke account.
SPARK_CLIENT_GROUP = "sparkstack-spark"
# With single sign-on, the group of the accounts the hub made at its users' first login:
# how sparkstack tells them from accounts it must never hand to a login (debian, a
# service's user), and whose homes `down` backs up.
SSO_GROUP = "sparkstack-sso"
# systemd slices on the master: the hub, its proxy and the Spark master in one; every hub
# user's server (a scope each, with the user's limits) in the other, capped as a whole.
CORE_SLICE = "sparkstack-core.slice"
USERS_SLICE = "sparkstack-users.slice"
# The core's units (hub, Spark master) lower their OOM score: should the whole master run
# short, the kernel's OOM killer takes them last.
CORE_OOM_SCORE_ADJ = -500

MASTER = "master"
WORKER = "worker"

# Tags and metadata keys that say "this belongs to cluster X". Neutron filters ports,
# security groups and floating IPs by tag; Nova filters servers by tag (microversion
# >= 2.26); server groups and keypairs have no tags, their exact name is their identity.
TAG = "sparkstack"
META_CLUSTER = "sparkstack-cluster"
META_ROLE = "sparkstack-role"
META_INDEX = "sparkstack-index"
# The Heat stack a node belongs to (`render --heat`): `down` deletes the stack, `scale`
# leaves the worker count to it.
META_STACK = "sparkstack-stack"


def generated_keypair_name(cluster: str) -> str:
    """Keypair created (and deleted by `down`) when the inventory names none."""
    return f"sparkstack-{cluster}"


def security_group_name(cluster: str) -> str:
    return f"sparkstack-{cluster}"


def server_group_name(cluster: str) -> str:
    """Nova server group holding the workers' anti-affinity policy."""
    return f"sparkstack-{cluster}-workers"


def master_server_name(cluster: str) -> str:
    return f"{cluster}-master"


def worker_server_name(cluster: str, index: int) -> str:
    if index < 1:
        raise ValueError(f"worker index starts at 1, got {index}")
    return f"{workers_base_name(cluster)}-{index}"


def workers_base_name(cluster: str) -> str:
    """The name given to a multi-create POST: Nova names its servers <name>-1 ... <name>-N
    (nova/compute/api.py, _populate_instance_names), which are exactly the worker names."""
    return f"{cluster}-worker"


def worker_index_from_name(cluster: str, name: str) -> int:
    """N of <cluster>-worker-N, else 0. Servers of one multi-create share their metadata,
    so a worker's index is read from the name Nova gave it."""
    prefix = workers_base_name(cluster) + "-"
    tail = name[len(prefix):] if name.startswith(prefix) else ""
    return int(tail) if tail.isdigit() and not tail.startswith("0") else 0


def worker_index(server_name: str, cluster: str) -> int | None:
    """The index in a worker's server name, or None if it is not a worker of this cluster."""
    match = re.fullmatch(re.escape(cluster) + r"-worker-([1-9][0-9]*)", server_name)
    return int(match.group(1)) if match else None


def cluster_tag(cluster: str) -> str:
    """Tag on every resource of the cluster (Nova tags: <= 60 chars, no '/' or ',')."""
    return f"sparkstack:{cluster}"


def identity_tags(cluster: str) -> list[str]:
    return [TAG, cluster_tag(cluster)]


def identity_description(cluster: str) -> str:
    """Set in the same POST as the resource, so identity never lags behind creation."""
    return f"sparkstack cluster {cluster}"


def server_name(cluster: str, role: str, index: int) -> str:
    if role == MASTER:
        return master_server_name(cluster)
    return worker_server_name(cluster, index)


def master_port_name(cluster: str) -> str:
    return f"{cluster}-master-port"


def reserved_ports() -> dict[int, str]:
    """Ports the nodes use for Spark and the hub internals, with what uses them."""
    taken = {
        22: "SSH",
        SPARK_MASTER_PORT: "the Spark master",
        SPARK_MASTER_UI_PORT: "the Spark master web UI",
        SPARK_WORKER_PORT: "the Spark worker",
        SPARK_WORKER_UI_PORT: "the Spark worker web UI",
        HUB_API_PORT: "the hub API",
        PROXY_API_PORT: "the proxy API",
        CLUSTER_UI_PORT: "the hub's Spark UI service",
    }
    for base, what in (
        (SPARK_APP_UI_PORT, "Spark application UIs"),
        (SPARK_DRIVER_PORT, "Spark drivers"),
        (SPARK_BLOCK_MANAGER_PORT, "Spark block managers"),
    ):
        for port in range(base, base + SPARK_PORT_MAX_RETRIES + 1):
            taken[port] = what
    return taken

