"""One row on its way out: its request built (``request.payload``) and priced
(``cost.request_cost``), what the limiter and the budget hold for each attempt, and what its
attempts did so far. One object a row: this path runs thousands of times a second."""

from __future__ import annotations

from dataclasses import dataclass, field

from batchrun.cost.catalog import MediaRules
from batchrun.cost.request_cost import request_cost
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaResolver
from batchrun.request.payload import PreparedRequest, build_request


@dataclass(slots=True)
class Flight:
    row: Row
    started_at: float  # when a worker took the row (time.time())
    request: PreparedRequest  # local files open and checked, unread; close() when done
    tokens: int  # the limiter's charge per attempt: estimated prompt + expected output
    prompt_bound: int  # what the budget reserves per attempt (0 without a budget)
    sha: str | None = None  # the request body's sha256, once known
    attempts: int = 0
    first_sent_at: float | None = None
    send_started: float = 0.0  # perf_counter() when the last attempt went on the wire
    failures: list[str] = field(default_factory=list)  # each failed attempt's cause


def prepare(row: Row, job: JobSpec, media: MediaResolver, *, started_at: float, counts: bool,
            budgeted: bool, rules: MediaRules) -> Flight:
    """Build the row's request and price it.

    RowError when the row cannot be sent: a bad or oversize file, a prompt far beyond the
    model's context window (checked first: no request size could make it succeed), or a body
    over ``max_request_bytes`` once encoded; the files it opened are closed then. ``counts``:
    estimate the prompt even where nothing needs it (``--tpm`` and the budget do, see
    ``cost.request_cost``); ``budgeted``: bound it for the budget's reservations.
    """
    request = build_request(row, job, media, probe=counts)
    try:
        # A row may name its own model: priced and bounded as that model (not the job's rules).
        cost = request_cost(request.messages, request.metas, model=request.model,
                            body_bytes=len(request.skeleton), text_only=request.text_only,
                            counts=counts, rules=rules if request.model == job.model else None)
        request.check_size(job.max_request_bytes)
    except BaseException:
        request.close()
        raise
    estimated = cost.estimate.prompt_tokens if cost.estimate is not None else 0
    return Flight(row, started_at, request, estimated + job.expected_output_tokens,
                  cost.prompt_bound if budgeted else 0)
