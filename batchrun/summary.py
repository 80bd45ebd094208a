"""Totals of a run directory, from its journal: what ``status`` prints and results carry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from batchrun.pricing import USD_PER_CREDIT
from batchrun.store import JournalIndex, RowState


@dataclass
class RunSummary:
    rows_total: int
    rows_ok: int = 0
    rows_failed: int = 0
    rows_pending: int = 0
    rows_retryable: int = 0  # failed rows a plain resume sends again
    errors_by_code: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    credits: float = 0.0
    usd: float = 0.0
    resume_command: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_total": self.rows_total,
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
            "rows_pending": self.rows_pending,
            "rows_retryable": self.rows_retryable,
            "errors_by_code": self.errors_by_code,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "credits": round(self.credits, 8),
            "usd": round(self.usd, 8),
            "resume_command": self.resume_command,
        }


def summarize(
    index: JournalIndex | Iterable[RowState],
    rows_total: int,
    *,
    resume_command: str | None = None,
    usd_per_credit: float = USD_PER_CREDIT,
) -> RunSummary:
    """Count the latest state of every id; pending = manifest rows with no final line yet.

    ``index`` may also be the latest states alone (``RunDir.latest_states()``), which streams
    them instead of holding every id in memory.
    """
    summary = RunSummary(rows_total=rows_total)
    errors: Counter[str] = Counter()
    states = index.rows.values() if isinstance(index, JournalIndex) else index
    for state in states:
        if state.ok:
            summary.rows_ok += 1
        else:
            summary.rows_failed += 1
            errors[state.error_code or "error"] += 1
            if state.retryable:
                summary.rows_retryable += 1
        summary.prompt_tokens += state.prompt_tokens
        summary.completion_tokens += state.completion_tokens
        summary.reasoning_tokens += state.reasoning_tokens
        summary.credits += state.credits
    summary.rows_pending = max(0, rows_total - summary.rows_ok - summary.rows_failed)
    summary.errors_by_code = dict(errors.most_common())
    summary.usd = summary.credits * usd_per_credit
    if summary.rows_pending or summary.rows_failed:
        summary.resume_command = resume_command
    return summary
