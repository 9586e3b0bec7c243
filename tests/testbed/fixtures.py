"""pytest fixtures for tests that need the local OpenStack control plane.

Import them into a conftest (or a test module) of any folder that has cloud tests:

    from tests.testbed.fixtures import clean_project, testbed  # noqa: F401

`testbed` (session) brings the bed up once; `clean_project` (function) gives each test
the project as it found it and fails the test that leaves something behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ci import in_ci
from tests.testbed import bed, leaks

log = logging.getLogger(__name__)


def cannot_run_reason() -> str | None:
    """Why this machine cannot run the control plane, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"the OpenStack test bed needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the OpenStack test bed must run as root (it installs and starts services)"
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        return "the OpenStack test bed needs Debian 12 packages (no dpkg/apt-get here)"
    return None


def bed_required() -> bool:
    """In CI (or when asked to) a bed that cannot run is a failure, never a skip."""
    return in_ci() or os.environ.get("SPARKSTACK_REQUIRE_CLOUD") == "1"


@dataclass
class Testbed:
    """What a cloud test needs to reach the bed."""

    __test__ = False  # not a test class, whatever its name

    cloud: str
    admin_cloud: str
    clouds_yaml: Path
    endpoints: dict[str, str] = field(default_factory=dict)
    up_seconds: float = 0.0

    def admin(self, **kwargs: Any):
        """A new admin Connection (admin project)."""
        return bed.connect(self.admin_cloud, config_file=self.clouds_yaml, **kwargs)

    def user(self, **kwargs: Any):
        """A new Connection as the non-admin test user in the test project."""
        return bed.connect(self.cloud, config_file=self.clouds_yaml, **kwargs)

    def write_clouds_yaml(self, path: Path | str, **kwargs: Any) -> Path:
        """A copy of the bed's clouds.yaml; see bed.write_clouds_yaml (proxies use it)."""
        return bed.write_clouds_yaml(path, **kwargs)


# This process's hold on the bed: [fd, holders]. Every conftest that imports `testbed`
# defines a session fixture of its own, so one session may take the bed several times.
_held: list[int] = [-1, 0]


def _take_bed(path: Path) -> None:
    """Hold the bed for this pytest session: one session at a time, since `clean_project`
    deletes whatever appears in the test project and the hypervisor boots every server of
    it. A second session waits here (saying so) instead of breaking the first."""
    if _held[1]:
        _held[1] += 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        started = time.monotonic()
        sys.stderr.write(f"\nanother test session holds the bed ({path}); waiting for it\n")
        fcntl.flock(fd, fcntl.LOCK_EX)
        log.info("waited %.0f s for the bed", time.monotonic() - started)
    _held[:] = [fd, 1]


def _release_bed() -> None:
    _held[1] -= 1
    if _held[1] == 0:
        os.close(_held[0])  # releases the flock
        _held[0] = -1


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    reason = cannot_run_reason()
    if reason:
        if bed_required():
            pytest.fail(
                f"cloud tests are required here (CI/SPARKSTACK_REQUIRE_CLOUD) but {reason}",
                pytrace=False,
            )
        pytest.skip(reason)
    _take_bed(bed.state_dir() / "test-session.lock")
    up_seconds = 0.0
    if bed.is_healthy():
        log.info("reusing the running test bed in %s", bed.state_dir())
        bed.reset_quotas(bed.admin_connection())
    else:
        try:
            up_seconds = bed.up()
        except Exception as exc:  # the message carries the tail of up.log
            pytest.fail(f"could not start the OpenStack test bed: {exc}", pytrace=False)
        log.info("test bed up in %.1fs", up_seconds)
    mp = pytest.MonkeyPatch()
    mp.setenv("OS_CLIENT_CONFIG_FILE", str(bed.clouds_yaml_path()))
    try:
        yield Testbed(
            cloud=bed.USER_CLOUD,
            admin_cloud=bed.ADMIN_CLOUD,
            clouds_yaml=bed.clouds_yaml_path(),
            endpoints=bed.endpoints(),
            up_seconds=up_seconds,
        )
    finally:
        mp.undo()
        _release_bed()


def config_dirs(tmp_path: Path) -> list[Path]:
    """The sparkstack config directories a test can write to: its own (cloud and e2e
    tests point XDG_CONFIG_HOME at <tmp_path>/config) and this user's real one."""
    real = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return [tmp_path / "config" / "sparkstack", Path(real) / "sparkstack"]


class ProjectAudit:
    """The test project as it was when made, checked again by :meth:`finish`.

    Whatever was created since and not deleted (cloud resources, security-group rules,
    namespace hosts, the cluster's local key and credential files under `tmp_path`) is
    deleted by `finish`, and the test fails with the list: a leak in a test is a leak the
    product's own cleanup might have too.
    """

    def __init__(self, testbed: Testbed, tmp_path: Path) -> None:
        self.admin = testbed.admin()
        self.dirs = config_dirs(tmp_path)
        self.before = leaks.take(self.admin, config_dirs=self.dirs)

    def finish(self) -> None:
        found = leaks.leaked(self.admin, self.before, config_dirs=self.dirs)
        if found:
            leaks.clean(self.admin, self.before, config_dirs=self.dirs)
            pytest.fail("the test left these behind (deleted now): " + ", ".join(found),
                        pytrace=False)  # fmt: skip


@pytest.fixture
def clean_project(testbed: Testbed, tmp_path: Path) -> Iterator[Testbed]:
    """The test project as it was before the test, and again after it (ProjectAudit)."""
    audit = ProjectAudit(testbed, tmp_path)
    yield testbed
    audit.finish()
