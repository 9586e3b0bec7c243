"""Command lines for the system's OpenSSH client: `sparkstack ssh`, `logs` and `tunnel`.

An interactive shell needs what only a real ssh client does well (the terminal's raw mode,
window size, escape sequences), so these commands run `ssh` itself, held to the same trust
as the provisioner's own sessions: a known_hosts file of the cluster's own with just the
keys pinned for the nodes involved (from their console logs, or the first-use record),
strict checking, no user or system ssh configuration, and nothing written to ~/.ssh.
Workers are reached through the master (`-W`, as `ssh -J` does).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from provisioner.errors import UserInputError
from provisioner.hostkeys import HostKey, lookup_name
from provisioner.interrupts import signum_of

KNOWN_HOSTS = "ssh_known_hosts"


@dataclass(frozen=True)
class Hop:
    """One node as ssh reaches it."""

    name: str
    address: str


def ssh_binary() -> str:
    found = shutil.which("ssh")
    if not found:
        raise UserInputError(
            "the OpenSSH client (`ssh`) is not installed on this machine",
            hint="install it (Debian/Ubuntu: apt install openssh-client)",
        )
    return found


def write_known_hosts(path: Path, keys: Mapping[str, Iterable[HostKey]]) -> Path:
    """A known_hosts file holding exactly `keys` (address -> keys), rewritten whole."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = [key.line(lookup_name(address)) for address, ks in keys.items() for key in ks]
    tmp = path.with_suffix(".new")
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Client:
    """Builds ssh command lines for one cluster."""

    user: str
    key_file: Path
    known_hosts: Path
    master: Hop
    binary: str = "ssh"

    def _options(self) -> list[str]:
        return [
            "-F", "none",  # neither ~/.ssh/config nor /etc/ssh/ssh_config applies
            "-i", str(self.key_file),
            "-l", self.user,
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UpdateHostKeys=no",
            "-o", "ConnectTimeout=20",
            "-o", "ServerAliveInterval=15",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def argv(self, node: Hop, *, extra: Sequence[str] = (), command: str | None = None
             ) -> list[str]:  # fmt: skip
        """ssh to `node` (through the master when it is a worker), running `command` if
        given, else an interactive shell."""
        args = [self.binary, *self._options()]
        if node != self.master:
            jump = [self.binary, *self._options(), "-W", "%h:%p", self.master.address]
            args += ["-o", "ProxyCommand=" + " ".join(shlex.quote(a) for a in jump)]
        args += [*extra, "--", node.address]
        if command is not None:
            args.append(command)
        return args


def exit_status(returncode: int) -> int:
    """A child killed by a signal reports -N; shells report that as 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def _tee(source: IO[bytes], kept: list[str]) -> None:
    """Copy ssh's stderr to ours as it comes, keeping its last lines."""
    for line in iter(source.readline, b""):
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
        kept[:] = [*kept[-19:], line.decode(errors="replace").rstrip()]


def run(argv: list[str], *, stderr_tail: list[str] | None = None) -> int:
    """Run ssh in the foreground and give back its exit status. Ctrl-C reaches ssh from
    the terminal (same process group); here it only means: wait for ssh to finish. A
    SIGTERM or SIGHUP sent to sparkstack alone (a CI runner cancelling) is passed on.
    With `stderr_tail`, ssh's stderr is still shown as it comes, and its last lines are
    left there too (ssh's own message when it could not connect, for the caller's error)."""
    proc = subprocess.Popen(argv, stderr=None if stderr_tail is None else subprocess.PIPE)
    copier = None
    if stderr_tail is not None and proc.stderr is not None:
        copier = threading.Thread(target=_tee, args=(proc.stderr, stderr_tail), daemon=True)
        copier.start()
    try:
        while True:
            try:
                code = exit_status(proc.wait())
                if copier is not None:
                    # ssh has exited; a ProxyCommand it ran may hold the pipe a moment longer
                    copier.join(timeout=5)
                return code
            except KeyboardInterrupt as exc:
                if signum_of(exc) != signal.SIGINT:
                    proc.send_signal(signum_of(exc))
                continue
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
