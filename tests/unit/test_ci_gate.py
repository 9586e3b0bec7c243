"""The one reading of CI that every test gate uses."""

from __future__ import annotations

import pytest

from tests.ci import in_ci


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False), ("", False), ("0", False), ("false", False), ("False", False),
        ("NO", False), (" no ", False), ("true", True), ("1", True), ("yes", True),
        ("TRUE", True),
    ],
)  # fmt: skip
def test_ci_is_on_unless_unset_or_a_no(value, expected):
    env = {} if value is None else {"CI": value}
    assert in_ci(env) is expected
