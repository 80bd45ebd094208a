"""Totals of a run directory, from its journal: what ``status`` prints and results carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchrun.cost.catalog import USD_PER_CREDIT
from batchrun.store.index import JournalIndex
from batchrun.store.records import (
    STATE_FAILED,
    STATE_OK,
    STATE_OK_INCOMPLETE,
    STATE_OK_NO_USAGE,
    STATE_RETRYABLE,
    STATE_REUSED,
)


@dataclass
class RunSummary:
    rows_total: int
    rows_ok: int = 0
    rows_failed: int = 0
    rows_pending: int = 0
    rows_retryable: int = 0  # failed rows a plain resume sends again
    rows_reused: int = 0  # ok rows answered from an earlier run (--reuse): not paid here
    rows_missing_usage: int = 0  # ok rows whose answer carried no usage (cost unknown)
    errors_by_code: dict[str, int] = field(default_factory=dict)
    # ok rows by the reason their answer ended; all but "stop" are incomplete answers
    # (``run --redo incomplete`` sends them again)
    finish_reasons: dict[str, int] = field(default_factory=dict)
    rows_incomplete: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    credits: float = 0.0
    usd: float = 0.0
    resume_command: str | None = None
    redo_command: str | None = None  # sends the incomplete answers again, when there are some

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_total": self.rows_total,
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
            "rows_pending": self.rows_pending,
            "rows_retryable": self.rows_retryable,
            "rows_reused": self.rows_reused,
            "rows_missing_usage": self.rows_missing_usage,
            "errors_by_code": self.errors_by_code,
            "finish_reasons": self.finish_reasons,
            "rows_incomplete": self.rows_incomplete,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "credits": round(self.credits, 8),
            "usd": round(self.usd, 8),
            "resume_command": self.resume_command,
            "redo_command": self.redo_command,
        }


def summarize(
    index: JournalIndex,
    rows_total: int,
    *,
    resume_command: str | None = None,
    usd_per_credit: float = USD_PER_CREDIT,
) -> RunSummary:
    """Rows by their latest state; tokens and credits paid over every attempt of every
    session (reused answers excluded); pending = manifest rows with no final line yet."""
    summary = RunSummary(rows_total=rows_total)
    summary.rows_reused = index.count(STATE_REUSED)
    summary.rows_missing_usage = index.count(STATE_OK_NO_USAGE)
    summary.rows_incomplete = index.count(STATE_OK_INCOMPLETE)
    summary.rows_ok = (index.count(STATE_OK) + summary.rows_reused
                       + summary.rows_missing_usage + summary.rows_incomplete)
    summary.rows_retryable = index.count(STATE_RETRYABLE)
    summary.rows_failed = index.count(STATE_FAILED) + summary.rows_retryable
    summary.rows_pending = max(0, rows_total - summary.rows_ok - summary.rows_failed)
    summary.errors_by_code = index.errors_by_code() if summary.rows_failed else {}
    summary.finish_reasons = index.finish_reasons() if summary.rows_ok else {}
    summary.prompt_tokens = index.prompt_tokens
    summary.completion_tokens = index.completion_tokens
    summary.reasoning_tokens = index.reasoning_tokens
    summary.credits = index.credits
    summary.usd = summary.credits * usd_per_credit
    if summary.rows_pending or summary.rows_failed:
        summary.resume_command = resume_command
    if summary.rows_incomplete and resume_command:
        summary.redo_command = f"{resume_command} --redo incomplete"
    return summary
