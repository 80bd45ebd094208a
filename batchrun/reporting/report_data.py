"""The report's figures, folded from a run's journal lines (pure: records in, numbers out).

Every journal line counts for what was paid (tokens and credits, as ``status`` totals them);
a row's latest line says how it ended (status, finish reason, latency). Retries are read from
what the journal records of them: a line's ``attempts`` (the tries of one session, the last
one answered or failed with the line's ``error_code``) and the earlier lines of a row that a
resume sent again (each failed with its own ``error_code``).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# A failed try whose cause the journal line does not hold (written before causes were kept).
from batchrun.store.retries import CAUSE_NOT_RECORDED

COSTLIEST_ROWS = 10
ERROR_EXAMPLES = 3
NO_FINISH_REASON = "(none given)"


@dataclass
class RetryCause:
    """Retries of one cause: how many tries were repeated, over how many rows, and the time
    those rows spent on failed tries and the waits between them (summed over rows, which run
    side by side)."""

    retries: int = 0
    seconds: float = 0.0
    row_ids: set[str] = field(default_factory=set)

    @property
    def rows(self) -> int:
        return len(self.row_ids)


@dataclass
class ReportData:
    """Everything the report's body shows about the rows (the header's facts are apart)."""

    rows_total: int
    rows_ok: int = 0
    rows_failed: int = 0
    rows_reused: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    credits: float = 0.0
    first_start: float | None = None
    last_finish: float | None = None
    cost_by_kind: dict[str, float] = field(default_factory=dict)
    rows_by_kind: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    finished_rows: list[tuple[float, float]] = field(default_factory=list)  # (time, credits)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    costliest: list[dict[str, Any]] = field(default_factory=list)
    retries: dict[str, RetryCause] = field(default_factory=dict)
    finish_reasons: Counter[str] = field(default_factory=Counter)
    answer_models: Counter[str] = field(default_factory=Counter)

    @property
    def rows_pending(self) -> int:
        return max(0, self.rows_total - self.rows_ok - self.rows_failed)

    @property
    def duration_s(self) -> float:
        """First request sent to last row finished, over every session."""
        if self.first_start is None or self.last_finish is None:
            return 0.0
        return max(0.0, self.last_finish - self.first_start)

    @property
    def retries_total(self) -> int:
        return sum(cause.retries for cause in self.retries.values())

    @property
    def retry_seconds(self) -> float:
        return sum(cause.seconds for cause in self.retries.values())


def paid(record: dict[str, Any]) -> float:
    """Credits a journal line paid: the gateway's figure, else the computed one; a reused
    answer was paid by the earlier run."""
    if record.get("reused_from"):
        return 0.0
    credits = record.get("credits")
    if credits is None:
        credits = record.get("credits_computed")
    return float(credits) if isinstance(credits, int | float) else 0.0


def epoch(value: Any) -> float | None:
    """A journal stamp (epoch seconds) or a Parquet timestamp as epoch seconds."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value) if isinstance(value, int | float) else None


def aggregate(rows_total: int, lines: Iterable[dict[str, Any]],
              kinds: dict[str, str]) -> ReportData:
    """Fold journal lines (oldest first; a row may have several) into the report's figures."""
    data = ReportData(rows_total=rows_total)
    latest: dict[str, dict[str, Any]] = {}
    for record in lines:
        _count_paid(data, record, kinds.get(str(record["id"]), "unknown"))
        earlier = latest.get(record["id"])
        if earlier is not None and earlier.get("status") != "ok":
            # Sent again by a resume: every try of the earlier line failed and was repeated.
            _add_retry(data, earlier, earlier.get("error_code") or "error",
                       int(earlier.get("attempts") or 0), _span(earlier))
        latest[record["id"]] = record
    for record in latest.values():
        _count_final(data, record, kinds.get(str(record["id"]), "unknown"))
    data.finished_rows.sort()
    data.costliest = heapq.nlargest(COSTLIEST_ROWS, (r for r in latest.values() if paid(r) > 0),
                                    key=paid)
    return data


def _count_paid(data: ReportData, record: dict[str, Any], kind: str) -> None:
    if record.get("reused_from"):
        return
    credits = paid(record)
    data.credits += credits
    data.cost_by_kind[kind] = data.cost_by_kind.get(kind, 0.0) + credits
    data.prompt_tokens += record.get("prompt_tokens") or 0
    data.completion_tokens += record.get("completion_tokens") or 0
    data.reasoning_tokens += record.get("reasoning_tokens") or 0
    started = epoch(record.get("started_at"))
    if started is not None and (data.first_start is None or started < data.first_start):
        data.first_start = started


def _count_final(data: ReportData, record: dict[str, Any], kind: str) -> None:
    data.rows_by_kind[kind] = data.rows_by_kind.get(kind, 0) + 1
    finished = epoch(record.get("finished_at"))
    if finished is not None:
        data.finished_rows.append((finished, paid(record)))
        data.last_finish = finished if data.last_finish is None else max(data.last_finish,
                                                                          finished)
    attempts = int(record.get("attempts") or 0)
    if record.get("status") == "ok":
        data.rows_ok += 1
        data.rows_reused += 1 if record.get("reused_from") else 0
        data.finish_reasons[record.get("finish_reason") or NO_FINISH_REASON] += 1
        if record.get("model"):
            data.answer_models[str(record["model"])] += 1
        latency = record.get("latency_ms")
        if latency is not None:
            data.latencies_ms.append(float(latency))
        if attempts > 1:
            # The answering try's own time is its latency; the rest went on failed tries.
            waited = _span(record) - float(latency or 0.0) / 1000.0
            _add_retries(data, record, _recorded_causes(record, attempts - 1), waited)
        return
    data.rows_failed += 1
    code = record.get("error_code") or "error"
    data.errors[code] += 1
    examples = data.error_examples.setdefault(code, [])
    if len(examples) < ERROR_EXAMPLES:
        examples.append((str(record["id"]), record.get("error_message") or ""))
    if attempts > 1:
        # The last failure ended the row; the ones before it were retried.
        causes = record.get("failed_attempts")
        earlier = ([str(cause) for cause in causes[:attempts - 1]]
                   if isinstance(causes, list) and len(causes) >= attempts - 1
                   else [code] * (attempts - 1))
        _add_retries(data, record, earlier, _span(record))


def _recorded_causes(record: dict[str, Any], retries: int) -> list[str]:
    """Each failed try's cause as the journal kept it (``failed_attempts``), else unknown."""
    causes = record.get("failed_attempts")
    if isinstance(causes, list) and len(causes) == retries:
        return [str(cause) for cause in causes]
    return [CAUSE_NOT_RECORDED] * retries


def _add_retries(data: ReportData, record: dict[str, Any], causes: list[str],
                 seconds: float) -> None:
    """Count ``causes`` (one per retried try), sharing the time they cost among them."""
    for cause, retries in Counter(causes).items():
        _add_retry(data, record, cause, retries, seconds * retries / len(causes))


def _add_retry(data: ReportData, record: dict[str, Any], cause: str, retries: int,
               seconds: float) -> None:
    if retries <= 0:
        return
    entry = data.retries.setdefault(cause, RetryCause())
    entry.retries += retries
    entry.row_ids.add(str(record["id"]))
    entry.seconds += max(0.0, seconds)


def _span(record: dict[str, Any]) -> float:
    started, finished = epoch(record.get("started_at")), epoch(record.get("finished_at"))
    if started is None or finished is None:
        return 0.0
    return max(0.0, finished - started)
