"""Counters of a running job, updated by the workers, and the figures read from them (pace, ETA,
one plain line); showing them is the caller's (``RunPlan.progress``)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from batchrun.cost.catalog import USD_PER_CREDIT
from batchrun.store.records import COMPLETE_FINISH


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
    # ok rows of this session whose answer ended otherwise than "stop" (length, content_filter …)
    incomplete_by_reason: Counter[str] = field(default_factory=Counter)
    recent_errors: list[str] = field(default_factory=list)  # newest last, a few at most
    estimate_credits: float | None = None  # the preflight's expected spend of this session
    started_at: float = field(default_factory=time.monotonic)
    # The rate kept to and why ("1,200/min (limit announced by the server)"), when known.
    describe_rate: Callable[[], str] | None = None

    def note_error(self, code: str, keep: int = 5) -> None:
        self.errors_by_code[code] += 1
        self.recent_errors.append(code)
        del self.recent_errors[:-keep]

    def note_finish(self, finish_reason: str | None) -> None:
        """An ok row's finish reason: counted when it is not a complete answer's."""
        if finish_reason not in COMPLETE_FINISH:
            self.incomplete_by_reason[finish_reason] += 1

    def incomplete_text(self) -> str:
        """"length 12, content_filter 1" (most first); empty while every answer ended with
        stop."""
        return ", ".join(f"{reason} {count:,}"
                         for reason, count in self.incomplete_by_reason.most_common())

    @property
    def rows_done_now(self) -> int:
        return self.rows_ok + self.rows_failed

    @property
    def rows_pending(self) -> int:
        """Rows neither done in an earlier session nor in this one."""
        return max(0, self.rows_total - self.rows_skipped - self.rows_done_now)

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
        if self.incomplete_by_reason:
            errors += f" · incomplete: {self.incomplete_text()}"
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
