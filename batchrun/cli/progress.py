"""What a watching user sees while rows are sent, on stderr: a live panel on a terminal, a
plain line every few seconds otherwise (CI, log files)."""

from __future__ import annotations

import functools
import sys
import time
from typing import TextIO

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from batchrun.cost.catalog import USD_PER_CREDIT
from batchrun.dispatch.plan import Progress
from batchrun.dispatch.progress import RunCounters


def progress_display(interval_s: float) -> Progress:
    """The run's progress display (``RunPlan.progress``): the live panel on a terminal, else a
    plain line every ``interval_s``."""
    return functools.partial(report_progress, interval_s=interval_s)


def progress_table(counters: RunCounters, now: float | None = None) -> Table:
    """The live TTY display: one labelled line per figure (pure given ``now``)."""
    elapsed, done, rate, eta = counters.pace(now)
    tokens = counters.prompt_tokens + counters.completion_tokens
    spend = f"{counters.credits:,.4f} credits (${counters.credits * USD_PER_CREDIT:,.4f})"
    if counters.estimate_credits:
        share = counters.credits / counters.estimate_credits
        spend += f" of ≈{counters.estimate_credits:,.4f} estimated ({share:.0%})"
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("rows", f"{done:,} / {counters.rows_total:,} done · {counters.rows_ok:,} ok · "
                  f"{counters.rows_failed:,} failed · {counters.rows_skipped:,} from before")
    table.add_row("in flight", f"{counters.in_flight:,} on the wire · {counters.waiting:,} waiting "
                  f"(rate limit or backoff) · {counters.requests_sent:,} sent")
    table.add_row("rate", counters.rate_text())
    table.add_row("speed", f"{rate:,.1f} rows/s · {counters.requests_sent / elapsed:,.1f} req/s · "
                  f"{tokens / elapsed:,.0f} tokens/s")
    table.add_row("spent", spend)
    table.add_row("ETA", eta)
    if counters.incomplete_by_reason:
        table.add_row("incomplete", f"{counters.incomplete_text()} (ok, not ended by stop)")
    if counters.errors_by_code:
        table.add_row("errors", ", ".join(
            f"{code} ×{count:,}" for code, count in counters.errors_by_code.most_common(4)))
        table.add_row("recent", ", ".join(reversed(counters.recent_errors)))
    return table


async def report_progress(
    counters: RunCounters, *, interval_s: float, stream: TextIO | None = None
) -> None:
    """Show progress until cancelled: a live panel on a TTY, a plain line every
    ``interval_s`` otherwise (CI, log files)."""
    out = stream or sys.stderr
    if out.isatty():
        console = Console(file=out, stderr=out is sys.stderr)
        with Live(progress_table(counters), console=console, refresh_per_second=4,
                  transient=False) as live:
            try:
                while True:
                    await anyio.sleep(0.25)
                    live.update(progress_table(counters))
            finally:
                live.update(progress_table(counters))
        return
    while True:
        await anyio.sleep(interval_s)
        # A log read the next morning needs the time of each line.
        out.write(time.strftime("%Y-%m-%d %H:%M:%S ") + counters.line() + "\n")
        out.flush()
