"""The SSH edge: the only module that imports paramiko.

Every connection verifies the host: either against keys pinned per node (read from the node's
console by the caller, see hostkeys.parse_console) or, in "first-use" mode, against a
known_hosts file that records a node's key the first time and refuses any change after.
Nothing is ever accepted blindly (no AutoAddPolicy). Workers have no public address, so they
are reached through the master's SSH connection (a direct-tcpip channel, as `ssh -J` does).

Callers get RemoteError for every failure, never a paramiko exception.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import logging
import posixpath
import select
import shlex
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import paramiko

from provisioner.errors import RemoteError
from provisioner.hostkeys import HostKey, KnownHosts, lookup_name

log = logging.getLogger(__name__)

# (node name, phase); phases in order: "tcp" (waiting for the port), "ssh" (waiting to log
# in), "connected" (logged in; "ready" is left to callers, for a node that finished booting).
# Lets the CLI show per-node progress without knowing about SSH.
PhaseCallback = Callable[[str, str], None]

# What a booting node throws at us: refused/reset/unreachable (OSError), sshd restarting
# mid-handshake (EOFError, SSHException), a jump channel the master cannot open yet
# (ChannelException). Host-key and authentication failures are RemoteError by then and
# are never retried: they would fail the same way again.
_TRANSIENT: tuple[type[BaseException], ...] = (OSError, EOFError, paramiko.SSHException)

# Exit status read() uses for "no such file", distinct from cat's own failures.
_ABSENT = 44

# One attempt never waits longer than this, so a deadline far away still gets retries.
_ATTEMPT_TIMEOUT = 15.0
# How long output may still come after the exit status, before the channel's EOF.
EOF_GRACE = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """Where to log in. `address` is the floating IP for the master, the private IP for a
    worker reached through it; host keys are filed under `address` (and port)."""

    name: str
    address: str
    user: str
    port: int = 22

    @property
    def lookup_name(self) -> str:
        return lookup_name(self.address, self.port)


class Result(NamedTuple):
    status: int
    stdout: str
    stderr: str


def _pkey(key: HostKey) -> paramiko.PKey:
    return paramiko.PKey.from_type_string(key.key_type, base64.b64decode(key.base64))


def _hostkey(key: paramiko.PKey) -> HostKey:
    return HostKey(key.get_name(), base64.b64encode(key.asbytes()).decode("ascii"))


class _RecordFirstUse(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only when the file has no key for the name: record it and go on.

    record() re-reads the file under its lock, so two threads racing for one name cannot
    both "win" with different keys."""

    def __init__(self, known_hosts: KnownHosts) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        self.known_hosts.record(hostname, _hostkey(key))


class HostKeys:
    """How connections trust hosts: keys pinned per node name, or first use (known_hosts).

    Build one with HostKeys.pinned(...) or HostKeys.first_use(directory)."""

    def __init__(self, pinned: dict[str, list[HostKey]], known_hosts: KnownHosts | None) -> None:
        self._pinned = pinned
        self.known_hosts = known_hosts

    @classmethod
    def pinned(cls, keys: Mapping[str, Iterable[HostKey]] | None = None) -> HostKeys:
        return cls({name: list(k) for name, k in (keys or {}).items()}, None)

    @classmethod
    def first_use(cls, directory: Path) -> HostKeys:
        return cls({}, KnownHosts(directory))

    def pin(self, node: str, keys: Iterable[HostKey]) -> None:
        """Pin (replace) a node's keys, e.g. once its console has printed them."""
        if self.known_hosts is not None:
            raise ValueError("pin() is for pinned mode; first-use mode learns keys itself")
        self._pinned[node] = list(keys)

    def expected(self, target: Target) -> list[HostKey]:
        if self.known_hosts is not None:
            return self.known_hosts.get(target.lookup_name)
        return self._pinned.get(target.name, [])

    def prepare(self, client: paramiko.SSHClient, target: Target) -> None:
        """Load what we trust for `target` into a fresh client, and how to treat the unknown."""
        keys = self.expected(target)
        if self.known_hosts is None and not keys:
            raise RemoteError(
                f"no host key is pinned for {target.name}, refusing to connect",
                resource=target.name, step="ssh",
                hint="its console has not printed the SSH HOST KEY KEYS block yet; wait for "
                "cloud-init to finish, or use the first-use trust mode",
            )
        store = client.get_host_keys()
        for key in keys:
            # paramiko files keys under the host, or "[host]:port" off 22, even with sock=.
            store.add(target.lookup_name, key.key_type, _pkey(key))
        if self.known_hosts is not None and not keys:
            client.set_missing_host_key_policy(_RecordFirstUse(self.known_hosts))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())

    def mismatch(self, target: Target, offered: paramiko.PKey) -> RemoteError:
        wanted = ", ".join(f"{k.key_type} {k.fingerprint}" for k in self.expected(target))
        got = _hostkey(offered)
        if self.known_hosts is not None:
            hint = f"if the node was really rebuilt, delete its line from {self.known_hosts.path}"
        else:
            hint = ("someone may be intercepting the connection, or the node was rebuilt; "
                    "compare with the SSH HOST KEY KEYS block of its console log")
        return RemoteError(
            f"host key of {target.name} ({target.lookup_name}) does not match: expected "
            f"{wanted or 'none'}, offered {got.key_type} {got.fingerprint}",
            resource=target.name, step="ssh", hint=hint,
        )


