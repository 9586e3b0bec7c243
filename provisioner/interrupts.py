"""Ctrl-C, SIGTERM and SIGHUP stop a command the same way.

CI runners cancel a job with SIGTERM and a closed terminal sends SIGHUP; left alone, both
end the process on the spot, with no message and none of the cleanup Ctrl-C gets. So each
raises a KeyboardInterrupt that knows its signal: every `except KeyboardInterrupt` cleanup
runs for all three, and the exit code is 128 + the signal's number, as a shell reports it.

Python drops an exception raised while a finalizer or a weakref callback runs ("Exception
ignored in ...", with a traceback, seen during imports), so a signal can arrive and stop
nothing. The handler notes such a drop in place of that traceback, and `checkpoint()`
raises it again before the next step.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Signalled(KeyboardInterrupt):
    """What each of SIGNALS raises in the main thread."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signum_of(exc: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (a plain one is Ctrl-C)."""
    return getattr(exc, "signum", signal.SIGINT)


def interrupted(signum: int) -> str:
    """ "interrupted", naming the signal unless it was Ctrl-C (a CI log shows who stopped it)."""
    return (
        "interrupted"
        if signum == signal.SIGINT
        else f"interrupted by {signal.Signals(signum).name}"
    )


class Handler:
    """The handler of every signal in SIGNALS, and the record of what it received."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal
        self.dropped: int | None = None  # a signal whose exception Python dropped
        self.armed = True  # off while the final message is printed

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signum
        if self.armed:
            raise Signalled(signum)

    def unraisable(self, previous: Any) -> Any:
        """A sys.unraisablehook that notes a dropped interrupt instead of printing it
        (Python's own hook prints a traceback, and the interrupt is reported once, at
        the next checkpoint); anything else goes to the hook that was there."""

        def hook(info: Any) -> None:
            if isinstance(info.exc_value, KeyboardInterrupt):
                self.dropped = signum_of(info.exc_value)
                return
            previous(info)

        return hook


def installed() -> Handler | None:
    """The Handler in place, if the CLI installed one (the signal table is the record)."""
    for sig in SIGNALS:
        handler = signal.getsignal(sig)
        if isinstance(handler, Handler):
            return handler
    return None


@contextlib.contextmanager
def handled_signals() -> Iterator[Handler]:
    """Install the Handler for SIGNALS, and restore what was there on the way out."""
    handler = Handler()
    if threading.current_thread() is not threading.main_thread():
        yield handler  # signal.signal works only there; a caller in a thread keeps Python's
        return
    previous = {}
    for sig in SIGNALS:
        # Ignored means someone chose so (nohup, a background job): keep it ignored.
        if signal.getsignal(sig) != signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler) or signal.SIG_DFL
    old_hook = sys.unraisablehook
    sys.unraisablehook = handler.unraisable(old_hook)
    try:
        yield handler
    finally:
        sys.unraisablehook = old_hook
        for sig, old in previous.items():
            signal.signal(sig, old)


def checkpoint() -> None:
    """Raise a signal that arrived but stopped nothing, before the next step starts."""
    handler = installed()
    if handler is None or handler.dropped is None:
        return
    if threading.current_thread() is threading.main_thread():
        signum, handler.dropped = handler.dropped, None
        raise Signalled(signum)
