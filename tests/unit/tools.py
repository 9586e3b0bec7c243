"""External checkers the render tests run (cloud-init's schema validator, shellcheck)."""

from __future__ import annotations

import os
import shutil

import pytest

APT = {
    "cloud-init": "cloud-init",
    "shellcheck": "shellcheck",
    "unshare": "util-linux",
    "systemd-analyze": "systemd",
}


def need(tool: str) -> str:
    """Path of ``tool``. Missing in CI is a failure (the check would silently vanish);
    elsewhere a skip that says what to install."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} not found: apt-get install {APT.get(tool, tool)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
