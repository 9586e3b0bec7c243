"""A Heat (HOT) template that makes what `up` makes, for teams that launch from Horizon's
Orchestration panel: one stack, one form of parameters, created and deleted as a whole.

Pure: the names, identity, security group rules and node documents come from the same
plan and renderer `up` uses (provisioner.plan, provisioner.render); only the values a
Horizon user picks in the form (image, flavors, networks, key pair, worker count, CIDRs,
Spark's download) become parameters, defaulting to the inventory's. The template holds no
secret: like user_data, any project member can read it back from Heat.
"""

from __future__ import annotations

from typing import Any

import yaml

from provisioner import plan as P
from provisioner.errors import UserInputError
from provisioner.inventory import Inventory, names
from provisioner.plan import rules
from provisioner.render import Role, SparkHash, render_cloud_init

# The newest HOT version Heat 19 (Zed) knows: list_concat, repeat and yaql are all there.
HOT_VERSION = "2021-04-16"

# A placeholder master address rendered into the documents, swapped by Heat for the master
# port's real address (str_replace). TEST-NET-2 (RFC 5737): never a real master's address.
MASTER_IP_PLACEHOLDER = "198.51.100.71"

# What ResourceGroup replaces with each member's index.
_INDEX = "%index%"


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so the node documents stay readable."""

    def analyze_scalar(self, scalar: str) -> yaml.emitter.ScalarAnalysis:
        # YAML allows tabs in a literal block, PyYAML's analysis does not (the nftables
        # file in the documents is tab-indented): judge the text with tabs as spaces,
        # then write it as it is.
        analysis = super().analyze_scalar(scalar.replace("\t", " "))
        analysis.scalar = scalar
        return analysis

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a reader sees each value where it is used, not &id001 / *id001


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_heat(inv: Inventory, *, spark: SparkHash, inventory_name: str = "inventory.toml") -> str:
    """The template as text: parameters, resources, outputs, in reading order."""
    template = heat_template(inv, spark=spark, inventory_name=inventory_name)
    return yaml.dump(template, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def heat_template(
    inv: Inventory, *, spark: SparkHash, inventory_name: str = "inventory.toml"
) -> dict[str, Any]:
    desired = P.desired_from_inventory(inv)
    if desired.floating_ip:
        raise _unsupported(
            "network.floating_ip",
            "a stack allocates its own floating IP; leave network.floating_ip empty, or "
            "launch with `sparkstack up`, which attaches an existing address",
        )
    with_fip = bool(desired.floating_ip_pool)
    return {
        "heat_template_version": HOT_VERSION,
        "description": (
            f"sparkstack cluster {desired.cluster}: a Spark master with JupyterHub and "
            f"its workers (Spark {inv.spark.version}). After CREATE_COMPLETE, run the "
            "command in the hub_command output from the machine that holds the inventory."
        ),
        "parameter_groups": _parameter_groups(with_fip),
        "parameters": _parameters(inv, desired, spark, with_fip),
        "resources": _resources(inv, desired, spark, with_fip),
        "outputs": _outputs(desired, with_fip, inventory_name),
    }


def _unsupported(key: str, hint: str) -> UserInputError:
    return UserInputError(f"{key}: not supported by `render --heat`", hint=hint)


def _parameter_groups(with_fip: bool) -> list[dict[str, Any]]:
    networks = ["network", "external_network"] if with_fip else ["network"]
    return [
        {
            "label": "Servers",
            "parameters": ["image", "master_flavor", "worker_flavor", "worker_count", "key_name"],
        },  # fmt: skip
        {"label": "Network", "parameters": [*networks, "allowed_cidrs"]},
        {"label": "Spark", "parameters": ["spark_url", "spark_sha512"]},
    ]


def _parameters(
    inv: Inventory, desired: P.Desired, spark: SparkHash, with_fip: bool
) -> dict[str, Any]:
    def param(kind: str, label: str, text: str, default: Any = None,
              **extra: Any) -> dict[str, Any]:  # fmt: skip
        out: dict[str, Any] = {"type": kind, "label": label, "description": text}
        if default not in (None, ""):
            out["default"] = default
        out.update(extra)
        return out

    def exists(constraint: str) -> dict[str, Any]:
        return {"constraints": [{"custom_constraint": constraint}]}

    params: dict[str, Any] = {
        "image": param(
            "string",
            "Image",
            "The image every node boots (a Debian 12 or 13 "
            "cloud image, or one baked by `sparkstack image build`).",
            desired.image,
            **exists("glance.image"),
        ),  # fmt: skip
        "master_flavor": param(
            "string",
            "Master flavor",
            "The master's flavor (it runs the hub, the Spark master and every user's driver).",
            desired.master_flavor,
            **exists("nova.flavor"),
        ),  # fmt: skip
        "worker_flavor": param(
            "string",
            "Worker flavor",
            "Each worker's flavor.",
            desired.worker_flavor,
            **exists("nova.flavor"),
        ),  # fmt: skip
        "worker_count": param(
            "number",
            "Workers",
            "How many Spark workers.",
            desired.workers,
            constraints=[{"range": {"min": 0, "max": 1000}}],
        ),  # fmt: skip
        "key_name": param(
            "string",
            "Key pair",
            "The key pair whose private key logs in "
            "(`sparkstack hub` uses it: ssh.private_key in the inventory).",
            desired.keypair,
            **exists("nova.keypair"),
        ),  # fmt: skip
        "network": param(
            "string",
            "Network",
            "The private network the nodes share.",
            desired.network,
            **exists("neutron.network"),
        ),  # fmt: skip
    }
    if with_fip:
        params["external_network"] = param(
            "string", "External network", "Where the master's floating IP comes from.",
            desired.floating_ip_pool, **exists("neutron.network"))  # fmt: skip
    params["allowed_cidrs"] = param(
        "comma_delimited_list", "Allowed CIDRs",
        "Who may reach SSH and the hub (comma-separated, IPv4 and IPv6). Nothing else is "
        "open to the outside.", ",".join(desired.allowed_cidrs))  # fmt: skip
    params["spark_url"] = param(
        "string", "Spark download URL",
        f"Where nodes download Spark {inv.spark.version} (a mirror's copy works).",
        inv.spark.tarball_url(),
        constraints=[{"allowed_pattern": r"https?://[A-Za-z0-9._~:/%+-]+",
                      "description": "an http(s) URL without spaces or quotes"}])  # fmt: skip
    params["spark_sha512"] = param(
        "string", "Spark sha512",
        "The tarball's sha512, which every node checks; empty: trust the mirror's .sha512 "
        "(only if the inventory allows it).", spark.sha512 or "",
        constraints=[{"allowed_pattern": "([0-9a-f]{128})?",
                      "description": "128 lower-case hex digits"}])  # fmt: skip
    return params


def _security_group_rules(desired: P.Desired) -> dict[str, Any]:
    """The plan's rules: the fixed ones written out, the CIDR parameter's per family."""
    fixed = [_rule(r) for r in rules.security_group_rules((), (), desired.world_ports)]
    per_family = [
        {
            "repeat": {
                "for_each": {
                    "<%cidr%>": {
                        "yaql": {
                            "expression": expression,
                            "data": {"cidrs": {"get_param": "allowed_cidrs"}},
                        }
                    },
                    # repeat substitutes text: the ports as strings, Heat reads them back
                    "<%port%>": [str(port) for port in desired.open_ports],
                },
                "template": {
                    "direction": "ingress",
                    "ethertype": ethertype,
                    "protocol": "tcp",
                    "port_range_min": "<%port%>",
                    "port_range_max": "<%port%>",
                    "remote_mode": "remote_ip_prefix",
                    "remote_ip_prefix": "<%cidr%>",
                },
            }
        }  # fmt: skip
        for ethertype, expression in (
            ("IPv4", "$.data.cidrs.where(not ':' in $)"),
            ("IPv6", "$.data.cidrs.where(':' in $)"),
        )
    ]
    return {"list_concat": [fixed, *per_family]}


def _rule(rule: rules.IngressRule) -> dict[str, Any]:
    if rule.from_own_group:
        return {"direction": "ingress", "ethertype": rule.ethertype,
                "remote_mode": "remote_group_id"}  # fmt: skip
    return {"direction": "ingress", "ethertype": rule.ethertype, "protocol": "tcp",
            "port_range_min": rule.port, "port_range_max": rule.port,
            "remote_mode": "remote_ip_prefix", "remote_ip_prefix": rule.cidr}  # fmt: skip


def _document(
    inv: Inventory, role: Role, spark: SparkHash, master_ip: dict[str, Any]
) -> dict[str, Any]:
    """A node's plain document (as `render` prints it for Horizon) with the master's
    address and Spark's download left to Heat."""
    text = render_cloud_init(inv, role=role, master_ip=MASTER_IP_PLACEHOLDER, spark_hash=spark)
    params: dict[str, Any] = {
        MASTER_IP_PLACEHOLDER: master_ip,
        inv.spark.tarball_url(): {"get_param": "spark_url"},
    }
    if spark.sha512:
        params[spark.sha512] = {"get_param": "spark_sha512"}
    return {"str_replace": {"template": text, "params": params}}


