"""Two streams of tests side by side (pytest-xdist, `-n 2 --dist loadgroup` in pyproject).

The test beds' tests ("bed") share one OpenStack project and one set of namespace hosts,
and each checks the whole project for leaks when it ends: they run one after another, in
file order, on one worker. Everything else ("local": pure code, loopback servers, sshd in
namespaces of its own) runs on the other worker meanwhile. The beds' tests mostly wait on
boots and the cloud, so the local ones cost them little, and the run ends about when the
beds' tests do. `pytest -n 0` runs everything in one process, as before.
"""

from __future__ import annotations

import pytest

BED_MARKERS = ("cloud", "hosts")
# A test that asks for one of these uses a bed, whatever its markers say.
BED_FIXTURES = ("testbed", "clean_project", "hostbed", "hub_host", "team")


def uses_a_bed(item: pytest.Item) -> bool:
    if any(item.get_closest_marker(m) is not None for m in BED_MARKERS):
        return True
    return any(f in getattr(item, "fixturenames", ()) for f in BED_FIXTURES)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group("bed" if uses_a_bed(item) else "local"))
