"""One way for tests to wait: poll a condition until it holds or a deadline passes.

A test waits on what it needs (a file appears, a counter moves, a line is printed),
never on a guessed number of seconds; the timeout only bounds a failure, so it can be
generous on a loaded machine without slowing a passing run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll until `condition()` is truthy and return its value; fail the test naming
    `what` (and `on_timeout()`'s detail) once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            pytest.fail(
                f"timed out after {timeout:.0f} s waiting for {what}\n{detail}", pytrace=False
            )
        time.sleep(interval)  # a poll's pace, not a synchronisation
