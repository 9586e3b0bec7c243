"""External checkers the render tests run (cloud-init's schema validator, shellcheck)."""

from __future__ import annotations

import shutil

import pytest

from tests.ci import in_ci

APT = {
    "cloud-init": "cloud-init",
    "shellcheck": "shellcheck",
    "unshare": "util-linux",
    "systemd-analyze": "systemd",
    "nft": "nftables",
    "sshd": "openssh-server",
}


def need(tool: str) -> str:
    """Path of ``tool``. Missing in CI is a failure (the check would silently vanish);
    elsewhere a skip that says what to install."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} not found: apt-get install {APT.get(tool, tool)}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path
