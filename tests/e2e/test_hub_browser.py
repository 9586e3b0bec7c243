"""The hub in a real browser: headless Chromium logs in through the PAM form, gets
JupyterLab, opens a notebook from the launcher and runs a cell, trusting the hub's
certificate through an NSS trust store (tests/e2e/browser.py).

The namespace host has the hub but no Spark master, so the cell is plain Python; the
PySpark kernel still starts there (its startup connects Spark in the background and only
cells naming Spark wait for it; kernels/pyspark/startup.py).
"""

from __future__ import annotations

import json
import logging
import secrets
import time

import pytest

from provisioner.hub.config import HubPaths
from provisioner.hub.steps import KERNEL_PATH

from .browser import Trust, browser_session, missing_tools
from .test_hub import _inventory, _run, _skip_or_fail, hub_host  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.hosts, pytest.mark.slow]
log = logging.getLogger(__name__)


@pytest.fixture
def chromium() -> None:
    """Checked before `hub_host` boots and installs a hub for nothing."""
    if missing := missing_tools():
        _skip_or_fail(
            f"{', '.join(missing)} missing: apt-get install chromium chromium-driver libnss3-tools"
        )


def test_browser_logs_in_and_runs_a_notebook_cell(
    chromium,
    hub_host,  # noqa: F811 (the fixture imported above)
    tmp_path,
    record_property,
):
    host, shell = hub_host
    ip = host.fixed_ip
    result = _run(shell, _inventory(["alice", "bob"], ["alice"]), ip)
    password = result.passwords.get("alice")
    if password is None:  # alice was made by an earlier install: give her a known one
        password = secrets.token_urlsafe(15)
        shell.run("chpasswd", input=f"alice:{password}\n".encode())
    pem = tmp_path / "hub.pem"
    pem.write_bytes(shell.read(HubPaths().cert) or b"")
    kernel = json.loads(shell.read(KERNEL_PATH) or b"{}")["display_name"]

    artifacts = tmp_path / "browser"
    print(f"browser artifacts (kept when a step fails): {artifacts}")
    started = time.monotonic()
    # The hub's certificate is self-signed (CA:FALSE): trusted as the server's own.
    with browser_session(
        base_url=f"https://{ip}", trust=Trust(pem, is_ca=False), artifacts=artifacts
    ) as browser:
        browser.login("alice", "not-her-password")
        assert browser.login_error() == "Invalid username or password"
        browser.login("alice", password)
        assert browser.login_error() is None
        browser.wait_for_lab()
        browser.open_notebook(kernel)
        assert browser.run_cell("1 + 1") == "2"

        # A URL a cell prints becomes a link that opens in a new tab, still logged in.
        home = f"https://{ip}/hub/home"
        assert browser.run_cell(f"print({home!r})") == home
        assert browser.open_link_in_new_tab(home) == home
        assert browser.visible("#stop").text.strip() == "Stop My Server"
    took = time.monotonic() - started

    record_property("browser_s", round(took, 1))
    for step, seconds in browser.timings.items():
        record_property(f"browser {step}", seconds)
    log.warning("browser part %.1f s: %s", took, browser.timings)
