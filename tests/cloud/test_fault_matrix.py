"""Faults of every kind `up` meets on a real cloud, through the fault proxy in front of the
test bed's real OpenStack APIs: a 500 on each kind of create in turn, a server that stays
in BUILD, a server that goes to ERROR with Nova's fault message, and a cloud that cannot
be reached at all (a closed port; a port that accepts and never answers)."""

# ruff: noqa: F811  (pytest fixtures imported from the test bed are named as arguments)
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from provisioner import workflows
from provisioner.errors import CloudError
from provisioner.inventory import load_inventory
from tests.cloud.test_workflows import (
    FAST,
    cli_env,
    cluster_resources,
    run_cli,
    user_data_for,
    write_inventory,
)
from tests.cloud.test_workflows_faults import (
    _xdg,  # noqa: F401
    assert_complete,
    direct_cloud,
    proxied_cloud,
    proxy,  # noqa: F401
)
from tests.testbed import bed
from tests.testbed.faultproxy import FaultProxy
from tests.testbed.fixtures import clean_project, testbed  # noqa: F401
from tests.waiting import wait_until

pytestmark = pytest.mark.cloud

# Every create `up` sends, by the request that makes it.
CREATES = {
    "security group": r"^/v2\.0/security-groups$",
    "security group rules": r"^/v2\.0/security-group-rules$",
    "keypair": r"^/v2\.1/os-keypairs$",
    "server group": r"^/v2\.1/os-server-groups$",
    "port": r"^/v2\.0/ports$",
    "server": r"^/v2\.1/servers$",
    "floating IP": r"^/v2\.0/floatingips$",
}


def test_a_500_on_each_kind_of_create_in_turn_converges_and_down_cleans(clean_project, tmp_path):
    """The cloud did nothing and answered 500: `up` retries what is safe to repeat (it
    looks before creating again) and ends with a complete cluster, exit 0."""

    def one(kind: str) -> list[str]:
        name = f"fail{list(CREATES).index(kind)}"
        # A master alone makes every create but the server group's (workers need it).
        workers = 1 if kind == "server group" else 0
        inv_path = write_inventory(
            tmp_path / f"{name}.toml", name=name, workers=workers, cloud="proxied"
        )
        with FaultProxy(upstreams=clean_project.endpoints) as p:
            yaml = tmp_path / f"{name}-clouds.yaml"
            p.write_clouds_yaml(dest=yaml, source=clean_project.clouds_yaml, name="proxied")
            p.script(method="POST", path=CREATES[kind], status=500)
            proc = run_cli(
                "up", "-i", str(inv_path), "--until", "servers", env=cli_env(tmp_path, yaml),
                check=False,
            )  # fmt: skip
            problems = []
            if p.pending_rules():
                problems.append(f"the 500 never fired:\n{p.summary()}")
            if proc.returncode != 0:
                problems.append(f"up exit {proc.returncode}:\n{proc.stderr[-1500:]}")
            if "Traceback" in proc.stderr:
                problems.append("a traceback in stderr")
            inv = load_inventory(inv_path)
            try:
                assert_complete(direct_cloud(clean_project, inv), workers)
            except AssertionError as exc:
                problems.append(f"not complete: {exc}")
            workflows.down(inv, cloud=direct_cloud(clean_project, inv), settings=FAST)
            left = cluster_resources(clean_project.admin(), name)
            return problems + ([f"down left {left}"] if left else [])

    with cf.ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(CREATES, pool.map(one, CREATES), strict=True))
    failures = [f"500 on the {k} create: {x}" for k, xs in results.items() for x in xs]
    assert not failures, "\n".join(failures)


def servers_listed(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, dict):
        return doc.get("servers") or ([doc["server"]] if "server" in doc else [])
    return []


def as_if(name: str, **fields: Any) -> Callable[[Any], Any]:
    """A rewrite of Nova's answers: the server `name` listed with `fields` instead."""

    def change(doc: Any) -> Any:
        for server in servers_listed(doc):
            if server.get("name") == name:
                server.update(fields)
        return doc

    return change


def with_member(cluster: str, member: str) -> Callable[[Any], Any]:
    """A rewrite of Nova's answers: the cluster's server group listed with one more member."""

    def change(doc: Any) -> Any:
        if not isinstance(doc, dict):
            return doc
        groups = doc.get("server_groups") or [doc.get("server_group") or {}]
        for group in groups:
            if group.get("name") == f"sparkstack-{cluster}-workers":
                group["members"] = [*group.get("members", []), member]
        return doc

    return change


