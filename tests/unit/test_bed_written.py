"""The bed's compute driver keeps its own copy of what a snapshot leaves out (nova-compute
runs another Python and cannot import the hosts module): the two lists must not drift."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.testbed.hosts.hosts import BED_WRITTEN

DRIVER = Path(__file__).resolve().parents[1] / "testbed" / "controlplane" / "console_driver.py"


def test_the_drivers_copy_of_what_a_host_boot_writes_matches_the_hosts_module():
    tree = ast.parse(DRIVER.read_text())
    [copy] = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "BED_WRITTEN" for t in node.targets)
    ]
    assert copy == BED_WRITTEN
