"""The converger, driven by a scripted stand-in of the cloud edge: ERROR replacement within
a budget, duplicate resolution, lost create answers, Ctrl-C. Fast: no cloud, no sleeping."""

from __future__ import annotations

import threading

import pytest

from provisioner import plan as P
from provisioner.errors import CloudError
from provisioner.workflows.context import Reporter, Settings
from provisioner.workflows.converge import Converger
from tests.unit.scripted_cloud import Boot, LostAnswer, ScriptedCloud

FAST = Settings(max_parallel=4, replace_budget=3, poll_min=0.001, poll_max=0.01,
                active_timeout=5, delete_timeout=5)  # fmt: skip


class Recorder(Reporter):
    def __init__(self) -> None:
        self.steps: list[str] = []

    def step(self, text: str) -> None:
        self.steps.append(text)


def spec(name: str, role: str = "worker", index: int = 1) -> P.CreateServer:
    return P.CreateServer(name=name, role=role, index=index, flavor="m1.tiny")


def converger(cloud: ScriptedCloud, reporter: Reporter | None = None) -> Converger:
    def create(s: P.CreateServer) -> str:
        return cloud.create_server(name=s.name, role=s.role, index=s.index)

    return Converger(cloud=cloud, reporter=reporter or Reporter(), settings=FAST, create=create)


def test_creates_everything_and_waits_until_active():
    cloud = ScriptedCloud()
    creates = [spec("c1-master", "master", 0), spec("c1-worker-1"), spec("c1-worker-2", index=2)]
    nodes = converger(cloud).run(creates=creates, watch=[c.name for c in creates])
    assert [n.status for n in nodes] == ["ACTIVE"] * 3
    assert sorted(cloud.posts()) == ["c1-master", "c1-worker-1", "c1-worker-2"]


def test_error_is_deleted_and_recreated_within_the_budget():
    cloud = ScriptedCloud(script={"c1-worker-1": [Boot(("BUILD", "ERROR"), fault="No valid host")]})
    reporter = Recorder()
    conv = converger(cloud, reporter)
    nodes = conv.run(creates=[spec("c1-worker-1")], watch=[])
    assert nodes[0].status == "ACTIVE"
    assert cloud.posts() == ["c1-worker-1", "c1-worker-1"]
    changes = [c for c in cloud.calls if c[0] != "list_nodes"]
    # the ERROR server is deleted before its replacement is created (quota, and one name)
    assert changes == [
        ("create_server", "c1-worker-1"),
        ("delete_server", "c1-worker-1"),
        ("create_server", "c1-worker-1"),
    ]
    assert cloud.names() == ["c1-worker-1"]
    assert any("No valid host" in s and "replacing" in s for s in reporter.steps)


def test_budget_exhausted_is_an_error_naming_the_node():
    always_error = [Boot(("ERROR",), fault="boom")] * 5
    cloud = ScriptedCloud(script={"c1-worker-2": always_error})
    with pytest.raises(CloudError) as err:
        converger(cloud).run(creates=[spec("c1-worker-2", index=2)], watch=[])
    assert err.value.resource == "c1-worker-2"
    assert "gave up after 3 attempts" in err.value.message
    assert cloud.posts() == ["c1-worker-2"] * 3


def test_duplicates_keep_the_lowest_ranked_and_delete_the_rest():
    cloud = ScriptedCloud()
    older = cloud.add("c1-worker-1", "worker", 1, status="ACTIVE")
    newer = cloud.add("c1-worker-1", "worker", 1, status="BUILD")
    nodes = converger(cloud).run(creates=[], watch=["c1-worker-1"])
    assert nodes[0].id == older.id  # ACTIVE first, then the oldest: what the planner keeps
    assert ("delete_server", "c1-worker-1") in cloud.calls
    assert [s for s in cloud.list_nodes() if s.id == newer.id] == []
    assert cloud.posts() == []


