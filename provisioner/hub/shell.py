"""The only thing hub code knows about the master: a root shell that satisfies :class:`Shell`.

provisioner/remote.py (paramiko) provides one over SSH (wrap its session in :class:`Sudo`
unless it logged in as root); the e2e tests provide one that enters a namespace host. Hub
code never imports either.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# The hub runs on the master only; errors name it so.
MASTER = "master"


class Shell(Protocol):
    """A root shell on one node.

    ``run`` executes ``command`` with /bin/sh as root and returns (exit status, stdout,
    stderr); with ``check`` a non-zero status raises :class:`~provisioner.errors.RemoteError`
    quoting stderr. Secrets travel only in ``input`` (stdin), never in ``command``, which
    may be logged. ``put`` writes a file atomically with the given mode and owner, never
    readable by others while it is written, and returns True if content, mode or owner
    changed. ``read`` returns a file's bytes, or None if it does not exist.
    """

    def run(
        self,
        command: str,
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> tuple[int, str, str]: ...

    def put(self, path: str, data: bytes, *, mode: int, owner: str, group: str) -> bool: ...

    def read(self, path: str) -> bytes | None: ...


class _SudoCapable(Protocol):
    def run(self, command: str, *, sudo: bool = ..., input: bytes | None = ...,
            timeout: float = ..., check: bool = ...) -> tuple[int, str, str]: ...

    def put(self, path: str, data: bytes, *, mode: int = ..., owner: str | None = ...,
            group: str | None = ..., sudo: bool = ...) -> bool: ...

    def read(self, path: str, *, sudo: bool = ...) -> bytes | None: ...


class Sudo:
    """A :class:`Shell` from a login session whose methods take ``sudo=`` (remote.Session):
    every call is made as root."""

    def __init__(self, session: _SudoCapable) -> None:
        self._session = session

    def run(self, command: str, *, input: bytes | None = None, timeout: float | None = None,
            check: bool = True) -> tuple[int, str, str]:
        extra = {} if timeout is None else {"timeout": timeout}
        status, out, err = self._session.run(command, sudo=True, input=input, check=check,
                                             **extra)
        return status, out, err

    def put(self, path: str, data: bytes, *, mode: int, owner: str, group: str) -> bool:
        return self._session.put(path, data, mode=mode, owner=owner, group=group, sudo=True)

    def read(self, path: str) -> bytes | None:
        return self._session.read(path, sudo=True)


@dataclass(frozen=True)
class Step:
    """What one ensure_* step found: whether it changed the node, and in a few words how."""

    name: str
    changed: bool
    detail: str = ""

    def __str__(self) -> str:
        state = "changed" if self.changed else "unchanged"
        return f"{self.name}: {state}" + (f" ({self.detail})" if self.detail else "")


def q(value: str) -> str:
    """Quote one word for /bin/sh."""
    return shlex.quote(value)