def _resources(
    inv: Inventory, desired: P.Desired, spark: SparkHash, with_fip: bool
) -> dict[str, Any]:
    cluster = desired.cluster
    description = names.identity_description(cluster)
    master_ip = {"get_attr": ["master_port", "fixed_ips", 0, "ip_address"]}
    hints: dict[str, Any] = {}
    resources: dict[str, Any] = {
        "security_group": {
            "type": "OS::Neutron::SecurityGroup",
            "properties": {
                "name": names.security_group_name(cluster),
                "description": description,
                "rules": _security_group_rules(desired),
            },
        },
    }
    if desired.server_group_policy:
        resources["server_group"] = {
            "type": "OS::Nova::ServerGroup",
            "properties": {
                "name": names.server_group_name(cluster),
                "policies": [desired.server_group_policy],
            },
        }
        hints = {"scheduler_hints": {"group": {"get_resource": "server_group"}}}
    # The master's port first, so its address is known before any node boots: the
    # workers' documents carry it.
    resources["master_port"] = {
        "type": "OS::Neutron::Port",
        "properties": {
            "name": names.master_port_name(cluster),
            "network": {"get_param": "network"},
            "security_groups": [{"get_resource": "security_group"}],
            "tags": names.identity_tags(cluster),
            "value_specs": {"description": description},
        },
    }
    if with_fip:
        resources["floating_ip"] = {
            "type": "OS::Neutron::FloatingIP",
            "properties": {
                "floating_network": {"get_param": "external_network"},
                "port_id": {"get_resource": "master_port"},
                "value_specs": {"description": description},
            },
        }
    resources["master"] = {
        "type": "OS::Nova::Server",
        "properties": {
            "name": names.master_server_name(cluster),
            "image": {"get_param": "image"},
            "flavor": {"get_param": "master_flavor"},
            "key_name": {"get_param": "key_name"},
            "networks": [{"port": {"get_resource": "master_port"}}],
            **hints,
            "metadata": _metadata(cluster, names.MASTER, "0"),
            "tags": names.identity_tags(cluster),
            "user_data_format": "RAW",
            "user_data": _document(inv, "master", spark, master_ip),
        },
    }
    resources["workers"] = {
        "type": "OS::Heat::ResourceGroup",
        "properties": {
            "count": {"get_param": "worker_count"},
            # Index 0 never used: workers are <cluster>-worker-1 ... -N, as `up` names
            # them, and a smaller count removes the highest indices first.
            "removal_policies": [{"resource_list": ["0"]}],
            "resource_def": {
                "type": "OS::Nova::Server",
                "properties": {
                    "name": f"{names.workers_base_name(cluster)}-{_INDEX}",
                    "image": {"get_param": "image"},
                    "flavor": {"get_param": "worker_flavor"},
                    "key_name": {"get_param": "key_name"},
                    "networks": [{"network": {"get_param": "network"}}],
                    "security_groups": [{"get_resource": "security_group"}],
                    **hints,
                    "metadata": _metadata(cluster, names.WORKER, _INDEX),
                    "tags": names.identity_tags(cluster),
                    "user_data_format": "RAW",
                    "user_data": _document(inv, "worker", spark, master_ip),
                },
            },
        },
    }
    return resources


