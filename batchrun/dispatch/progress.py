"""Counters of a running job and the progress line printed on stderr."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from batchrun.cost.catalog import USD_PER_CREDIT


@dataclass
class RunCounters:
    """Running totals, updated by the workers as rows finish."""

    rows_total: int = 0
    rows_skipped: int = 0  # done in an earlier run of this RUN_DIR
    rows_ok: int = 0
    rows_failed: int = 0
    in_flight: int = 0  # requests on the wire
    waiting: int = 0  # rows waiting on the rate limiter or on their backoff
    requests_sent: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    credits: float = 0.0
    missing_usage: int = 0
    answers_unrecorded: int = 0  # answers received that the run directory could not keep
    errors_by_code: Counter[str] = field(default_factory=Counter)
    recent_errors: list[str] = field(default_factory=list)  # newest last, a few at most
    estimate_credits: float | None = None  # the preflight's expected spend of this session
    started_at: float = field(default_factory=time.monotonic)
    # The rate kept to and why ("1,200/min (limit announced by the server)"), when known.
    describe_rate: Callable[[], str] | None = None

    def note_error(self, code: str, keep: int = 5) -> None:
        self.errors_by_code[code] += 1
        self.recent_errors.append(code)
        del self.recent_errors[:-keep]

    @property
    def rows_done_now(self) -> int:
        return self.rows_ok + self.rows_failed

    def pace(self, now: float | None = None) -> tuple[float, int, float, str]:
        """(seconds elapsed, rows done in all sessions, rows/s this session, ETA) at ``now``."""
        elapsed = max(1e-9, (now if now is not None else time.monotonic()) - self.started_at)
        done = self.rows_skipped + self.rows_done_now
        rate = self.rows_done_now / elapsed
        remaining = max(0, self.rows_total - done)
        return elapsed, done, rate, _duration(remaining / rate) if rate > 0 else "?"

    def line(self, now: float | None = None) -> str:
        """One human line: rows done of total, rate, credits so far, ETA (pure)."""
        _, done, rate, eta = self.pace(now)
        failed = f" ({self.rows_failed:,} failed)" if self.rows_failed else ""
        errors = ""
        if self.errors_by_code:
            top = ", ".join(f"{code}×{n}" for code, n in self.errors_by_code.most_common(3))
            errors = f" · errors {top}"
        return (
            f"rows {done:,}/{self.rows_total:,}{failed} · {rate:,.1f} rows/s · "
            f"in flight {self.in_flight} · waiting {self.waiting} · rate {self.rate_text()} · "
            f"{self.credits:,.4f} credits (${self.credits * USD_PER_CREDIT:,.4f}) · "
            f"ETA {eta}{errors}"
        )

    def rate_text(self) -> str:
        return self.describe_rate() if self.describe_rate is not None else "unlimited"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


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
