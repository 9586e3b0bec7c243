"""Live progress for the terminal (used only by the CLI).

On a terminal: a rich live table, one row per node with its state and how long it has
been in it, redrawn twice a second so a long wait visibly ticks. Elsewhere (pipes, CI
logs): plain lines on every change, plus a heartbeat line when nothing changed for a few
seconds, so a log never goes quiet during a long wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from provisioner.workflows.context import Reporter

log = logging.getLogger(__name__)

_STYLE = {"ACTIVE": "green", "ERROR": "red", "BUILD": "yellow"}
GROUP_ABOVE = 8  # more nodes changing to one state at once than this: a single line


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


class LiveProgress(Reporter):
    """A Reporter that draws; use as a context manager around one workflow call."""

    def __init__(self, console: Console, *, title: str, heartbeat: float = 5.0) -> None:
        self.console = console
        self.title = title
        self.heartbeat = heartbeat
        self.start = time.monotonic()
        self.states: dict[str, str] = {}
        self.since: dict[str, float] = {}
        self.last_line = self.start
        self.live: Live | None = None

    def __enter__(self) -> LiveProgress:
        self.start = time.monotonic()
        if self.console.is_terminal:
            self.live = Live(self, console=self.console, refresh_per_second=2, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None
        if self.states:
            self.console.print(self._table())

    # Reporter -------------------------------------------------------------------------

    def step(self, text: str) -> None:
        log.info("%s", text)
        self.console.print(
            f"[dim]{_clock(time.monotonic() - self.start)}[/] {escape(text)}",
            highlight=False,
            soft_wrap=True,
        )
        self.last_line = time.monotonic()

    def nodes(self, states: Mapping[str, str]) -> None:
        now = time.monotonic()
        changed = []
        for name, state in states.items():
            if self.states.get(name) != state:
                self.states[name] = state
                self.since[name] = now
                changed.append(name)
                log.info("%s: %s", name, state)
        if self.live is not None:
            return
        by_state: dict[str, list[str]] = {}
        for name in changed:
            by_state.setdefault(self.states[name], []).append(name)
        for state, names in by_state.items():
            if len(names) <= GROUP_ABOVE:
                for name in names:
                    self._line(f"{name}: {state}")
            else:  # a big cluster: one line per state, not hundreds
                self._line(f"{len(names)} nodes: {state} ({names[0]} ... {names[-1]})")
        if not changed and now - self.last_line >= self.heartbeat:
            counts: dict[str, int] = {}
            for state in states.values():
                counts[state] = counts.get(state, 0) + 1
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            self._line(f"waiting: {summary}")

    # drawing --------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        self.console.print(
            f"[dim]{_clock(time.monotonic() - self.start)}[/] {escape(text)}",
            highlight=False,
            soft_wrap=True,
        )
        self.last_line = time.monotonic()

    def _table(self) -> Table:
        now = time.monotonic()
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("node")
        table.add_column("state")
        table.add_column("for", justify="right")
        for name in sorted(self.states):
            state = self.states[name]
            style = next((v for k, v in _STYLE.items() if state.startswith(k)), "")
            table.add_row(name, Text(state, style=style), _clock(now - self.since[name]))
        return table

    def __rich__(self) -> RenderableType:
        head = Text(f"{self.title}  {_clock(time.monotonic() - self.start)}", style="bold")
        return Group(head, self._table()) if self.states else head
