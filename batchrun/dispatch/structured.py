"""Structured output in a run: an answer that does not fit its row's JSON Schema is asked again,
with the validation error, up to ``schema_retries`` times.

``SchemaTries.settle`` looks at each ok result of a row with a schema: an answer that fits
gets its ``parsed`` JSON; one that does not gets ``schema_error`` and, while tries are left,
becomes a try that is journaled (it was paid) as a retryable error — a resume sends the row
again — and is followed by the same row with the answer and the error appended as turns. The
row's last line says how it ended; ``attempts`` counts the requests of every try, and the
journal holds the tokens and credits of each.
"""

from __future__ import annotations

import dataclasses

from batchrun.api.structured import check_answer
from batchrun.core.result import STATUS_ERROR, RowResult, row_credits
from batchrun.dispatch.progress import RunCounters
from batchrun.manifest.rows import Row
from batchrun.request.structured import reask_turns

SCHEMA_ERROR = "schema_error"


class SchemaTries:
    """The tries of every row whose answer is being asked again (by row id)."""

    def __init__(self, retries: int) -> None:
        self.retries = retries
        self._before: dict[str, tuple[int, int]] = {}  # row id -> (tries, attempts) so far

    def settle(self, row: Row, result: RowResult) -> Row | None:
        """Check ``result`` (an ok answer of ``row``) against the row's schema, in place; the
        row to send next when it is asked again, else None."""
        if row.output_schema is None:
            return None
        tries, attempts = self._before.pop(row.id, (0, 0))
        result.attempts += attempts
        if not result.ok:
            return None
        checked = check_answer(result.content or "", row.output_schema)
        if checked.fits:
            result.parsed = checked.parsed
            return None
        tries += 1
        error = checked.error or "the answer does not fit the schema"
        result.schema_error = error
        result.status, result.error_code, result.error_type = STATUS_ERROR, SCHEMA_ERROR, "schema"
        if tries <= self.retries:
            self._before[row.id] = (tries, result.attempts)
            result.retryable = True  # asked again now; a resume starts the row over
            result.error_message = f"try {tries} did not fit the schema (asked again): {error}"
            return dataclasses.replace(
                row, extra_turns=(*row.extra_turns, *reask_turns(result.content or "", error)))
        result.error_message = f"the answer did not fit the schema after {tries} tries: {error}"
        return None


def count_try(counters: RunCounters, result: RowResult) -> None:
    """A try asked again: its tokens and credits are spent, but the row is not done."""
    counters.prompt_tokens += result.prompt_tokens or 0
    counters.completion_tokens += result.completion_tokens or 0
    counters.reasoning_tokens += result.reasoning_tokens or 0
    counters.credits += row_credits(result.credits, result.credits_computed) or 0.0
