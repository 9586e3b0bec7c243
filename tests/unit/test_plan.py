"""plan.py: desired + observed -> actions, as tables of cases (no cloud involved)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from provisioner import plan as P
from provisioner.inventory import load_inventory

D = P.Desired(
    cluster="c1",
    workers=2,
    master_flavor="m1.large",
    worker_flavor="m1.medium",
    image="debian-12",
    network="private",
    floating_ip_pool="public",
    allowed_cidrs=("203.0.113.0/24",),
    open_ports=(22, 443),
)


def node(role: str, index: int, status: str = "ACTIVE", *, id: str = "", **kw) -> P.Node:
    name = P.server_name("c1", role, index)
    return P.Node(name=name, role=role, index=index, id=id or f"id-{name}", status=status, **kw)


def held(*rules: P.IngressRule, ours: bool = True, start: int = 1) -> tuple[P.RuleRef, ...]:
    return tuple(P.RuleRef(f"r{i}", r, ours) for i, r in enumerate(rules, start))


# what `up` made for D: the group to itself, and 22 and 443 from D's range
D_RULES = held(*P.security_group_rules(D.allowed_cidrs, D.open_ports))

FULL = P.Observed(
    cluster="c1",
    nodes=(node("master", 0), node("worker", 1), node("worker", 2)),
    security_group=P.Ref("sg", "sparkstack-c1"),
    security_group_rules=D_RULES,
    server_group=P.Ref("g", "sparkstack-c1-workers", "soft-anti-affinity"),
    master_port=P.Ref("p", "c1-master-port", "10.77.0.10"),
    floating_ip=P.Ref("f", "", "10.78.0.20"),
    attached_ip="10.78.0.20",
    keypair=P.Ref("sparkstack-c1", "sparkstack-c1"),
)
EMPTY = P.Observed(cluster="c1")


def kinds(actions):
    return [(a.kind, getattr(a, "name", getattr(a, "address", ""))) for a in actions]


UP_CASES = [
    (
        "from nothing: shared resources, the port, then the IP beside every server",
        D,
        EMPTY,
        [
            ("create_security_group", "sparkstack-c1"),
            ("create_keypair", "sparkstack-c1"),
            ("create_server_group", "sparkstack-c1-workers"),
            ("create_master_port", "c1-master-port"),
            ("attach_floating_ip", ""),
            ("create_server", "c1-master"),
            ("create_server", "c1-worker-1"),
            ("create_server", "c1-worker-2"),
        ],
    ),
    ("complete cluster: nothing", D, FULL, []),
    (
        "partial: only the missing worker and the floating IP",
        D,
        P.Observed(
            cluster="c1",
            nodes=(node("master", 0), node("worker", 1)),
            security_group=FULL.security_group,
            security_group_rules=D_RULES,
            server_group=FULL.server_group,
            master_port=FULL.master_port,
            keypair=FULL.keypair,
        ),
        [("attach_floating_ip", ""), ("create_server", "c1-worker-2")],
    ),
    (
        "a server in ERROR is deleted and created again",
        D,
        P.Observed(
            cluster="c1",
            nodes=(
                node("master", 0),
                node("worker", 1, "ERROR", fault="No valid host"),
                node("worker", 2),
            ),
            security_group=FULL.security_group,
            security_group_rules=D_RULES,
            server_group=FULL.server_group,
            master_port=FULL.master_port,
            attached_ip="10.78.0.20",
            keypair=FULL.keypair,
        ),
        [("delete_server", "c1-worker-1"), ("create_server", "c1-worker-1")],
    ),
    (
        "a duplicate (lost create answer) goes; the ACTIVE one stays",
        D,
        P.Observed(
            cluster="c1",
            nodes=FULL.nodes + (node("worker", 2, "BUILD", id="dup", created="2030"),),
            security_group=FULL.security_group,
            security_group_rules=D_RULES,
            server_group=FULL.server_group,
            master_port=FULL.master_port,
            attached_ip="10.78.0.20",
            keypair=FULL.keypair,
        ),
        [("delete_server", "c1-worker-2")],
    ),
    (
        "existing keypair, no anti-affinity, no workers, existing floating IP",
        P.Desired(
            cluster="c1",
            workers=0,
            master_flavor="m1.large",
            worker_flavor="m1.medium",
            keypair="mine",
            anti_affinity="none",
            floating_ip="10.78.0.99",
        ),
        EMPTY,
        [
            ("create_security_group", "sparkstack-c1"),
            ("create_master_port", "c1-master-port"),
            ("attach_floating_ip", "10.78.0.99"),
            ("create_server", "c1-master"),
        ],
    ),
    (
        "up leaves extra workers alone (only scale removes)",
        dataclasses.replace(D, workers=1),
        FULL,
        [],
    ),
]


@pytest.mark.parametrize(("why", "desired", "observed", "expected"), UP_CASES, ids=lambda x: "")
def test_plan_up(why, desired, observed, expected):
    assert kinds(P.plan_up(desired, observed)) == expected, why


def _with(workers: int) -> P.Desired:
    return P.Desired(
        cluster="c1", workers=workers, master_flavor="m1.large", worker_flavor="m1.medium"
    )


SCALE_CASES = [
    ("same count: nothing", 2, FULL, []),
    (
        "up to 4: two new workers",
        4,
        FULL,
        [("create_server", "c1-worker-3"), ("create_server", "c1-worker-4")],
    ),
    (
        "down to 0: decommission first, highest index first",
        0,
        FULL,
        [("decommission", ""), ("delete_server", "c1-worker-2"), ("delete_server", "c1-worker-1")],
    ),
    (
        "fills a gap in the indices",
        3,
        P.Observed(
            cluster="c1",
            nodes=(node("master", 0), node("worker", 1), node("worker", 3)),
            server_group=FULL.server_group,
        ),
        [("create_server", "c1-worker-2")],
    ),
    (
        "no server group yet (started with 0 workers)",
        1,
        P.Observed(cluster="c1", nodes=(node("master", 0),)),
        [("create_server_group", "sparkstack-c1-workers"), ("create_server", "c1-worker-1")],
    ),
]


@pytest.mark.parametrize(("why", "workers", "observed", "expected"), SCALE_CASES, ids=lambda x: "")
def test_plan_scale(why, workers, observed, expected):
    actions = P.plan_scale(_with(workers), observed)
    assert kinds(actions) == expected, why


def test_scale_down_decommissions_exactly_the_removed_workers():
    actions = P.plan_scale(_with(1), FULL)
    assert actions[0] == P.Decommission(names=("c1-worker-2",))
    assert P.DeleteServer(name="c1-worker-2", id="id-c1-worker-2", reason="scale down") in actions


DOWN_CASES = [
    ("nothing there: nothing to do", D, EMPTY, []),
    (
        "everything, the security group last (its ports go with the servers)",
        D,
        FULL,
        [
            ("delete_server", "c1-worker-2"),
            ("delete_server", "c1-worker-1"),
            ("delete_server", "c1-master"),
            ("delete_floating_ip", "10.78.0.20"),
            ("delete_port", "c1-master-port"),
            ("delete_server_group", "sparkstack-c1-workers"),
            ("delete_keypair", "sparkstack-c1"),
            ("delete_security_group", "sparkstack-c1"),
        ],
    ),
    (
        "an inventory-named floating IP and keypair are never deleted",
        P.Desired(
            cluster="c1",
            workers=2,
            master_flavor="m1.large",
            worker_flavor="m1.medium",
            keypair="mine",
            floating_ip="10.78.0.20",
        ),
        FULL,
        [
            ("delete_server", "c1-worker-2"),
            ("delete_server", "c1-worker-1"),
            ("delete_server", "c1-master"),
            ("delete_port", "c1-master-port"),
            ("delete_server_group", "sparkstack-c1-workers"),
            ("delete_security_group", "sparkstack-c1"),
        ],
    ),
]


@pytest.mark.parametrize(("why", "desired", "observed", "expected"), DOWN_CASES, ids=lambda x: "")
def test_plan_down(why, desired, observed, expected):
    assert kinds(P.plan_down(desired, observed)) == expected, why


def test_plan_prints_and_serialises():
    actions = P.plan_up(D, EMPTY)
    text = P.describe(actions)
    assert "  1. create security group sparkstack-c1" in text
    assert "tcp 22,443 from 203.0.113.0/24" in text
    assert "allocate a floating IP from public" in text
    data = json.loads(json.dumps(P.to_json(actions)))
    assert data[5] == {
        "action": "create_server",
        "name": "c1-master",
        "role": "master",
        "index": 0,
        "flavor": "m1.large",
        "description": "create server c1-master (master, m1.large)",
    }
    assert data[0]["allowed_cidrs"] == ["203.0.113.0/24"]
    assert P.describe([]) == "nothing to do"


FLAVORS = {
    "m1.large": P.Flavor("m1.large", vcpus=4, ram=8192, disk=40),
    "m1.medium": P.Flavor("m1.medium", vcpus=2, ram=4096, disk=20),
}


def test_needs_counts_what_the_plan_creates():
    need = P.needs(P.plan_up(D, EMPTY), flavors=FLAVORS, observed=EMPTY, desired=D)
    assert need == P.Needs(
        instances=3,
        cores=8,
        ram=16384,
        ports=3,
        floating_ips=1,
        security_groups=1,
        security_group_rules=4,
        server_groups=1,
        server_group_members=2,
    )


def test_needs_nets_out_replaced_servers():
    observed = P.Observed(
        cluster="c1",
        nodes=(node("master", 0), node("worker", 1, "ERROR"), node("worker", 2)),
        security_group=FULL.security_group,
        server_group=FULL.server_group,
        master_port=FULL.master_port,
        attached_ip="x",
        keypair=FULL.keypair,
    )
    need = P.needs(P.plan_up(D, observed), flavors=FLAVORS, observed=observed, desired=D)
    assert (need.instances, need.cores, need.ram, need.ports) == (0, 0, 0, 0)


SHORTFALL_CASES = [
    ("fits", {"instances": P.Quota(10, 0), "cores": P.Quota(-1, 5)}, []),
    ("unlimited everywhere", {k: P.Quota(-1, 99) for k in ("instances", "cores", "ram")}, []),
    (
        "every shortfall listed",
        {
            "instances": P.Quota(2, 0),
            "cores": P.Quota(10, 4),
            "ram": P.Quota(20000, 0),
            "floating_ips": P.Quota(1, 1),
            "security_group_rules": P.Quota(10, 8),
            "server_group_members": P.Quota(1, 0),
        },
        [
            "instances: the plan needs 3, the project has 2 left (limit 2, used 0)",
            "cores (vCPUs): the plan needs 8, the project has 6 left (limit 10, used 4)",
            "floating IPs: the plan needs 1, the project has 0 left (limit 1, used 1)",
            "security group rules: the plan needs 4, the project has 2 left (limit 10, used 8)",
            "server group members: 2 workers in one group, the limit is 1",
        ],
    ),
]


@pytest.mark.parametrize(("why", "quotas", "expected"), SHORTFALL_CASES, ids=lambda x: "")
def test_quota_shortfalls(why, quotas, expected):
    need = P.needs(P.plan_up(D, EMPTY), flavors=FLAVORS, observed=EMPTY, desired=D)
    assert P.quota_shortfalls(need, quotas) == expected, why


IMAGE_CASES = [
    (P.Image("img", "active", min_disk=1, min_ram=512), []),
    (P.Image("img", "queued"), ["image img is queued, not active"]),
    (
        P.Image("img", "active", min_disk=30, min_ram=5000),
        [
            "flavor m1.medium has a 20 GB disk, image img needs 30 GB",
            "flavor m1.medium has 4096 MB of RAM, image img needs 5000 MB",
        ],
    ),
]


@pytest.mark.parametrize(("image", "expected"), IMAGE_CASES)
def test_image_flavor_shortfalls(image, expected):
    assert P.image_flavor_shortfalls(image, FLAVORS.values()) == expected


def test_desired_from_the_example_inventory():
    inv = load_inventory(Path(__file__).resolve().parents[2] / "inventory.example.toml")
    d = P.desired_from_inventory(inv)
    assert (d.cluster, d.workers, d.master_flavor, d.worker_flavor) == (
        "spark-demo",
        2,
        "m1.large",
        "m1.medium",
    )
    assert d.open_ports == (22, 443) and d.allowed_cidrs == ("203.0.113.0/24",)
    assert d.keypair_managed and d.key_source == "generate"
    assert d.keypair_name == "sparkstack-spark-demo"
    assert P.desired_from_inventory(inv, workers=7).workers == 7


def test_acme_opens_80_to_everyone_and_the_rest_to_allowed_cidrs_only():
    inv = load_inventory(Path(__file__).resolve().parents[2] / "inventory.example.toml")
    tls = inv.jupyterhub.tls.model_copy(
        update={"mode": "acme", "domain": "hub.example.org", "email": "me@example.org"}
    )
    acme = inv.model_copy(
        update={"jupyterhub": inv.jupyterhub.model_copy(update={"tls": tls})}
    )
    d = P.desired_from_inventory(acme)
    assert (d.open_ports, d.world_ports) == ((22, 443), (80,))
    assert P.desired_from_inventory(inv).world_ports == ()


SECURITY_GROUP_CASES = [
    # (allowed_cidrs, world_ports, rules, what the dry run says about outside traffic)
    (("203.0.113.0/24",), (), 4, "tcp 22,443 from 203.0.113.0/24"),
    (
        ("203.0.113.0/24", "2001:db8::/48"),
        (80,),
        8,
        "tcp 22,443 from 203.0.113.0/24, 2001:db8::/48, tcp 80 from anywhere",
    ),
    ((), (80,), 4, "nothing from outside, tcp 80 from anywhere"),
]


@pytest.mark.parametrize(("cidrs", "world", "rules", "outside"), SECURITY_GROUP_CASES)
def test_security_group_rules_and_description(cidrs, world, rules, outside):
    sg = P.CreateSecurityGroup(
        name="sparkstack-c1", allowed_cidrs=cidrs, ports=(22, 443), world_ports=world
    )
    assert sg.rule_count() == rules
    assert sg.describe() == (
        f"create security group sparkstack-c1: all traffic between nodes, {outside}"
    )
    assert sg.to_json()["world_ports"] == list(world)
    need = P.needs([sg], flavors=FLAVORS, observed=EMPTY, desired=D)
    assert need.security_group_rules == rules


def test_identity_names_match_the_inventory_contract():
    assert P.server_name("c1", "master", 0) == "c1-master"
    assert P.server_name("c1", "worker", 3) == "c1-worker-3"
    assert P.identity_tags("c1") == ["sparkstack", "sparkstack:c1"]
    assert all(len(t) <= 60 and "/" not in t and "," not in t for t in P.identity_tags("a" * 40))


def test_plan_up_opens_the_desired_world_ports_in_the_security_group():
    from dataclasses import replace

    sg = P.plan_up(replace(D, world_ports=(80,)), EMPTY)[0]
    assert sg.kind == "create_security_group"
    assert sg.world_ports == (80,)
    assert P.plan_up(D, EMPTY)[0].world_ports == ()


@pytest.mark.parametrize(
    ("name", "index"),
    [("c1-worker-3", 3), ("c1-worker-12", 12), ("c1-worker-03", 0), ("c1-worker-", 0),
     ("c1-master", 0), ("c2-worker-1", 0), ("c1-worker-1x", 0)],
)  # fmt: skip
def test_a_multi_created_workers_index_comes_from_its_name(name, index):
    from provisioner.inventory import names

    assert names.worker_index_from_name("c1", name) == index
    if index:
        assert P.server_name("c1", "worker", index) == f"{P.workers_base_name('c1')}-{index}"


def test_the_prerequisites_and_the_clean_up_run_as_batches():
    up = [[a.kind for a in b] for b in P.batches(P.plan_up(D, EMPTY))]
    assert up == [
        ["create_security_group", "create_keypair", "create_server_group", "create_master_port"],
        ["attach_floating_ip", "create_server", "create_server", "create_server"],
    ]
    down = [[a.kind for a in b] for b in P.batches(P.plan_down(D, FULL))]
    assert down == [
        ["delete_server"] * 3
        + ["delete_floating_ip", "delete_port", "delete_server_group", "delete_keypair"],
        ["delete_security_group"],
    ]


OWN_V4, OWN_V6 = P.security_group_rules((), ())
SSH, HUB = (P.IngressRule("IPv4", port, "203.0.113.0/24") for port in (22, 443))
WORLD_80 = (P.IngressRule("IPv4", 80, "0.0.0.0/0"), P.IngressRule("IPv6", 80, "::/0"))


def rules_of(observed: P.Observed, desired: P.Desired = D) -> list[P.Action]:
    """The rule changes `up` plans for a cluster that is otherwise complete."""
    return [a for a in P.plan_up(desired, observed) if a.kind == "update_security_group"]


def test_a_narrowed_allowed_cidrs_closes_the_old_range_before_opening_the_new():
    narrowed = dataclasses.replace(D, allowed_cidrs=("203.0.113.128/25",))
    (update,) = rules_of(FULL, narrowed)
    assert update.describe() == (
        "update security group sparkstack-c1: close tcp 22 from 203.0.113.0/24; "
        "close tcp 443 from 203.0.113.0/24; open tcp 22 from 203.0.113.128/25; "
        "open tcp 443 from 203.0.113.128/25"
    )
    assert [r.id for r in update.remove] == ["r3", "r4"]
    assert update.id == "sg"
    # the quota check counts what the project holds afterwards: as many rules as now
    need = P.needs([update], flavors=FLAVORS, observed=FULL, desired=narrowed)
    assert need.security_group_rules == 0


def test_leaving_acme_closes_80_and_turning_it_on_opens_it_to_everyone():
    with_80 = dataclasses.replace(FULL, security_group_rules=D_RULES + held(*WORLD_80, start=5))
    (update,) = rules_of(with_80)
    assert update.add == () and [r.rule for r in update.remove] == list(WORLD_80)
    assert update.describe() == (
        "update security group sparkstack-c1: close tcp 80 from anywhere (0.0.0.0/0); "
        "close tcp 80 from anywhere (::/0)"
    )
    (update,) = rules_of(FULL, dataclasses.replace(D, world_ports=(80,)))
    assert update.add == WORLD_80 and update.remove == ()
    assert rules_of(with_80, dataclasses.replace(D, world_ports=(80,))) == []


def test_a_new_hub_port_moves_the_rule_and_a_lost_own_group_rule_comes_back():
    (update,) = rules_of(FULL, dataclasses.replace(D, open_ports=(22, 8443)))
    assert [r.rule for r in update.remove] == [HUB]
    assert update.add == (P.IngressRule("IPv4", 8443, "203.0.113.0/24"),)
    missing_v6 = dataclasses.replace(FULL, security_group_rules=held(OWN_V4, SSH, HUB))
    (update,) = rules_of(missing_v6)
    assert update.add == (OWN_V6,) and update.remove == ()
    assert update.describe().endswith("open all IPv6 traffic between nodes")


def test_rules_someone_added_by_hand_are_never_deleted_and_never_duplicated():
    by_hand = held(P.IngressRule("IPv4", 8080, "0.0.0.0/0"), HUB, ours=False, start=7)
    observed = dataclasses.replace(
        FULL, security_group_rules=held(OWN_V4, OWN_V6, SSH) + by_hand
    )
    # 443 is there (by hand): Neutron would refuse it again; 8080 is not ours to close
    assert rules_of(observed) == []
    narrowed = dataclasses.replace(D, allowed_cidrs=("198.51.100.0/24",))
    (update,) = rules_of(observed, narrowed)
    assert [r.id for r in update.remove] == ["r3"]  # only our 22; 8080 and 443 stay


def test_an_update_is_a_prerequisite_and_its_json_names_every_rule():
    narrowed = dataclasses.replace(D, allowed_cidrs=("2001:db8::/48",), world_ports=(80,))
    actions = P.plan_up(narrowed, dataclasses.replace(FULL, attached_ip=""))
    assert [[a.kind for a in b] for b in P.batches(actions)] == [
        ["update_security_group"],
        ["attach_floating_ip"],
    ]
    doc = json.loads(json.dumps(actions[0].to_json()))
    assert doc["remove"] == [
        {"id": "r3", "ethertype": "IPv4", "port": 22, "cidr": "203.0.113.0/24"},
        {"id": "r4", "ethertype": "IPv4", "port": 443, "cidr": "203.0.113.0/24"},
    ]
    assert [(r["ethertype"], r["port"], r["cidr"]) for r in doc["add"]] == [
        ("IPv6", 22, "2001:db8::/48"), ("IPv6", 443, "2001:db8::/48"),
        ("IPv4", 80, "0.0.0.0/0"), ("IPv6", 80, "::/0"),
    ]  # fmt: skip
    need = P.needs(actions, flavors=FLAVORS, observed=FULL, desired=narrowed)
    assert need.security_group_rules == 2


@pytest.mark.parametrize(
    ("spelled", "normal"),
    [("::0/0", "::/0"), ("2001:DB8:0:0::/48", "2001:db8::/48"), ("10.1.2.3/8", "10.0.0.0/8")],
)
def test_a_range_the_cloud_spells_differently_is_the_same_range(spelled, normal):
    assert P.normal_cidr(spelled) == normal


def test_memory_notes_say_what_the_flavors_cannot_hold_with_the_numbers():
    small = P.Flavor(name="m1.small", vcpus=1, ram=2048, disk=20)
    large = P.Flavor(name="m1.large", vcpus=4, ram=8192, disk=80)

    def notes(master, worker, *, users=2, driver=("1g", 1024), executor=("2g", 2048), workers=2):
        return P.memory_notes(master=master, worker=worker, workers=workers, users=users,
                              driver_memory=driver, executor_memory=executor)  # fmt: skip

    assert notes(large, large) == []
    (executors,) = notes(large, small)
    assert executors == (
        "spark.limits.executor_memory 2g does not fit in workers.flavor m1.small: of its 2048 "
        "MiB of RAM a worker offers executors about 1280 MiB, so no executor would start and "
        "jobs would wait for ever; lower executor_memory or pick a bigger flavor"
    )
    assert notes(large, small, executor=("1g", 1024)) == []
    assert notes(large, small, workers=0) == []  # no workers, no executors
    # 8192 MiB: 1536 for the core, then 1536 a notebook: four fit, not the fifth
    assert notes(large, large, users=4) == []
    (master,) = notes(large, large, users=5)
    assert master == (
        "master.flavor m1.large has 8192 MiB of RAM; all 5 hub users running a notebook at "
        "once would need about 9216 MiB (1536 for the hub, its proxy and the Spark master, and "
        "1536 for each notebook: spark.limits.driver_memory 1g plus 512 for its JVM, server and "
        "kernel), so about 4 can work at once; a bigger master.flavor or a smaller "
        "driver_memory makes room"
    )
    assert notes(small, None, users=30)[0].endswith(
        "so about 0 can work at once; a bigger master.flavor or a smaller driver_memory makes room"
    )
    assert notes(large, large, users=0) == []
