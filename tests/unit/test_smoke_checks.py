"""smoke's checks are checks, not `assert`s: a wrong answer fails the check under
`python -O` too, and a bug in smoke itself is not reported as a failed cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.errors import RemoteError
from provisioner.workflows.smoke import (
    JOB_ANSWER,
    Check,
    SmokeReport,
    _Failed,
    _Runner,
    executor_hosts,
    expect_answer,
)

ROOT = Path(__file__).resolve().parents[2]


def test_a_wrong_kernel_answer_is_a_remote_error_naming_both_answers() -> None:
    with pytest.raises(RemoteError, match=r"answered '41', not '42'"):
        expect_answer("41", "42")
    expect_answer(JOB_ANSWER, JOB_ANSWER)


# Run in a separate interpreter: under -O this test's own asserts would be gone too.
UNDER_O = """
from provisioner.errors import RemoteError
from provisioner.workflows.smoke import executor_hosts, expect_answer
for check, args in ((expect_answer, ("41", "42")),
                    (executor_hosts, ('["10.0.0.9"] app-1', {"10.0.0.5"}))):
    try:
        check(*args)
        print("passed")
    except RemoteError:
        print("failed")
"""


def test_wrong_answers_fail_their_checks_under_python_dash_o() -> None:
    proc = subprocess.run(
        [sys.executable, "-O", "-c", UNDER_O], cwd=ROOT, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["failed", "failed"]


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ('["10.0.0.9"] app-1', "app-1 had executors only on"),
        ("Traceback (most recent call last)", "not the executor hosts"),
        ("", "not the executor hosts"),
        ('{"a": 1} app-1', "not the executor hosts"),
    ],
)
def test_executor_output_without_a_worker_fails_the_check(output: str, error: str) -> None:
    with pytest.raises(RemoteError, match=error):
        executor_hosts(output, {"10.0.0.5"})


def test_executor_output_names_the_application_and_its_workers() -> None:
    out = '["10.0.0.5", "10.0.0.6", "10.0.0.1"] app-20261206-0001\n'
    assert executor_hosts(out, {"10.0.0.5", "10.0.0.6"}) == (
        "app-20261206-0001",
        {"10.0.0.5", "10.0.0.6"},
    )


def test_a_remote_error_is_a_failed_check_and_a_bug_is_not() -> None:
    seen: list[Check] = []
    run = _Runner(SmokeReport(), seen.append)
    with pytest.raises(_Failed), run.check("the job"):
        expect_answer("0", JOB_ANSWER)
    assert [(c.name, c.ok) for c in seen] == [("the job", False)]
    assert "not '333328333350000'" in seen[0].detail

    with pytest.raises(AssertionError), run.check("a check with a bug in it"):
        raise AssertionError("smoke's own mistake")
    assert len(seen) == 1  # the bug was not recorded as the cluster failing a check