def _load_key(key_file: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(key_file)
    except (OSError, paramiko.SSHException, ValueError) as e:
        raise RemoteError(f"cannot read the private key {key_file}: {e}", resource=str(key_file),
                          step="ssh", hint="the cluster's key is an unencrypted OpenSSH private "
                          "key file (ed25519, ecdsa or rsa)") from e


class Session:
    """One logged-in SSH connection. Use as a context manager, or call close()."""

    def __init__(self, target: Target, client: paramiko.SSHClient) -> None:
        self.target = target
        self._client = client

    @property
    def transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(f"the SSH connection to {self.target.name} is closed",
                              resource=self.target.name, step="ssh")
        return transport

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wrap(self, command: str, sudo: bool) -> str:
        # root on a test host or a custom image may have no sudo at all; it needs none.
        if sudo and self.target.user != "root":
            return "sudo -n -- sh -c " + shlex.quote(command)
        return command

    def _exec(self, command: str, *, input: bytes, timeout: float,
              sink: Callable[[bytes], object] | None = None) -> tuple[int, bytes, bytes]:
        """`sink` given: stdout goes to it as it comes, and is not kept."""
        where = self.target.name
        try:
            chan = self.transport.open_session(timeout=timeout)
        except _TRANSIENT as e:
            raise RemoteError(f"cannot open a session on {where}: {e}", resource=where,
                              step="ssh") from e
        out, err = bytearray(), bytearray()
        end = time.monotonic() + timeout
        eof_wait: float | None = None
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            if input:
                chan.sendall(input)
            chan.shutdown_write()  # EOF on the remote stdin, so `cat > file` ends
            while True:
                # Drain both streams as they come: they share one SSH window, and a command
                # that fills stderr while we wait on stdout would otherwise stall.
                while chan.recv_ready():
                    chunk = chan.recv(65536)
                    if sink is None:
                        out += chunk
                    else:
                        sink(chunk)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not (chan.recv_ready()
                                                     or chan.recv_stderr_ready()):
                    # sshd may send the exit status before the last of the output (it drains
                    # the pipe after the command exits): the output ends at the channel's
                    # EOF. A process left behind with the pipe open keeps the EOF away, so
                    # it is waited for a moment only.
                    if eof_wait is None:
                        eof_wait = time.monotonic() + EOF_GRACE
                    if chan.eof_received or chan.closed or time.monotonic() >= eof_wait:
                        return chan.recv_exit_status(), bytes(out), bytes(err)
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                select.select([chan], [], [], min(left, 0.2 if eof_wait is None else 0.02))
        except TimeoutError as e:
            raise RemoteError(f"command did not finish within {timeout:.0f} s on {where}",
                              resource=where, step="remote", log_tail=_tail(err or out)) from e
        except _TRANSIENT as e:
            raise RemoteError(f"the SSH connection to {where} failed during a command: {e}",
                              resource=where, step="remote", log_tail=_tail(err)) from e
        finally:
            chan.close()

    def run(self, command: str, *, sudo: bool = False, input: bytes | str | None = None,
            timeout: float = 300.0, check: bool = True) -> Result:
        """Run a shell command; with check, a non-zero exit raises RemoteError quoting stderr.

        Pass secrets through `input`, never in `command`: the command is quoted in errors
        and is visible in the node's process list.
        """
        data = input.encode() if isinstance(input, str) else (input or b"")
        status, out, err = self._exec(self._wrap(command, sudo), input=data, timeout=timeout)
        result = Result(status, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and status != 0:
            shown = command if len(command) <= 120 else command[:117] + "..."
            raise RemoteError(
                f"`{shown}` failed on {self.target.name} with exit status {status}",
                resource=self.target.name, step="remote",
                log_tail=_tail(err or out) or None,
            )
        return result

    def stream(self, command: str, sink: Callable[[bytes], object], *,
               input: bytes = b"", sudo: bool = False, timeout: float = 3600.0
               ) -> tuple[int, str]:
        """Run a command whose stdout (an archive, say) goes to `sink` chunk by chunk rather
        than into memory: its exit status and stderr."""
        status, _, err = self._exec(self._wrap(command, sudo), input=input, timeout=timeout,
                                    sink=sink)
        return status, err.decode(errors="replace")

    def put(self, path: str, data: bytes | str, *, mode: int = 0o644, owner: str | None = None,
            group: str | None = None, sudo: bool = False, timeout: float = 60.0) -> bool:
        """Write a file atomically; True if its content, mode or ownership changed.

        The temporary file is created 0600 by mktemp, then given its final owner and mode,
        and only then receives the content: a secret is never readable by anyone else, not
        even for a moment, and readers never see half a file.
        """
        if not posixpath.isabs(path):
            raise ValueError(f"put() needs an absolute path, got {path!r}")
        chown = f"{owner or ''}{':' + group if group else ''}"
        script = (
            'set -eu; dst=$1; mode=$2; chown_to=$3; tmp=$(mktemp "$4/.sparkstack-put.XXXXXX"); '
            "trap 'rm -f -- \"$tmp\"' EXIT; "
            '[ -z "$chown_to" ] || chown -- "$chown_to" "$tmp"; chmod -- "$mode" "$tmp"; '
            'cat > "$tmp"; '
            'if [ -f "$dst" ] && [ ! -L "$dst" ] && cmp -s -- "$tmp" "$dst" && '
            '[ "$(stat -c %a:%U:%G -- "$tmp")" = "$(stat -c %a:%U:%G -- "$dst")" ]; '
            "then echo unchanged; exit 0; fi; "
            'mv -f -- "$tmp" "$dst"; trap - EXIT; echo changed'
        )
        args = [path, format(mode, "o"), chown, posixpath.dirname(path)]
        command = "sh -c " + " ".join(shlex.quote(a) for a in [script, "put", *args])
        raw = data.encode() if isinstance(data, str) else data
        status, out, err = self._exec(self._wrap(command, sudo), input=raw, timeout=timeout)
        if status != 0:
            raise RemoteError(f"cannot write {path} on {self.target.name}",
                              resource=self.target.name, step="remote", log_tail=_tail(err))
        return out.strip() == b"changed"

    def read(self, path: str, *, sudo: bool = False, timeout: float = 60.0) -> bytes | None:
        """A file's content, or None if it does not exist."""
        command = (f"if [ -e {shlex.quote(path)} ]; then exec cat -- {shlex.quote(path)}; "
                   f"else exit {_ABSENT}; fi")
        status, out, err = self._exec(self._wrap(command, sudo), input=b"", timeout=timeout)
        if status == _ABSENT:
            return None
        if status != 0:
            raise RemoteError(f"cannot read {path} on {self.target.name}",
                              resource=self.target.name, step="remote", log_tail=_tail(err))
        return out


def on_each(fn: Callable[[Session], T], sessions: Mapping[str, Session]) -> dict[str, T]:
    """fn on every session at once (at most 16 in flight), its results by name; every call
    ends before the first error is raised."""
    with cf.ThreadPoolExecutor(max_workers=max(1, min(16, len(sessions)))) as pool:
        return dict(zip(sessions, pool.map(fn, sessions.values()), strict=True))


def _tail(data: bytes | bytearray, lines: int = 20) -> str:
    return "\n".join(data.decode(errors="replace").rstrip().splitlines()[-lines:])


def _attempt(target: Target, *, pkey: paramiko.PKey, host_keys: HostKeys,
             via: Session | None, timeout: float) -> Session:
    """One login. Transient failures escape as they are (for retries); the rest are
    RemoteError."""
    client = paramiko.SSHClient()
    host_keys.prepare(client, target)
    sock = None
    try:
        if via is not None:
            # The master's sshd opens the TCP connection to the worker's private address.
            sock = via.transport.open_channel("direct-tcpip", (target.address, target.port),
                                              ("127.0.0.1", 0), timeout=timeout)
        client.connect(target.address, port=target.port, username=target.user, pkey=pkey,
                       sock=sock, timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout, channel_timeout=timeout,
                       allow_agent=False, look_for_keys=False)
    except paramiko.BadHostKeyException as e:
        client.close()
        raise host_keys.mismatch(target, e.key) from None
    except paramiko.AuthenticationException as e:
        client.close()
        raise RemoteError(f"{target.user}@{target.name} refused our key: {e}",
                          resource=target.name, step="ssh",
                          hint="is the cluster's key pair the one the node was created with?"
                          ) from e
    except BaseException:
        client.close()
        if sock is not None:
            sock.close()
        raise
    return Session(target, client)


def _via(via: Session | None) -> str:
    return f" through {via.target.name}" if via is not None else ""


def connect(target: Target, *, key_file: Path, host_keys: HostKeys, via: Session | None = None,
            timeout: float = _ATTEMPT_TIMEOUT) -> Session:
    """Log in once, now (no waiting); `via` is the master's session for a worker."""
    pkey = _load_key(key_file)
    try:
        return _attempt(target, pkey=pkey, host_keys=host_keys, via=via, timeout=timeout)
    except _TRANSIENT as e:
        raise RemoteError(f"cannot connect to {target.name} ({target.lookup_name}){_via(via)}: "
                          f"{e or type(e).__name__}", resource=target.name, step="ssh") from e
