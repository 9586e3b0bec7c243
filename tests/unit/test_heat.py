"""`render --heat`: the template is the plan and the node documents, with the form's
choices left to Heat. Heat's own reading of it is in tests/cloud/test_heat.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner import plan as P
from provisioner.cli import main
from provisioner.heat import MASTER_IP_PLACEHOLDER, heat_template, render_heat
from provisioner.inventory import load_inventory
from provisioner.render import SparkHash, render_cloud_init
from tests.unit.inventory_cases import PINNED_SHA512, pinned_example

OTHER_SHA512 = "ab" * 64


def inventory(tmp_path: Path, extra: str = "", replace: tuple[str, str] | None = None,
              name: str = "example.toml") -> Path:  # fmt: skip
    path = pinned_example(tmp_path / name)
    text = path.read_text()
    if replace is not None:
        assert replace[0] in text, replace[0]
        text = text.replace(*replace)
    path.write_text(text + extra)
    return path


def template_of(path: Path) -> dict[str, Any]:
    inv = load_inventory(path)
    return heat_template(inv, spark=SparkHash.of_inventory(inv.spark) or _missing())


def _missing() -> SparkHash:
    raise AssertionError("the example inventory pins the sha512")


def substitute(document: dict[str, Any], values: dict[str, str]) -> str:
    """What Heat's str_replace makes of a document, given each parameter's value."""
    spec = document["str_replace"]
    text = spec["template"]
    for key, source in spec["params"].items():
        text = text.replace(key, values[_name(source)])
    return text


def _name(source: dict[str, Any]) -> str:
    if "get_param" in source:
        return str(source["get_param"])
    assert source == {"get_attr": ["master_port", "fixed_ips", 0, "ip_address"]}, source
    return "master_ip"


def test_each_document_is_what_render_prints_for_the_address_heat_fills_in(tmp_path):
    path = inventory(tmp_path)
    inv = load_inventory(path)
    template = template_of(path)
    resources = template["resources"]
    values = {"master_ip": "10.1.2.3", "spark_url": inv.spark.tarball_url(),
              "spark_sha512": PINNED_SHA512}  # fmt: skip
    master_doc = resources["master"]["properties"]["user_data"]
    worker_doc = resources["workers"]["properties"]["resource_def"]["properties"]["user_data"]
    assert substitute(master_doc, values) == render_cloud_init(
        inv, role="master", master_ip="10.1.2.3")  # fmt: skip
    assert substitute(worker_doc, values) == render_cloud_init(
        inv, role="worker", master_ip="10.1.2.3")  # fmt: skip
    assert MASTER_IP_PLACEHOLDER not in substitute(worker_doc, values)


def test_spark_parameters_give_the_documents_of_an_inventory_with_those_values(tmp_path):
    """A mirror and hash typed into the form make exactly the nodes that an inventory
    naming them would: nothing else in the document depends on them."""
    base = load_inventory(inventory(tmp_path))
    mirror = "https://mirror.example.org/apache/spark"
    other = load_inventory(inventory(tmp_path, name="other.toml", replace=(
        'mirror = "https://downloads.apache.org/spark"', f'mirror = "{mirror}"')))  # fmt: skip
    other_text = (tmp_path / "other.toml").read_text().replace(PINNED_SHA512, OTHER_SHA512)
    (tmp_path / "other.toml").write_text(other_text)
    other = load_inventory(tmp_path / "other.toml")
    assert other.spark.tarball_url() != base.spark.tarball_url()
    template = heat_template(base, spark=SparkHash.of_inventory(base.spark) or _missing())
    worker_doc = template["resources"]["workers"]["properties"]["resource_def"]["properties"][
        "user_data"
    ]
    values = {"master_ip": "10.1.2.3", "spark_url": other.spark.tarball_url(),
              "spark_sha512": OTHER_SHA512}  # fmt: skip
    assert substitute(worker_doc, values) == render_cloud_init(
        other, role="worker", master_ip="10.1.2.3")  # fmt: skip


def fixed_rules(template: dict[str, Any]) -> list[dict[str, Any]]:
    return template["resources"]["security_group"]["properties"]["rules"]["list_concat"][0]


def repeated(template: dict[str, Any]) -> list[dict[str, Any]]:
    parts = template["resources"]["security_group"]["properties"]["rules"]["list_concat"]
    return [part["repeat"] for part in parts[1:]]


ACME = ('mode = "self-signed"\n', 'mode = "acme"\n')
ACME_NAMES = ('domain = ""\nemail = ""\n',
              'domain = "hub.example.org"\nemail = "ops@example.org"\n')


@pytest.mark.parametrize("world", [(), (80,)], ids=["self-signed", "acme"])
def test_security_group_rules_are_the_plans(tmp_path, world):
    path = inventory(tmp_path)
    if world:
        text = path.read_text().replace(*ACME).replace(*ACME_NAMES)
        path.write_text(text)
    inv = load_inventory(path)
    desired = P.desired_from_inventory(inv)
    template = template_of(path)
    plan_rules = P.security_group_rules((), (), desired.world_ports)
    assert len(fixed_rules(template)) == len(plan_rules) == 2 + 2 * len(world)
    for rule, written in zip(plan_rules, fixed_rules(template), strict=True):
        assert written["ethertype"] == rule.ethertype
        assert written.get("port_range_min") == rule.port
        assert written.get("remote_ip_prefix", "") == rule.cidr
    # the allowed CIDRs' rules: every open port of the plan, per family
    for part, ethertype in zip(repeated(template), ("IPv4", "IPv6"), strict=True):
        assert part["template"]["ethertype"] == ethertype
        assert part["for_each"]["<%port%>"] == [str(p) for p in desired.open_ports]
    assert template["parameters"]["allowed_cidrs"]["default"] == ",".join(desired.allowed_cidrs)


def test_several_cidrs_of_both_families_are_the_parameters_default(tmp_path):
    path = inventory(tmp_path, replace=('allowed_cidrs = ["203.0.113.0/24"]',
                                        'allowed_cidrs = ["203.0.113.0/24", "198.51.100.7/32", '
                                        '"2001:db8::/48"]'))  # fmt: skip
    template = template_of(path)
    assert template["parameters"]["allowed_cidrs"]["default"] == (
        "203.0.113.0/24,198.51.100.7/32,2001:db8::/48"
    )
    v4, v6 = repeated(template)
    assert "not ':' in $" in v4["for_each"]["<%cidr%>"]["yaql"]["expression"]
    assert "':' in $" in v6["for_each"]["<%cidr%>"]["yaql"]["expression"]


def test_without_a_floating_ip_pool_there_is_no_floating_ip_to_ask_for(tmp_path):
    path = inventory(tmp_path, replace=('floating_ip_pool = "public"', 'floating_ip_pool = ""'))
    template = template_of(path)
    assert "floating_ip" not in template["resources"]
    assert "external_network" not in template["parameters"]
    assert "master_floating_ip" not in template["outputs"]
    assert template["outputs"]["master_fixed_ip"]["value"] == {
        "get_attr": ["master_port", "fixed_ips", 0, "ip_address"]}  # fmt: skip
    # the hub finds the nodes by the cluster's name: the command needs no address
    assert template["outputs"]["hub_command"]["value"] == "sparkstack hub -i inventory.toml"


def test_no_server_group_without_anti_affinity(tmp_path):
    path = inventory(tmp_path, replace=('anti_affinity = "soft"', 'anti_affinity = "none"'))
    template = template_of(path)
    assert "server_group" not in template["resources"]
    assert "scheduler_hints" not in template["resources"]["master"]["properties"]


def test_servers_carry_the_identity_up_gives_them(tmp_path):
    path = inventory(tmp_path)
    inv = load_inventory(path)
    template = template_of(path)
    name = inv.cluster.name
    master = template["resources"]["master"]["properties"]
    worker = template["resources"]["workers"]["properties"]["resource_def"]["properties"]
    assert master["name"] == f"{name}-master"
    assert worker["name"] == f"{name}-worker-%index%"
    # index 0 is never used: the members are -1 ... -N, as `up` names workers
    assert template["resources"]["workers"]["properties"]["removal_policies"] == [
        {"resource_list": ["0"]}
    ]
    for server, role, index in ((master, "master", "0"), (worker, "worker", "%index%")):
        assert server["tags"] == P.identity_tags(name)
        assert server["metadata"][P.META_CLUSTER] == name
        assert server["metadata"][P.META_ROLE] == role
        assert server["metadata"][P.META_INDEX] == index
        assert server["user_data_format"] == "RAW"
    sg = template["resources"]["security_group"]["properties"]
    assert sg["description"] == P.identity_description(name)


def test_the_template_is_readable_yaml_without_secrets(tmp_path):
    path = inventory(tmp_path)
    inv = load_inventory(path)
    text = render_heat(inv, spark=SparkHash.of_inventory(inv.spark) or _missing())
    assert yaml.safe_load(text) == template_of(path)
    # the documents as literal blocks, not one escaped line; no YAML aliases to chase
    assert text.count("template: |\n") == 2
    assert "&id" not in text and "*id" not in text
    # the cluster's secrets are made by `sparkstack hub` and travel over SSH; a template
    # any project member can read back from Heat holds none of them
    assert "PRIVATE KEY" not in text
    assert re.search(r"spark\.authenticate\.secret [0-9a-f]{64}", text) is None
    assert "password" not in yaml.safe_load(text)["parameters"]


def test_render_heat_writes_the_file_and_says_what_to_do_next(tmp_path, capsys):
    path = inventory(tmp_path)
    target = tmp_path / "cluster.yaml"
    code = main(["render", "--heat", "-i", str(path), "-o", str(target)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == ""
    assert "Orchestration > Stacks > Launch Stack" in err
    inv = load_inventory(path)
    assert target.read_text() == render_heat(
        inv, spark=SparkHash.of_inventory(inv.spark) or _missing(), inventory_name=path.name
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--heat", "--role", "master"], "--role is not used with --heat"),
        (["--heat", "--master-ip", "10.0.0.7"], "not used with --heat"),
        ([], "give --role (or --heat)"),
    ],
)
def test_render_heat_refuses_what_it_does_not_use(tmp_path, capsys, argv, message):
    path = inventory(tmp_path)
    code = main(["render", "-i", str(path), *argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_an_existing_floating_ip_is_refused_naming_the_key(tmp_path, capsys):
    path = inventory(tmp_path, replace=('floating_ip = ""', 'floating_ip = "203.0.113.9"'))
    code = main(["render", "--heat", "-i", str(path)])
    _, err = capsys.readouterr()
    assert code == 2
    assert "network.floating_ip: not supported by `render --heat`" in err
