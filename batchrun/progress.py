"""Counters of a running job and the progress line printed on stderr."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

import anyio

from batchrun.pricing import USD_PER_CREDIT


@dataclass
class RunCounters:
    """Running totals, updated by the workers as rows finish."""

    rows_total: int = 0
    rows_skipped: int = 0  # done in an earlier run of this RUN_DIR
    rows_ok: int = 0
    rows_failed: int = 0
    in_flight: int = 0
    requests_sent: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    credits: float = 0.0
    missing_usage: int = 0
    answers_unrecorded: int = 0  # answers received that the run directory could not keep
    errors_by_code: Counter[str] = field(default_factory=Counter)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def rows_done_now(self) -> int:
        return self.rows_ok + self.rows_failed

    def line(self, now: float | None = None) -> str:
        """One human line: rows done of total, rate, credits so far, ETA (pure)."""
        elapsed = max(1e-9, (now if now is not None else time.monotonic()) - self.started_at)
        done = self.rows_skipped + self.rows_done_now
        rate = self.rows_done_now / elapsed
        remaining = max(0, self.rows_total - done)
        eta = _duration(remaining / rate) if rate > 0 else "?"
        failed = f" ({self.rows_failed:,} failed)" if self.rows_failed else ""
        errors = ""
        if self.errors_by_code:
            top = ", ".join(f"{code}×{n}" for code, n in self.errors_by_code.most_common(3))
            errors = f" · errors {top}"
        return (
            f"rows {done:,}/{self.rows_total:,}{failed} · {rate:,.1f} rows/s · "
            f"in flight {self.in_flight} · {self.credits:,.4f} credits "
            f"(${self.credits * USD_PER_CREDIT:,.4f}) · ETA {eta}{errors}"
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


async def report_progress(
    counters: RunCounters, *, interval_s: float, stream: TextIO | None = None
) -> None:
    """Print the progress line until cancelled: in place on a TTY, a plain line otherwise."""
    out = stream or sys.stderr
    tty = out.isatty()
    while True:
        await anyio.sleep(interval_s)
        if tty:
            out.write("\r\x1b[2K" + counters.line())
        else:
            out.write(counters.line() + "\n")
        out.flush()
