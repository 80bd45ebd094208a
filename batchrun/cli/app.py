"""The ``batchrun`` group: its help, batchrun's own errors turned into a message and an exit
code, and the commands of each family (``run``, ``estimate``, ``inspect``, the emulator), each
module imported only when its command is invoked (or its own help asked for): ``estimate``
does not load the wire, dispatch or the emulator, ``status`` not pyarrow's compute.

Exit codes: 0 all rows ok · 1 finished, some rows failed · 2 bad usage or input ·
3 stopped by a fatal API answer · 4 stopped at the budget cap · 130 interrupted.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from batchrun import __version__
from batchrun.cli.common import err
from batchrun.cli.exit_codes import EXIT_FATAL, EXIT_USAGE
from batchrun.core.errors import BatchrunError, InputError

# name -> (module, attribute, short help). The short help is the first sentence of the
# command's own docstring (``batchrun --help`` lists them without importing every command;
# tests/test_cli_lazy.py checks they agree).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "emulator": ("batchrun.emulator.command", "emulator_command",
                 "Serve a local emulator of the Gemini 3.1 Pro chat-completions API."),
    "estimate": ("batchrun.cli.estimate", "estimate",
                 "Estimate tokens, credits and USD for MANIFEST; nothing is sent without "
                 "--calibrate."),
    "export": ("batchrun.cli.inspect", "export",
               "Compact the journal of RUN_DIR into results.parquet and write the latest "
               "result of every row to a Parquet or JSONL file, in manifest order."),
    "report": ("batchrun.cli.inspect", "report",
               "Write a self-contained HTML report of RUN_DIR: totals, cost by kind of row, "
               "latency histogram, throughput and spend over time, errors by code, the "
               "costliest rows."),
    "run": ("batchrun.cli.run", "run",
            "Send every row of MANIFEST (JSONL or Parquet) and write OUT/results.parquet."),
    "status": ("batchrun.cli.inspect", "status",
               "Show done / failed / pending rows, errors by code, tokens, spend and what is "
               "left of RUN_DIR (read from its journal, also while it runs; results.parquet is "
               "not touched)."),
}


class BatchrunGroup(click.Group):
    """Loads a command's module when it is invoked; turns batchrun's own errors into a message
    and an exit code, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``batchrun --help``, from ``COMMANDS`` (nothing imported)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        # Shortened as click shortens a command's own help (a stand-in command holds it).
        rows = [(name, click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit))
                for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            err(f"error: {exc.message}")
            ctx.exit(EXIT_USAGE)
        except BatchrunError as exc:
            err(f"error: {exc}")
            ctx.exit(EXIT_FATAL)


@click.group(
    cls=BatchrunGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="""\b
Examples:
  batchrun estimate sample_inputs/sample.jsonl --job jobs/sample.toml
  batchrun run sample_inputs/sample.jsonl --job jobs/sample.toml --out runs/sample --emulate
  BATCHRUN_API_KEY=sk-... batchrun run corpus.jsonl --job jobs/summarise.toml --out runs/night1
  batchrun status runs/night1
  batchrun export runs/night1 --output answers.jsonl

Exit codes: 0 all rows ok, 1 some rows failed, 2 bad usage or input, 3 stopped by a fatal
API answer (401/402/403/404/spend limit), 4 stopped at the budget cap, 130 interrupted.""",
)
@click.version_option(__version__, prog_name="batchrun")
def cli() -> None:
    """Push a manifest of prompts, documents and media through an OpenAI-compatible
    /v1/chat/completions API (the Gemini 3.1 Pro gateway first), with a cost estimate
    before anything is spent, resumable runs and results in Parquet."""


def main() -> None:
    """Console entry point."""
    cli()