def test_a_lost_answer_is_decided_by_the_next_list_not_by_a_second_post():
    cloud = ScriptedCloud(script={"c1-worker-1": [Boot(lose_answer=True)]})
    conv = converger(cloud)
    nodes = conv.run(creates=[spec("c1-worker-1")], watch=[])
    assert nodes[0].status == "ACTIVE"
    assert cloud.posts() == ["c1-worker-1"]  # the server existed: no second POST
    assert cloud.names() == ["c1-worker-1"]


def test_a_lost_answer_with_no_server_is_created_again():
    cloud = ScriptedCloud()

    def lose_first(s: P.CreateServer) -> str:
        if not cloud.posts():
            cloud.calls.append(("create_server", s.name))  # the POST never reached Nova
            raise ConnectionError("reset before the request was read")
        return cloud.create_server(name=s.name, role=s.role, index=s.index)

    conv = Converger(cloud=cloud, reporter=Reporter(), settings=FAST, create=lose_first)
    nodes = conv.run(creates=[spec("c1-worker-1")], watch=[])
    assert nodes[0].status == "ACTIVE"
    assert cloud.posts() == ["c1-worker-1", "c1-worker-1"]


def test_a_double_create_leaves_one_server():
    cloud = ScriptedCloud(script={"c1-worker-1": [Boot(create_twice=True)]})
    converger(cloud).run(creates=[spec("c1-worker-1")], watch=[])
    assert cloud.names() == ["c1-worker-1"]


def test_a_create_answered_while_a_list_was_under_way_is_not_made_again():
    """The list is taken, then the POST is answered, then the list's (stale) answer
    arrives: the server is missing from it only because the list was older."""
    listed, answered = threading.Event(), threading.Event()

    class SlowList(ScriptedCloud):
        def list_nodes(self) -> list[P.Node]:
            snapshot = super().list_nodes()
            listed.set()
            answered.wait(5)
            return snapshot

    cloud = SlowList()

    def create(s: P.CreateServer) -> str:
        listed.wait(5)
        try:
            return cloud.create_server(name=s.name, role=s.role, index=s.index)
        finally:
            answered.set()

    conv = Converger(cloud=cloud, reporter=Reporter(), settings=FAST, create=create)
    nodes = conv.run(creates=[spec("c1-worker-1")], watch=[])
    assert [n.status for n in nodes] == ["ACTIVE"]
    assert cloud.posts() == ["c1-worker-1"]
    assert cloud.names() == ["c1-worker-1"]


def test_ctrl_c_sends_no_new_posts():
    """Ctrl-C lands in the main thread while one POST is on the wire: that one finishes
    (so its server is one the next up/down sees), the queued ones are never sent."""
    names = [f"c1-worker-{i}" for i in range(1, 9)]
    on_wire = threading.Event()
    interrupted = threading.Event()

    class InterruptedCloud(ScriptedCloud):
        def list_nodes(self) -> list[P.Node]:
            if on_wire.is_set():
                interrupted.set()
                raise KeyboardInterrupt
            return super().list_nodes()

    cloud = InterruptedCloud()

    def create(s: P.CreateServer) -> str:
        if s.name == "c1-worker-2":
            on_wire.set()
            interrupted.wait(5)
        return cloud.create_server(name=s.name, role=s.role, index=s.index)

    settings = Settings(max_parallel=1, poll_min=0.001, poll_max=0.01, active_timeout=5)
    conv = Converger(cloud=cloud, reporter=Reporter(), settings=settings, create=create)
    with pytest.raises(KeyboardInterrupt):
        conv.run(creates=[spec(n, index=i) for i, n in enumerate(names, 1)], watch=[])
    assert cloud.posts() == ["c1-worker-1", "c1-worker-2"]


def test_an_error_server_not_ours_to_create_is_reported_not_replaced():
    cloud = ScriptedCloud()
    cloud.add("c1-master", "master", 0, status="ERROR")
    with pytest.raises(CloudError) as err:
        converger(cloud).run(creates=[], watch=["c1-master"])
    assert err.value.resource == "c1-master"
    assert cloud.posts() == []


# --- new workers in one multi-create request


