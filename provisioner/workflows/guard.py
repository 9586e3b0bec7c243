"""One guard around every apply: whatever stops it becomes a message saying how to finish
or undo, with the exit code of its kind (cloud 3, node 4, Ctrl-C 130, SIGTERM 143, a bug 1)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from provisioner.errors import Interrupted, PreflightError, SparkstackError, UnexpectedError
from provisioner.interrupts import checkpoint, interrupted, signum_of

log = logging.getLogger(__name__)


def undo_hint(verb: str, cluster: str) -> str:
    if verb == "down":
        return f"run `sparkstack down` again to remove what is left of cluster {cluster}"
    return (
        f"cluster {cluster} is partly there: run `sparkstack up` to complete it, "
        "or `sparkstack down` to remove it"
    )


@contextlib.contextmanager
def guard(*, verb: str, cluster: str) -> Iterator[None]:
    """Every resource created so far carries the cluster's identity, so `up` can complete
    the cluster and `down` can remove it; the message says which."""
    hint = undo_hint(verb, cluster)
    checkpoint()  # a signal that stopped nothing so far stops the apply before it starts
    try:
        yield
    except KeyboardInterrupt as exc:
        log.warning("%s interrupted", verb)
        signum = signum_of(exc)
        raise Interrupted(
            f"{verb} {interrupted(signum)}", step=verb, hint=hint, signum=signum
        ) from None
    except PreflightError:
        raise
    except SparkstackError as exc:
        exc.hint = f"{exc.hint}; {hint}" if exc.hint else hint
        exc.step = exc.step or verb
        raise
    except Exception as exc:
        # Not a cloud failure: the cloud edge turns every API error into CloudError, so
        # anything else is a bug of ours, and saying "cloud API failure" would mislead.
        log.exception("%s failed unexpectedly", verb)
        raise UnexpectedError(
            f"{verb} failed: {type(exc).__name__}: {exc}", step=verb, hint=hint
        ) from exc