def _metadata(cluster: str, role: str, index: str) -> dict[str, Any]:
    """What `up` puts on its servers, and the stack that owns them."""
    return {
        P.META_CLUSTER: cluster,
        P.META_ROLE: role,
        P.META_INDEX: index,
        P.META_STACK: {"get_param": "OS::stack_name"},
    }


def _outputs(desired: P.Desired, with_fip: bool, inventory_name: str) -> dict[str, Any]:
    master_fixed = {"get_attr": ["master_port", "fixed_ips", 0, "ip_address"]}
    reach = {"get_attr": ["floating_ip", "floating_ip_address"]} if with_fip else master_fixed
    workers = {"get_attr": ["workers", "first_address"]}
    outputs: dict[str, Any] = {}
    if with_fip:
        outputs["master_floating_ip"] = {
            "description": "The master's public address (SSH and the hub).",
            "value": reach,
        }
    outputs["master_fixed_ip"] = {"description": "The master's private address.",
                                  "value": master_fixed}  # fmt: skip
    outputs["worker_fixed_ips"] = {"description": "Every worker's private address.",
                                   "value": workers}  # fmt: skip
    outputs["hub_command"] = {
        "description": "Run this next, from the machine with the inventory, after every "
        "create or resize: it finds the nodes by the cluster's name, gives them the "
        "cluster's secret, starts Spark and installs JupyterHub over SSH.",
        "value": f"sparkstack hub -i {inventory_name}",
    }
    return outputs