def test_a_server_stuck_in_build_is_a_clear_error_naming_it_and_down_cleans(
    proxy, clean_project, tmp_path
):
    inv = load_inventory(write_inventory(tmp_path / "inv.toml", name="stuck", workers=1))
    cloud = proxied_cloud(proxy, inv)
    # Nova has it ACTIVE; every answer the client sees says BUILD.
    proxy.rewrite_json(method="GET", path=r"^/v2\.1/servers", change=as_if(
        "stuck-worker-1", status="BUILD", **{"OS-EXT-STS:vm_state": "building"}
    ))  # fmt: skip
    quick = dataclasses.replace(FAST, active_timeout=8)
    started = time.monotonic()
    with pytest.raises(CloudError) as err:
        workflows.up(inv, cloud=cloud, user_data=user_data_for(inv), settings=quick)
    assert time.monotonic() - started < 60
    text = err.value.render()
    assert "servers not ACTIVE after 8s" in text and "stuck-worker-1: BUILD" in text, text
    assert "stuck-master" not in text  # only the one that is late is named
    # down through the same lie: the server is deleted and waited for by its id
    workflows.down(inv, cloud=cloud, settings=FAST)
    assert cluster_resources(clean_project.admin(), "stuck") == {}


def test_a_server_in_error_is_replaced_and_past_the_budget_the_error_quotes_the_fault(
    proxy, clean_project, tmp_path
):
    inv = load_inventory(write_inventory(tmp_path / "inv.toml", name="broke", workers=1))
    cloud = proxied_cloud(proxy, inv)
    fault = {"code": 500, "message": "No valid host was found. There are not enough hosts"}
    rewrite = proxy.rewrite_json(
        method="GET", path=r"^/v2\.1/servers", change=as_if(
            "broke-worker-1", status="ERROR", fault=fault,
            **{"OS-EXT-STS:vm_state": "error"},
        ),
    )  # fmt: skip
    budget = dataclasses.replace(FAST, replace_budget=2)
    with pytest.raises(CloudError) as err:
        workflows.up(inv, cloud=cloud, user_data=user_data_for(inv), settings=budget)
    text = " ".join(err.value.render().split())
    assert "broke-worker-1" in text and "gave up after 2 attempts" in text, text
    assert "No valid host was found" in text, text  # Nova's fault, quoted
    assert rewrite.applied > 0
    # both servers that went to "ERROR" were deleted, not left to pile up
    pid = bed.project_id(clean_project.admin())

    def workers_left() -> list[str]:
        servers = clean_project.admin().compute.servers(all_projects=True, project_id=pid)
        return [s.id for s in servers if s.name == "broke-worker-1"]

    wait_until(lambda: not workers_left(), timeout=60, interval=0.5,
               what="the ERROR servers' deletion", on_timeout=lambda: str(workers_left()))
    assert proxy.total(method="POST", path="/v2.1/servers") == 3  # master + 2 attempts

    proxy.clear_rules()  # the cloud recovers: the next `up` completes the cluster
    # Nova keeps a worker deleted while it was being scheduled among its group's members
    # until the conductor is done with it (seen once in CI, seconds after the server list
    # forgot it). That stale member is the one Nova no longer finds: make it certain.
    ghost = str(uuid.uuid4())
    stale = proxy.rewrite_json(
        method="GET", path=r"^/v2\.1/os-server-groups", change=with_member("broke", ghost)
    )
    workflows.up(inv, cloud=cloud, user_data=user_data_for(inv), settings=FAST)
    assert stale.applied > 0
    assert_complete(direct_cloud(clean_project, inv), 1)
    workflows.down(inv, cloud=cloud, settings=FAST)
    assert cluster_resources(clean_project.admin(), "broke") == {}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_an_unreachable_cloud_exits_3_naming_the_endpoint_in_bounded_time(
    kind, request, testbed, tmp_path
):
    port = request.getfixturevalue(f"{kind}_port")
    auth_url = f"http://127.0.0.1:{port}/v3"
    yaml = testbed.write_clouds_yaml(
        tmp_path / "clouds.yaml", auth_url=auth_url, clouds=[bed.USER_CLOUD]
    )
    env = cli_env(tmp_path, yaml)
    # Seconds, so the test is quick; the defaults are 60 per request and 120 of retries.
    env.update(SPARKSTACK_API_TIMEOUT="2", SPARKSTACK_API_RETRY_FOR="4")
    inv = write_inventory(tmp_path / "inv.toml", name="nocloud")
    for command in (["up", "-i", str(inv)], ["down", "-i", str(inv), "--yes"]):
        started = time.monotonic()
        proc = run_cli(*command, env=env, check=False, timeout=120)
        took = time.monotonic() - started
        err = " ".join(proc.stderr.split())
        assert proc.returncode == 3, proc.stderr
        assert f"http://127.0.0.1:{port}/v3" in err, err  # the endpoint, named
        assert "check the auth_url" in err, err
        assert "Traceback" not in proc.stderr
        assert took < 40, f"{command[0]} took {took:.0f}s"
