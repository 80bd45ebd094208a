"""``batchrun status``, ``export`` and ``report``: reading a run directory."""

from __future__ import annotations

from pathlib import Path

import click

from batchrun.cli.common import emit_json, err
from batchrun.store.files import write_output
from batchrun.store.rundir import RunDir


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def status(run_dir: Path, as_json: bool) -> None:
    """Show done / failed / pending rows, errors by code, tokens, spend and what is left of
    RUN_DIR (read from its journal, also while it runs; results.parquet is not touched).

    \b
    Example:
      batchrun status runs/night1 --json
    """
    from batchrun.reporting.status import run_status, status_lines

    data = run_status(run_dir)
    if as_json:
        emit_json(data)
        return
    for line in status_lines(data, run_dir):
        click.echo(line)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path),
              help="FILE.parquet (results schema) or FILE.jsonl (one object per row).")
@click.option("--format", "fmt", type=click.Choice(["results", "openai-batch"]),
              default="results", show_default=True,
              help="openai-batch: JSONL lines shaped like the OpenAI Batch API's output file.")
@click.option("--with-input", is_flag=True,
              help="Join the manifest's own columns back onto each row (a column whose name "
              "is taken by the results gets an input_ prefix).")
@click.option("--flatten", is_flag=True,
              help="Also write the top-level fields of the job's output_schema as columns typed "
              "by the schema, from each row's parsed answer.")
def export(run_dir: Path, output: Path, fmt: str, with_input: bool, flatten: bool) -> None:
    """Compact the journal of RUN_DIR into results.parquet and write the latest result of
    every row to a Parquet or JSONL file, in manifest order. Works on unfinished runs too.

    \b
    Examples:
      batchrun export runs/night1 --output answers.jsonl
      batchrun export runs/night1 --output batch_output.jsonl --format openai-batch
      batchrun export runs/night1 --output joined.parquet --with-input
      batchrun export runs/invoices --output fields.parquet --flatten
    """
    from batchrun.reporting.export import export_results

    rows = export_results(RunDir(run_dir), output, fmt=fmt, with_input=with_input,
                          flatten=flatten)
    err(f"wrote {rows:,} rows to {output}")


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="HTML file to write [RUN_DIR/report.html].")
def report(run_dir: Path, output: Path | None) -> None:
    """Write a self-contained HTML report of RUN_DIR: totals, cost by kind of row, latency
    histogram, throughput and spend over time, errors by code, the costliest rows.

    \b
    Example:
      batchrun report runs/night1 --output night1.html
    """
    from batchrun.reporting.report import build_report

    html = build_report(run_dir)
    target = output or run_dir / "report.html"
    write_output(target, lambda path: path.write_text(html, encoding="utf-8"))
    err(f"wrote {target}")
