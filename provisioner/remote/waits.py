"""Waiting for a booting node: its SSH port, then a login, each within a shared deadline.

Retries are declared with tenacity; only what a booting node throws (refused, reset, sshd
restarting) is retried, never a wrong host key or a refused client key.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from provisioner.errors import RemoteError
from provisioner.remote.session import (
    _ATTEMPT_TIMEOUT,
    _TRANSIENT,
    HostKeys,
    PhaseCallback,
    Session,
    Target,
    _attempt,
    _load_key,
    _via,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def _retry(attempt: Callable[[float], T], *, deadline: float,
           cancel: threading.Event | None = None) -> T:
    """Call attempt(timeout) until it stops raising a transient error or `deadline` passes.

    Each attempt's timeout and each pause are cut to what is left, so the caller hears back
    close to its deadline rather than up to an attempt (15 s) later.
    """
    backoff = wait_exponential(multiplier=0.2, max=2.0)

    def pause(state: RetryCallState) -> float:
        return max(0.0, min(backoff(state), deadline - time.monotonic()))

    retrying = Retrying(
        # `cancel` (Ctrl-C in the caller's thread) ends the wait at the next pause.
        stop=stop_after_delay(max(0.0, deadline - time.monotonic()))
        | stop_when_event_set(cancel or threading.Event()),
        wait=pause,
        retry=retry_if_exception_type(_TRANSIENT),
        before_sleep=before_sleep_log(log, logging.DEBUG),
        reraise=True,
    )
    return retrying(lambda: attempt(max(0.2, min(_ATTEMPT_TIMEOUT, deadline - time.monotonic()))))


def wait_tcp(target: Target, *, deadline: float, via: Session | None = None,
             cancel: threading.Event | None = None,
             on_phase: PhaseCallback | None = None) -> None:
    """Wait until the target's SSH port accepts a connection (from here, or from `via`).

    `deadline` is a time.monotonic() instant, so several waits can share one budget.
    """
    if on_phase:
        on_phase(target.name, "tcp")
    started = time.monotonic()

    def attempt(timeout: float) -> None:
        if via is not None:
            via.transport.open_channel("direct-tcpip", (target.address, target.port),
                                       ("127.0.0.1", 0), timeout=timeout).close()
        else:
            socket.create_connection((target.address, target.port), timeout=timeout).close()

    try:
        _retry(attempt, deadline=deadline, cancel=cancel)
    except _TRANSIENT as e:
        raise RemoteError(
            f"port {target.port} of {target.name} ({target.address}){_via(via)} did not open "
            f"within {time.monotonic() - started:.1f} s: {e or type(e).__name__}",
            resource=target.name, step="ssh",
            hint="is the server booted? the master reaches workers inside the cluster's "
            "security group" if via else "is the server booted, and does the security group "
            "admit this machine on port 22 (network.allowed_cidrs)?",
        ) from e


def wait_ssh(target: Target, *, key_file: Path, host_keys: HostKeys, deadline: float,
             cancel: threading.Event | None = None,
             via: Session | None = None, on_phase: PhaseCallback | None = None) -> Session:
    """Wait until we can log in (sshd may restart while cloud-init sets up) and return
    the session.

    A wrong host key or a refused key fails at once: waiting would not change either.
    """
    if on_phase:
        on_phase(target.name, "ssh")
    pkey = _load_key(key_file)
    started = time.monotonic()
    try:
        session = _retry(lambda timeout: _attempt(target, pkey=pkey, host_keys=host_keys,
                                                  via=via, timeout=timeout), deadline=deadline,
                         cancel=cancel)
    except _TRANSIENT as e:
        raise RemoteError(
            f"could not log in to {target.user}@{target.name} ({target.lookup_name}){_via(via)} "
            f"within {time.monotonic() - started:.1f} s: {e or type(e).__name__}",
            resource=target.name, step="ssh",
            hint="the node may still be booting; its console log shows how far cloud-init got",
        ) from e
    if on_phase:
        on_phase(target.name, "connected")
    return session
