"""The one reading of the CI variable that every test gate uses.

CI is on when the variable is set to anything but "", "0", "false" or "no" (any case):
GitHub and GitLab set "true", some runners "1" or "yes", and a person may export CI=false
to say "not CI". Under CI a check that cannot run is a failure, never a silent skip.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def in_ci(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get("CI", "")
    return value.strip().lower() not in ("", "0", "false", "no")
