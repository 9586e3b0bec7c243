"""The SSH edge: the only package that imports paramiko (sessions with pinned host keys,
workers reached through the master, and the waits of a booting node)."""

from __future__ import annotations

from provisioner.remote.session import (
    HostKeys,
    PhaseCallback,
    Result,
    Session,
    Target,
    connect,
    on_each,
)
from provisioner.remote.waits import wait_ssh, wait_tcp

__all__ = [
    "HostKeys",
    "PhaseCallback",
    "Result",
    "Session",
    "Target",
    "connect",
    "on_each",
    "wait_ssh",
    "wait_tcp",
]
