"""What Nova and Neutron allow at once is done at once, and nothing is waited for that
need not be, on the real OpenStack bed.

The overlap tests hold one request back in the fault proxy until another one arrives (or
a generous deadline passes): if the second waits for the first to be answered, it never
arrives while the first is held, and the test sees that. Nothing here measures time; the
speed it buys is in bench/up_vs_floor.py.
"""

# ruff: noqa: F811  (pytest fixtures imported from the test bed are named as arguments)
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner import workflows
from provisioner.cloud import ClusterCloud, connect
from provisioner.inventory import load_inventory
from tests.cloud.test_workflows import FAST, cluster_resources, user_data_for, write_inventory
from tests.testbed import bed
from tests.testbed.faultproxy import FaultProxy, RequestRecord
from tests.testbed.fixtures import Testbed, clean_project, testbed  # noqa: F401

pytestmark = pytest.mark.cloud

# How long a held request waits for the one it should overlap with: far longer than any
# request of the bed takes, so only a request that is never sent meanwhile runs it out.
DEADLINE_S = 20.0

renderer: Callable[[Any], Any] = user_data_for  # typed here, untyped where it lives


@pytest.fixture
def proxy(clean_project: Testbed, tmp_path: Path) -> Iterator[FaultProxy]:
    with FaultProxy(upstreams=clean_project.endpoints) as p:
        p.yaml = tmp_path / "proxied-clouds.yaml"  # type: ignore[attr-defined]
        p.write_clouds_yaml(
            dest=p.yaml,  # type: ignore[attr-defined]
            source=clean_project.clouds_yaml,
            cloud=bed.USER_CLOUD,
            name="proxied",
        )
        yield p


@pytest.fixture(autouse=True)
def _xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def proxied(proxy: FaultProxy, cluster: str) -> ClusterCloud:
    with pytest.MonkeyPatch.context() as m:
        m.setenv("OS_CLIENT_CONFIG_FILE", str(proxy.yaml))  # type: ignore[attr-defined]
        conn = connect("proxied")
    return ClusterCloud(conn, cluster=cluster)


class Overlap:
    """Hold the first `held` request until every one of `awaited` has arrived."""

    def __init__(self, proxy: FaultProxy, *, held: tuple[str, str], awaited: list[tuple[str, str]]):
        self.arrived = [threading.Event() for _ in awaited]
        self.overlapped: bool | None = None
        for (method, path), event in zip(awaited, self.arrived, strict=True):
            proxy.at_request(nth=1, method=method, path=path, action=event.set)
        method, path = held
        proxy.at_request(nth=1, method=method, path=path, action=self._wait)

    def _wait(self) -> None:
        self.overlapped = all(e.wait(DEADLINE_S) for e in self.arrived)


def index_of(records: list[RequestRecord], method: str, path: str) -> list[int]:
    return [i for i, r in enumerate(records) if r.method == method and r.path == path]


def test_down_releases_port_group_and_keypair_beside_the_servers(
    proxy: FaultProxy, clean_project: Testbed, tmp_path: Path
) -> None:
    inv = load_inventory(write_inventory(tmp_path / "ov1.toml", name="ov1", workers=1))
    direct = ClusterCloud(clean_project.user(), cluster="ov1")
    workflows.up(inv, cloud=direct, user_data=renderer(inv), settings=FAST)

    overlap = Overlap(
        proxy,
        held=("DELETE", r"/v2\.1/servers/"),
        awaited=[
            ("DELETE", r"/v2\.0/ports/"),
            ("DELETE", r"/os-server-groups/"),
            ("DELETE", r"/os-keypairs/"),
            ("DELETE", r"/v2\.0/floatingips/"),
        ],
    )
    proxy.reset_counts()
    result = workflows.down(inv, cloud=proxied(proxy, "ov1"), settings=FAST)

    assert overlap.overlapped, "port, server group, keypair or floating IP waited for a server"
    assert cluster_resources(clean_project.admin(), "ov1") == {}
    assert len(result.deleted) >= 7  # 2 servers, IP, port, group, keypair, security group
    # the security group only once the servers (and so their ports) are gone
    records = proxy.records()
    sg = index_of(records, "DELETE", "/v2.0/security-groups/{id}")
    polls = index_of(records, "GET", "/v2.1/servers/detail")
    assert sg and polls and min(sg) > max(polls)


def test_up_makes_the_master_port_beside_keypair_and_group(
    proxy: FaultProxy, clean_project: Testbed, tmp_path: Path
) -> None:
    inv = load_inventory(write_inventory(tmp_path / "ov2.toml", name="ov2", workers=1))
    cloud = proxied(proxy, "ov2")
    overlap = Overlap(
        proxy,
        held=("POST", r"/os-keypairs"),
        awaited=[("POST", r"/v2\.0/ports")],
    )
    tags_then_rules = Overlap(
        proxy,
        held=("PUT", r"/v2\.0/security-groups/[^/]+/tags"),
        awaited=[("POST", r"/v2\.0/security-group-rules")],
    )
    try:
        workflows.up(inv, cloud=cloud, user_data=renderer(inv), settings=FAST)
        assert overlap.overlapped, "the master port waited for the keypair"
        assert tags_then_rules.overlapped, "the security group's rules waited for its tags"
        obs = ClusterCloud(clean_project.user(), cluster="ov2").observe()
        assert {n.status for n in obs.nodes} == {"ACTIVE"} and len(obs.nodes) == 2
        assert obs.master_port and obs.attached_ip and obs.security_group and obs.keypair
    finally:
        workflows.down(inv, cloud=ClusterCloud(clean_project.user(), cluster="ov2"), settings=FAST)
    assert cluster_resources(clean_project.admin(), "ov2") == {}


def test_down_takes_a_server_listed_deleted_as_gone(
    proxy: FaultProxy, clean_project: Testbed, tmp_path: Path
) -> None:
    """Nova lists a server DELETED for a moment after its ports are gone and before it
    leaves the list; the proxy stretches that moment to the whole wait. `down` need not
    wait for the row to go (nothing is created next): it goes on to the security group."""
    inv = load_inventory(write_inventory(tmp_path / "ov3.toml", name="ov3", workers=1))
    direct = ClusterCloud(clean_project.user(), cluster="ov3")
    workflows.up(inv, cloud=direct, user_data=renderer(inv), settings=FAST)

    seen: dict[str, dict[str, Any]] = {}

    def linger(body: Any) -> Any:
        listed = body.get("servers", [])
        seen.update({s["id"]: s for s in listed if s.get("status") != "DELETED"})
        missing = seen.keys() - {s["id"] for s in listed}
        return dict(body, servers=listed + [dict(seen[i], status="DELETED") for i in missing])

    proxy.rewrite_json(change=linger, method="GET", path=r"/servers/detail")
    # far shorter than FAST's: before, the wait ran out on the lingering rows and failed
    settings = dataclasses.replace(FAST, delete_timeout=DEADLINE_S)
    workflows.down(inv, cloud=proxied(proxy, "ov3"), settings=settings)
    assert cluster_resources(clean_project.admin(), "ov3") == {}
