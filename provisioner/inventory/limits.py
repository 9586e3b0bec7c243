"""jupyterhub.limits: what each hub user's server, and all it starts, may use on the master."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from provisioner.inventory.fields import (
    MAX_CORES,
    Table,
    memory,
    memory_mib,
    one_line,
    show,
)

# Each notebook besides its driver's heap: the JVM's own memory, the user's JupyterLab
# server and the kernel. A user's memory limit below the driver plus this kills the
# driver as it starts.
NOTEBOOK_EXTRA_MIB = 512
AUTO = "auto"


class LimitsConfig(Table):
    """What each hub user's server, and everything it starts, may use on the master."""

    # "auto": the master's memory less what the hub and Spark master need, shared among
    # the users; else a size like "2g".
    memory: str = AUTO
    # "auto": the master's vCPUs shared among the users (at least one); else cores, e.g. 1.5.
    cpu: float | Literal["auto"] = "auto"

    @field_validator("memory")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        text = value.strip().lower()
        if text == AUTO:
            return text
        try:
            return memory(text)
        except ValueError as exc:
            raise ValueError(f'must be "auto" or {str(exc).removeprefix("must be ")}') from None

    @field_validator("cpu", mode="before")
    @classmethod
    def _check_cpu(cls, value: Any) -> Any:
        if isinstance(value, str) and one_line(value).strip().lower() == AUTO:
            return AUTO
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'must be "auto" or a number of cores like 1.5, got {show(value)}')
        # systemd's CPUQuota= is a percentage of one core: 1% is the finest step.
        if not 0.01 <= value <= MAX_CORES:
            raise ValueError(f"must be between 0.01 and {MAX_CORES} cores, got {show(value)}")
        return float(value)

    def memory_limit_mib(self) -> int | None:
        """The per-user memory the inventory names, in MiB; None for "auto"."""
        return None if self.memory == AUTO else memory_mib(self.memory)

    def cpu_limit(self) -> float | None:
        """The per-user CPU the inventory names, in cores; None for "auto"."""
        return None if self.cpu == AUTO else float(self.cpu)
