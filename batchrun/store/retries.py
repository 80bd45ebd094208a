"""Retries of a run directory, from its journal: how many, by cause, and the time they cost.

A retry is an attempt sent again after a failed one. The journal line of a row lists the
cause of every failed attempt of its session (``failed_attempts``: "503 upstream_error" …):

- an ok line: each failed attempt was retried (the last try answered);
- an error line: each failed attempt but the last was retried; the last is the row's error,
  and a retry too when a later session sends the row again (its next line).

Time is what retried rows spent on failed attempts and the waits between them, summed over
rows (they run side by side, so it may exceed the run's duration): for an ok line, from its
first attempt to the start of the one that answered; for an error line that was retried, all
of it. Lines written before causes were recorded count their extra attempts as
``CAUSE_NOT_RECORDED``. Answers reused from an earlier run (``--reuse``) cost nothing here.

``fold_retries`` takes journal records oldest first (the report reads them itself);
``retry_totals`` reads a run directory's journal, parsing only the lines that can matter.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun.store.rundir import RunDir

# The cause of a failed try that a journal line does not hold (lines written before causes
# were kept): the one name for it, in ``status`` and the report alike.
CAUSE_NOT_RECORDED = "not recorded"
_ERROR = b'"status":"error"'
# ``failed_attempts`` is a journal line's last field: a line that ends so had no failed attempt
# (a line without the field was written before causes were kept, and is read).
_NO_FAILURES = b'"failed_attempts":null}\n'
# Every journal line starts with its id (``RowResult``'s first field): read without parsing
# the rest, to see whether a row that failed was sent again later.
_ID = re.compile(rb'^\{"id":("(?:[^"\\]|\\.)*")')


@dataclass
class RetryTotals:
    """Retries of a run directory: ``total`` attempts sent again, over ``rows`` rows."""

    total: int = 0
    rows: int = 0
    seconds: float = 0.0
    by_cause: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "rows": self.rows, "seconds": round(self.seconds, 3),
                "by_cause": dict(self.by_cause.most_common())}


def fold_retries(records: Iterable[dict[str, Any]]) -> RetryTotals:
    """The retries of journal ``records``, oldest first (several lines of a row allowed)."""
    totals = RetryTotals()
    retried_rows: set[str] = set()
    # id → (cause, seconds) of a row's latest error line: a retry if a later line follows.
    open_errors: dict[str, tuple[str, float, Any]] = {}
    for record in records:
        row_id = str(record.get("id"))
        earlier = open_errors.pop(row_id, None)
        if earlier is not None:
            cause, seconds, finished = earlier
            if finished == record.get("finished_at"):
                pass  # the same line marked again (the circuit breaker reopens rows)
            elif not record.get("reused_from"):
                _add(totals, retried_rows, row_id, [cause], seconds)
        if record.get("reused_from"):
            continue
        causes = _causes(record)
        span = _span(record)
        if record.get("status") == "ok":
            latency = (record.get("latency_ms") or 0.0) / 1000.0
            _add(totals, retried_rows, row_id, causes, max(0.0, span - latency) if causes else 0)
        elif causes:
            retried = causes[:-1]
            _add(totals, retried_rows, row_id, retried, span if retried else 0.0)
            # Sent again by a later session: the last failure was retried too, and if this
            # line's time is not counted yet, it is then.
            open_errors[row_id] = (causes[-1], 0.0 if retried else span, record.get("finished_at"))
    totals.rows = len(retried_rows)
    return totals


def retry_totals(run: RunDir) -> RetryTotals:
    """The retries recorded in ``run``'s journal (also while it runs)."""
    return fold_retries(_lines_that_matter(run))


def _lines_that_matter(run: RunDir) -> Iterator[dict[str, Any]]:
    """The journal lines ``fold_retries`` needs: lines with failed attempts or without the
    field, and every later line of a row that ended in error. Most lines of a run are
    answers on the first try, skipped by their last bytes (a 1 KB line: ~2 µs)."""
    watched: set[bytes] = set()  # raw JSON ids of rows whose last line so far is an error
    try:
        journal = open(run.journal_path, "rb")  # noqa: SIM115 - closed below
    except (FileNotFoundError, NotADirectoryError):
        return
    with journal:
        for raw in journal:
            plain = raw.endswith(_NO_FAILURES)
            if plain and not watched:
                continue
            match = _ID.match(raw)
            if match is None:
                continue  # a torn line of a killed process
            if plain and match.group(1) not in watched:
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            if _ERROR in raw:
                watched.add(match.group(1))
            else:
                watched.discard(match.group(1))
            yield record


def _causes(record: dict[str, Any]) -> list[str]:
    causes = record.get("failed_attempts")
    if isinstance(causes, list):
        return [str(cause) for cause in causes]
    attempts = record.get("attempts") or 0
    if not isinstance(attempts, int) or attempts < 1:
        return []
    if record.get("status") == "ok":
        return [CAUSE_NOT_RECORDED] * (attempts - 1)
    return [CAUSE_NOT_RECORDED] * (attempts - 1) + [str(record.get("error_code") or "error")]


def _add(totals: RetryTotals, retried_rows: set[str], row_id: str, causes: list[str],
         seconds: float) -> None:
    if not causes:
        return
    totals.total += len(causes)
    totals.by_cause.update(causes)
    totals.seconds += seconds
    retried_rows.add(row_id)


def _span(record: dict[str, Any]) -> float:
    started, finished = record.get("started_at"), record.get("finished_at")
    if not isinstance(started, int | float) or not isinstance(finished, int | float):
        return 0.0
    return max(0.0, finished - started)
