"""Cloud tests run against the local OpenStack test bed (tests/testbed)."""

from tests.testbed.fixtures import clean_project, testbed  # noqa: F401
