"""What a baked image holds against what this sparkstack and an inventory install: the
image role's document, the words `up` and `image list` use, a failed build's hint."""

from __future__ import annotations

import yaml

from provisioner import render as R
from provisioner.baked import RECORD_TO_PROPERTY, differences, expected_properties, image_note
from provisioner.inventory import Inventory
from provisioner.locks import locks
from provisioner.plan import Image
from provisioner.workflows.guard import undo_hint
from provisioner.workflows.image_build import builder_desired, failed_hint
from tests.unit.inventory_cases import with_changes


def inventory(**spark) -> Inventory:
    return Inventory.model_validate(with_changes({"spark": spark} if spark else {}))


def baked(inv: Inventory, **changes: str) -> dict[str, str]:
    props = {**expected_properties(inv), "sparkstack_build": "complete", "java": "17"}
    props.update(changes)
    return props


def files_of(user_data: str) -> dict[str, str]:
    return {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}


def test_the_image_role_installs_what_a_master_does_and_configures_nothing():
    inv = inventory()
    files = files_of(R.render_cloud_init(inv, role=R.IMAGE_ROLE,
                                         spark_hash=R.SparkHash("ab" * 64, "test")))
    script = files["/usr/local/sbin/sparkstack-bootstrap"]
    assert "steps: mirrors base harden user java proxy python spark baked" in script
    # the hub's packages come from the locks the document carries, as on a master
    current = locks()
    assert files[R.REQUIREMENTS_PATH] == current.requirements.text
    assert "step_proxy()" in script and "--require-hashes" in script
    assert "step_seal()" in script and "step_configure" in script
    # no Spark unit and no kernel: an image belongs to no cluster yet
    assert not [p for p in files if p.endswith(".service") and "spark-" in p]
    assert "/etc/sparkstack/kernel.json.in" not in files
    # the record's keys are the ones the build turns into Glance properties
    for key in RECORD_TO_PROPERTY:
        assert f"{key}=" in script, key


def test_master_and_worker_scripts_say_when_they_booted_from_a_baked_image():
    inv = inventory()
    h = R.SparkHash("ab" * 64, "test")
    for role, ip in (("master", None), ("worker", "10.0.0.5")):
        script = files_of(R.render_cloud_init(inv, role=role, master_ip=ip, spark_hash=h))[
            "/usr/local/sbin/sparkstack-bootstrap"]
        assert "booted from an image baked by sparkstack" in script
        assert "step_seal" not in script and "step_baked" not in script


def test_an_image_that_holds_everything_differs_in_nothing():
    inv = inventory()
    assert differences(baked(inv), inv) == []
    note = image_note(Image("img", "active", properties=baked(inv)), inv)
    assert note == "image img is baked for this inventory: nodes install nothing at boot"
    # another sparkstack version with the same locks and Spark holds the same things
    assert differences(baked(inv, sparkstack_version="0.0.1"), inv) == []


def test_what_differs_is_named():
    inv = inventory()
    props = baked(inv, spark_version="3.5.1", sparkstack_npm_lock_sha256="0" * 64)
    wrong = differences(props, inv)
    assert wrong == [f"Spark {inv.spark.version} (the image has 3.5.1)",
                     "configurable-http-proxy (another npm lock)"]
    note = image_note(Image("img", "active", properties=props), inv)
    assert note.startswith("image img was baked for other contents: nodes install Spark")


def test_a_stock_image_gets_the_suggestion_once_and_an_unfinished_build_is_named():
    inv = inventory()
    stock = image_note(Image("debian-12", "active", properties={"os_distro": "debian"}), inv)
    assert "is not baked" in stock and "`sparkstack image build`" in stock
    half = baked(inv, sparkstack_build="demo-builder")
    assert "unfinished" in image_note(Image("img", "queued", properties=half), inv)


def test_the_builder_is_open_to_ssh_only_from_the_inventorys_cidrs_with_its_own_key():
    inv = inventory()
    d = builder_desired(inv, source="debian-12")
    assert d.cluster == f"{inv.cluster.name}-builder" and d.workers == 0
    assert d.open_ports == (22,) and d.world_ports == ()
    assert d.allowed_cidrs == tuple(inv.network.allowed_cidrs)
    assert d.keypair_managed and d.key_source == "generate" and d.floating_ip == ""
    assert d.server_group_policy == ""


def test_a_failed_builds_hint_keeps_the_cause_and_drops_the_clusters_advice():
    builder = "demo-builder"
    hint = failed_hint(f"raise ssh.boot_timeout; {undo_hint('up', builder)}", builder)
    assert hint.startswith("raise ssh.boot_timeout; the builder demo-builder and any")
    assert "partly there" not in hint
