"""Domain errors. Each carries where it happened and what the user should do next.

Exit codes are decided in one place (cli.py) from the class, never at the raise site.
"""

from __future__ import annotations


class SparkstackError(Exception):
    """Base of every error sparkstack reports to a person instead of a traceback."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        resource: str | None = None,
        step: str | None = None,
        hint: str | None = None,
        log_tail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.resource = resource
        self.step = step
        self.hint = hint
        self.log_tail = log_tail

    def render(self) -> str:
        """The full text for the terminal: what, where, the log tail, then what to do."""
        where = " ".join(p for p in (self.step and f"[{self.step}]", self.resource) if p)
        lines = [f"{where}: {self.message}" if where else self.message]
        if self.log_tail:
            lines.append("--- last lines of the log ---")
            lines.append(self.log_tail.rstrip())
            lines.append("---")
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class UserInputError(SparkstackError):
    """The inventory or the command line is wrong; nothing was created."""

    exit_code = 2


class InventoryError(UserInputError):
    """inventory.toml could not be read or does not validate."""


class PreflightError(UserInputError):
    """The cloud cannot hold the plan (quota, image, flavor, network); nothing was created."""


class CloudError(SparkstackError):
    """The OpenStack API failed in a way retries did not fix."""

    exit_code = 3


class RemoteError(SparkstackError):
    """A node could not be reached over SSH, or a command on it failed."""

    exit_code = 4


class NodeUnreachable(RemoteError):
    """The system's ssh could not connect to a node (its exit 255), for a command that
    only reads from it (`logs`): like a cloud that cannot be reached, exit 3, not a step
    that failed on the node."""

    exit_code = 3


class UnexpectedError(SparkstackError):
    """A bug in sparkstack (not a cloud or node failure): the log has the traceback."""

    exit_code = 1

    def __init__(self, message: str, **kwargs: str | None) -> None:
        super().__init__(f"unexpected error, please report: {message}", **kwargs)


class Interrupted(SparkstackError):
    """Ctrl-C, SIGTERM or SIGHUP; the message says what state the cluster is in and how
    to finish or undo. The exit code is 128 + the signal's number, as a shell reports it."""

    exit_code = 130

    def __init__(self, message: str, *, signum: int = 2, **kwargs: str | None) -> None:
        super().__init__(message, **kwargs)
        self.exit_code = 128 + signum
