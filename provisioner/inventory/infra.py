"""The cloud side of the inventory: cluster, network, ssh, master and workers tables."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from provisioner.inventory.fields import (
    NAME_RE,
    UNIX_USER_RE,
    KeyProblems,
    NonEmptyStr,
    OptionalStr,
    Table,
    path_value,
    show,
)


class ClusterConfig(Table):
    name: str
    cloud: OptionalStr = None
    image: NonEmptyStr
    max_parallel_creates: int = Field(default=10, ge=1, le=100)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(
                f"must be 1-40 characters of lowercase letters, digits and '-', start with a "
                f"letter and not end with '-', got {show(value)}"
            )
        return value


class NetworkConfig(Table):
    name: NonEmptyStr
    floating_ip_pool: OptionalStr = "public"
    floating_ip: OptionalStr = None
    allowed_cidrs: list[str] = Field(default_factory=list)

    @field_validator("floating_ip")
    @classmethod
    def _check_floating_ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"not an IP address: {show(value)}") from None

    @field_validator("allowed_cidrs")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        problems: list[tuple[str | int, str]] = []
        seen: list[str] = []
        for index, text in enumerate(value):
            try:
                net = ipaddress.ip_network(text.strip(), strict=True)
            except ValueError as exc:
                if "host bits set" in str(exc):
                    fixed = ipaddress.ip_network(text.strip(), strict=False)
                    problems.append(
                        (index, f'host bits set in {show(text)} (did you mean "{fixed}"?)')
                    )
                else:
                    problems.append((index, f'not a CIDR like "203.0.113.0/24": {show(text)}'))
                continue
            # Duplicate security group rules are a 409 from Neutron: keep each range once.
            if str(net) not in seen:
                seen.append(str(net))
        if problems:
            raise KeyProblems(problems)
        return seen

    def open_to_everyone(self) -> list[str]:
        """The allowed_cidrs that are the whole internet: allowed, and worth a warning."""
        return [c for c in self.allowed_cidrs if ipaddress.ip_network(c).prefixlen == 0]


class SshConfig(Table):
    user: str = "debian"
    keypair: OptionalStr = None
    private_key: Path | None = None
    # How a node's host key is trusted: read from its console log (cloud-init prints it
    # there) or, for clouds that hide the console, recorded on first contact.
    host_key_trust: Literal["console", "first-use"] = "console"
    # Seconds from the servers' creation until every node's boot script is done: a stock
    # image installs Java, the venv and Node.js at boot (minutes on a slow mirror).
    boot_timeout: int = Field(default=1200, ge=60, le=86400)

    @field_validator("user")
    @classmethod
    def _check_user(cls, value: str) -> str:
        if not UNIX_USER_RE.fullmatch(value):
            raise ValueError(f"not a valid Unix user name: {show(value)}")
        return value

    @field_validator("private_key", mode="before")
    @classmethod
    def _check_private_key(cls, value: Any, info: ValidationInfo) -> Any:
        return path_value(value, info)

    @model_validator(mode="after")
    def _keypair_needs_key(self) -> SshConfig:
        if self.keypair and self.private_key is None:
            raise KeyProblems(
                [
                    (
                        "private_key",
                        "must be set when ssh.keypair is set (the "
                        "private key of that keypair, for SSH)",
                    )
                ]
            )
        return self


class MasterConfig(Table):
    flavor: NonEmptyStr


class WorkersConfig(Table):
    flavor: NonEmptyStr
    count: int = Field(default=2, ge=0, le=1000)
    anti_affinity: Literal["soft", "hard", "none"] = "soft"
    # Seconds `scale` waits for a removed worker's executors to finish and leave.
    decommission_timeout: float = Field(default=300.0, ge=0, le=86400)
