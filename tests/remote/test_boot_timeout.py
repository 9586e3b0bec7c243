"""`ssh.boot_timeout` is the SSH stage's overall wait, end to end: the inventory's value is
what the wait is given, and a node that never finishes booting (a real sshd on a host with
no ready marker) ends the wait with a hint naming that key and the value in force."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from provisioner import plan as P
from provisioner.errors import RemoteError
from provisioner.inventory import load_inventory
from provisioner.workflows.context import Reporter
from provisioner.workflows.ssh_stage import Access, bring_up

from .conftest import ClientKey, JumpNet, SshdFactory


def _inventory(path: Path, *, key: Path, boot_timeout: int) -> Path:
    path.write_text(
        '[cluster]\nname = "boot"\ncloud = "c"\nimage = "debian-12"\n'
        '[network]\nname = "private"\nallowed_cidrs = ["203.0.113.0/24"]\n'
        '[master]\nflavor = "m1.large"\n[workers]\nflavor = "m1.medium"\ncount = 1\n'
        f'[ssh]\nuser = "root"\nprivate_key = "{key}"\nhost_key_trust = "first-use"\n'
        f"boot_timeout = {boot_timeout}\n"
    )
    return path


def test_a_boot_that_never_ends_stops_at_ssh_boot_timeout_with_a_hint_naming_it(
    jump_net: JumpNet,
    sshd_factory: SshdFactory,
    client_key: ClientKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    inv = load_inventory(_inventory(tmp_path / "inv.toml", key=client_key.path, boot_timeout=61))
    access = Access.from_inventory(inv)
    assert access.boot_timeout == 61  # the inventory's value, not the 1200 s default

    # A host whose sshd answers but whose boot never writes its ready marker. Waiting the
    # inventory's minimum (60 s) would only slow the test: the same Access, 3 s.
    sshd_factory.start(jump_net.master_address, 22, netns=jump_net.master_ns)
    address = jump_net.master_address
    master = P.Node(name="boot-master", role=P.MASTER, index=0, id="m", status="ACTIVE",
                    fixed_ip=address, floating_ip=address, flavor="m1.large",
                    created="2026-01-01T00:00:00Z", fault="")  # fmt: skip
    observed = P.Observed(cluster="boot", nodes=[master], security_group=None,
                          server_group=None, master_port=None, floating_ip=None,
                          attached_ip="", keypair=None)  # fmt: skip
    with pytest.raises(RemoteError) as caught:
        bring_up(observed, cloud=None, access=dataclasses.replace(access, boot_timeout=3),
                 reporter=Reporter(), workers=[])  # fmt: skip
    error = caught.value
    assert (error.resource, error.step) == ("boot-master", "cloud-init")
    assert "boot did not finish in time" in error.message
    hint = error.hint or ""
    assert "raise ssh.boot_timeout in the inventory (now 3 s)" in hint, hint

    # The key the hint names is the inventory's own: setting it is what changes the wait.
    named = re.search(r"raise (\w+)\.(\w+) in the inventory", hint)
    assert named is not None
    section, key = named.groups()
    assert getattr(getattr(inv, section), key) == 61
