"""What the commands share: printing on stderr and stdout, the console the plan layer talks
through, the embedded emulator for ``--emulate``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click
import orjson

if TYPE_CHECKING:  # a command that sends nothing loads neither rich nor dispatch
    from batchrun.dispatch.plan import Progress


def err(message: str) -> None:
    click.echo(message, err=True)


def emit_json(data: dict[str, Any]) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


class ClickConsole:
    """``plan.session.Console`` on the terminal: lines on stderr, questions on a TTY."""

    def __init__(self, *, quiet: bool = False, progress_every: float = 5.0) -> None:
        self.quiet = quiet
        self.progress_every = progress_every  # seconds between plain progress lines

    def info(self, line: str) -> None:
        if not self.quiet:
            err(line)

    def warn(self, line: str) -> None:
        err(line)

    def can_ask(self) -> bool:
        return sys.stdin.isatty()

    def ask(self, question: str) -> bool:
        return click.confirm(question, err=True)

    def notice(self, line: str) -> None:
        # On a line of its own, off the progress line. ``sys.stderr`` itself rather than
        # click's wrapper of its buffer: while the live panel shows, rich stands in for
        # ``sys.stderr`` and prints the line above the panel instead of under its redraw.
        sys.stderr.write(f"\n{line}\n")

    def progress(self) -> Progress | None:
        from batchrun.cli.progress import progress_display

        return None if self.quiet else progress_display(self.progress_every)

    def end_progress(self) -> None:
        if not self.quiet and sys.stderr.isatty():
            sys.stderr.write("\n")


@contextlib.contextmanager
def start_emulator() -> Iterator[str]:
    """The embedded emulator for --emulate; yields its base URL."""
    from batchrun.emulator.server import EmulatorServer

    with EmulatorServer() as server:
        yield server.base_url