def many_converger(cloud: ScriptedCloud, create_many=None) -> Converger:
    def create(s: P.CreateServer) -> str:
        return cloud.create_server(name=s.name, role=s.role, index=s.index)

    def create_workers(specs) -> str:
        return cloud.create_server(name="c1-worker", role="worker", index=0, count=len(specs))

    return Converger(cloud=cloud, reporter=Reporter(), settings=FAST, create=create,
                     create_many=create_many or create_workers)  # fmt: skip


def new_cluster(workers: int) -> list[P.CreateServer]:
    return [spec("c1-master", "master", 0)] + [
        spec(f"c1-worker-{i}", index=i) for i in range(1, workers + 1)
    ]


def test_the_workers_of_a_new_cluster_go_in_one_request():
    cloud = ScriptedCloud()
    creates = new_cluster(3)
    together = P.one_request_workers("c1", creates)
    assert [c.name for c in together] == ["c1-worker-1", "c1-worker-2", "c1-worker-3"]
    nodes = many_converger(cloud).run(creates=creates, watch=[], in_one_request=together)
    assert sorted(cloud.requests) == [("c1-master", 1), ("c1-worker", 3)]
    assert [(n.name, n.index, n.status) for n in nodes] == [
        ("c1-master", 0, "ACTIVE"),
        ("c1-worker-1", 1, "ACTIVE"),
        ("c1-worker-2", 2, "ACTIVE"),
        ("c1-worker-3", 3, "ACTIVE"),
    ]


def test_a_lost_answer_to_the_one_request_makes_no_duplicate():
    cloud = ScriptedCloud(script={"c1-worker-1": [Boot(lose_answer=True)]})
    creates = new_cluster(3)
    together = P.one_request_workers("c1", creates)
    many_converger(cloud).run(creates=creates, watch=[], in_one_request=together)
    assert sorted(cloud.requests) == [("c1-master", 1), ("c1-worker", 3)]
    assert cloud.names() == ["c1-master", "c1-worker-1", "c1-worker-2", "c1-worker-3"]


def test_a_failed_one_request_is_made_up_by_name():
    cloud = ScriptedCloud()
    tried: list[int] = []

    def refused_once(specs) -> str:  # reset before anything was created
        tried.append(len(specs))
        raise LostAnswer("connection reset")

    creates = new_cluster(2)
    together = P.one_request_workers("c1", creates)
    many_converger(cloud, refused_once).run(creates=creates, watch=[], in_one_request=together)
    assert tried == [2]
    assert sorted(cloud.requests) == [("c1-master", 1), ("c1-worker-1", 1), ("c1-worker-2", 1)]
    assert cloud.names() == ["c1-master", "c1-worker-1", "c1-worker-2"]


def test_a_worker_of_the_one_request_in_error_is_replaced_by_name():
    cloud = ScriptedCloud(script={"c1-worker-2": [Boot(("BUILD", "ERROR"), fault="No valid host")]})
    creates = new_cluster(3)
    together = P.one_request_workers("c1", creates)
    nodes = many_converger(cloud).run(creates=creates, watch=[], in_one_request=together)
    assert sorted(cloud.requests) == [("c1-master", 1), ("c1-worker", 3), ("c1-worker-2", 1)]
    assert {n.status for n in nodes} == {"ACTIVE"}
    assert cloud.names() == ["c1-master", "c1-worker-1", "c1-worker-2", "c1-worker-3"]


@pytest.mark.parametrize(
    ("indices", "flavors", "together"),
    [
        ([1, 2, 3], ["a"] * 3, [1, 2, 3]),  # a new cluster
        ([1], ["a"], []),  # one worker: a plain create
        ([4, 5, 6], ["a"] * 3, []),  # scale-up: Nova would name them -1 ... -3
        ([1, 3], ["a"] * 2, []),  # a gap: not what Nova would name
        ([1, 2], ["a", "b"], []),  # one request has one flavor
    ],
)
def test_which_workers_one_request_can_make(indices, flavors, together):
    creates = [spec("c1-master", "master", 0)] + [
        P.CreateServer(name=f"c1-worker-{i}", role="worker", index=i, flavor=f)
        for i, f in zip(indices, flavors, strict=True)
    ]
    assert [c.index for c in P.one_request_workers("c1", creates)] == together
