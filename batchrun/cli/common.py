"""What the commands share: printing on stderr and stdout, the console the plan layer talks
through, the embedded emulator for ``--emulate``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click
import orjson


def err(message: str) -> None:
    click.echo(message, err=True)


def emit_json(data: dict[str, Any]) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


class ClickConsole:
    """``plan.session.Console`` on the terminal: lines on stderr, questions on a TTY."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def info(self, line: str) -> None:
        if not self.quiet:
            err(line)

    def warn(self, line: str) -> None:
        err(line)

    def can_ask(self) -> bool:
        return sys.stdin.isatty()

    def ask(self, question: str) -> bool:
        return click.confirm(question, err=True)

    def end_progress(self) -> None:
        if not self.quiet and sys.stderr.isatty():
            sys.stderr.write("\n")


@contextlib.contextmanager
def start_emulator() -> Iterator[str]:
    """The embedded emulator for --emulate; yields its base URL."""
    from batchrun.emulator.server import EmulatorServer

    with EmulatorServer() as server:
        yield server.base_url
