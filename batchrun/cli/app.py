"""The ``batchrun`` group: its help, batchrun's own errors turned into a message and an exit
code, and the commands of each family (``run``, ``estimate``, ``inspect``, the emulator).

Exit codes: 0 all rows ok · 1 finished, some rows failed · 2 bad usage or input ·
3 stopped by a fatal API answer · 4 stopped at the budget cap · 130 interrupted.
"""

from __future__ import annotations

from typing import Any

import click

from batchrun import __version__
from batchrun.cli.common import err
from batchrun.cli.estimate import estimate
from batchrun.cli.exit_codes import EXIT_FATAL, EXIT_USAGE
from batchrun.cli.inspect import export, report, status
from batchrun.cli.run import run
from batchrun.core.errors import BatchrunError, InputError
from batchrun.emulator.command import emulator_command


class BatchrunGroup(click.Group):
    """Turns batchrun's own errors into a message and an exit code, never a traceback."""

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


for command in (run, estimate, status, export, report):
    cli.add_command(command)
cli.add_command(emulator_command, name="emulator")


def main() -> None:
    """Console entry point."""
    cli()
