"""The Orchestration path on a real Heat (the bed's heat-api and heat-engine, talking to
its Nova, Neutron and Glance): `render --heat` -> Heat validates it -> a stack made with
what a Horizon user fills in (the key pair; every other field keeps its default) ->
CREATE_COMPLETE -> the stack's hub_command output (`sparkstack hub`, no address: the
cluster is found by name) finishes the cluster -> `status` and `smoke` find it by name ->
`scale` to 2 resizes the stack and the new worker joins, `scale` to 1 drains worker 2
first, then the stack shrinks -> `sparkstack up` refuses, naming the stack ->
`sparkstack down` deletes the stack and waits, and nothing of it is left (the leak
audit)."""

from __future__ import annotations

import shlex
from typing import Any

import openstack.exceptions as os_exc
import pytest
import yaml

from provisioner import plan as P
from tests.cloud.test_workflows import cli_env, run_cli

from .conftest import wait_for
from .test_cluster import write_inventory

pytestmark = [pytest.mark.hosts, pytest.mark.slow]


def stack_status(orchestration: Any, stack_id: str) -> str:
    return str(orchestration.get_stack(stack_id).status)


def settled(orchestration: Any, stack_id: str, action: str) -> bool:
    status = stack_status(orchestration, stack_id)
    if status == f"{action}_FAILED":
        stack = orchestration.get_stack(stack_id)
        raise AssertionError(f"stack {action} failed: {stack.status_reason}")
    return status == f"{action}_COMPLETE"


def outputs(orchestration: Any, stack_id: str) -> dict[str, Any]:
    stack = orchestration.get_stack(stack_id)
    return {o["output_key"]: o["output_value"] for o in stack.outputs}


def hub_argv(command: str, inv_path: str) -> list[str]:
    """The hub_command output, run here: its inventory is the test's file."""
    argv = shlex.split(command)
    assert argv == ["sparkstack", "hub", "-i", "inventory.toml"], command
    return ["hub", "-i", inv_path]


def test_a_stack_from_the_rendered_template_becomes_a_working_cluster(
    hostbed, clean_project, keypair, tmp_path
):
    conn = clean_project.user()
    orchestration = conn.orchestration
    key_name, key = keypair
    key_file = tmp_path / "id_rsa"
    key.write_private_key_file(str(key_file))
    inv_path = write_inventory(tmp_path / "inventory.toml", name="hs", users=["alice"])
    inv_path.write_text(inv_path.read_text().replace(
        "[ssh]\n", f'[ssh]\nkeypair = "{key_name}"\nprivate_key = "{key_file}"\n', 1))  # fmt: skip
    env = cli_env(tmp_path, clean_project.clouds_yaml)
    template_file = tmp_path / "cluster.yaml"
    run_cli("render", "--heat", "-i", str(inv_path), "-o", str(template_file), env=env)
    template = yaml.safe_load(template_file.read_text())

    # Heat's own reading of it: the form's fields, labels included
    checked = orchestration.validate_template(template=template, environment=None,
                                              template_url=None)  # fmt: skip
    form = checked.parameters
    assert form["key_name"]["Label"] == "Key pair"
    assert form["worker_count"]["Default"] == 2
    # a wrong value in the form gets Heat's own error, naming the field and the value
    with pytest.raises(os_exc.HttpException) as refused:
        orchestration.create_stack(name="hs-bad", template=template,
                                   parameters={"key_name": key_name,
                                               "worker_flavor": "m1.nonesuch"})  # fmt: skip
    assert "worker_flavor" in str(refused.value)
    assert "m1.nonesuch" in str(refused.value)

    wanted = {"key_name": key_name, "worker_count": 1}
    stack = orchestration.create_stack(name="hs-stack", template=template, parameters=wanted)
    try:
        wait_for(lambda: settled(orchestration, stack.id, "CREATE"), timeout=300,
                 what="stack CREATE_COMPLETE")  # fmt: skip
        out = outputs(orchestration, stack.id)
        assert len(out["worker_fixed_ips"]) == 1
        servers = {s.name: s for s in conn.compute.servers(details=True)}
        assert {"hs-master", "hs-worker-1"} <= set(servers)
        for name in ("hs-master", "hs-worker-1"):
            assert servers[name].metadata[P.META_CLUSTER] == "hs"
            assert servers[name].metadata[P.META_STACK] == "hs-stack"

        proc = run_cli(*hub_argv(out["hub_command"], str(inv_path)), env=env, timeout=900)
        assert "every worker is ALIVE on the Spark master" in proc.stderr
        # found by name, like an `up`-made cluster: no address given
        status = run_cli("status", "-i", str(inv_path), "--json", env=env)
        assert '"hs-worker-1"' in status.stdout
        run_cli("smoke", "-i", str(inv_path), env=env, timeout=600)
        # scale goes through the stack: Heat adds hs-worker-2, which gets the secret
        grown = run_cli("scale", "-i", str(inv_path), "--workers", "2", "--yes", env=env,
                        timeout=900)  # fmt: skip
        assert "resizing Heat stack hs-stack to 2 worker(s)" in grown.stderr
        assert "every worker is ALIVE on the Spark master" in grown.stderr
        assert "server hs-worker-2" in grown.stdout
        assert stack_status(orchestration, stack.id) == "UPDATE_COMPLETE"
        assert len(outputs(orchestration, stack.id)["worker_fixed_ips"]) == 2
        status = run_cli("status", "-i", str(inv_path), "--json", env=env)
        assert '"hs-worker-2"' in status.stdout
        # and back: hs-worker-2 is drained first, then the stack drops it
        shrunk = run_cli("scale", "-i", str(inv_path), "--workers", "1", "--yes", env=env,
                         timeout=900)  # fmt: skip
        assert "decommission" in shrunk.stderr + shrunk.stdout
        assert {s.name for s in conn.compute.servers()} >= {"hs-master", "hs-worker-1"}
        assert "hs-worker-2" not in {s.name for s in conn.compute.servers()}
        # up leaves a stack's servers to the stack
        refused = run_cli("up", "-i", str(inv_path), env=env, check=False)
        assert refused.returncode == 2, refused.stderr
        assert "Heat stack hs-stack" in refused.stderr

        down = run_cli("down", "-i", str(inv_path), "--yes", env=env, timeout=900)
        assert "Heat stack hs-stack" in down.stdout + down.stderr
        assert orchestration.find_stack(stack.id, ignore_missing=True) is None or \
            stack_status(orchestration, stack.id) == "DELETE_COMPLETE"
    finally:
        orchestration.delete_stack(stack.id, ignore_missing=True)
        found = orchestration.find_stack(stack.id, ignore_missing=True)
        if found is not None:
            orchestration.wait_for_delete(found, interval=1, wait=300)
    assert not [s for s in conn.compute.servers() if s.name.startswith("hs-")]
