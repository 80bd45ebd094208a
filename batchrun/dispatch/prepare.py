"""A row's request on its way out: built by ``request``, priced by ``cost``.

``prepare_request`` is the runner's one call for both steps; ``PricedRequest`` is the built
request with what ``cost.request_cost`` said of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchrun.cost.catalog import MediaRules
from batchrun.cost.request_cost import request_cost
from batchrun.cost.tokens import RowEstimate
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaResolver
from batchrun.request.payload import PreparedRequest, build_request


@dataclass(slots=True)
class PricedRequest(PreparedRequest):
    """A built request and its cost bounds."""

    estimate: RowEstimate | None = None  # None when not asked for (``counts=False``)
    prompt_bound: int = 0  # an upper bound on the prompt's tokens (for the credit budget)


def prepare_request(
    row: Row,
    job: JobSpec,
    resolver: MediaResolver | None,
    *,
    probe: bool = False,
    counts: bool = True,
    rules: MediaRules | None = None,
) -> PricedRequest:
    """Build ``row``'s request (local media checked and open, unread) and price it.

    RowError (MediaError included) when the row cannot be sent: a bad or oversize file, a
    prompt far beyond the model's context window (checked first: no request size could make
    it succeed), or a body over ``job.max_request_bytes`` once encoded. ``probe`` reads each
    file's metadata for the estimate; ``counts=False`` skips estimating rows that need no
    count (see ``cost.request_cost``).
    """
    built = build_request(row, job, resolver, probe=probe, into=PricedRequest)
    try:
        cost = request_cost(built.messages, built.metas, model=built.model,
                            body_bytes=len(built.skeleton), text_only=built.text_only,
                            counts=counts,
                            rules=rules if built.model == job.model else None)
        built.check_size(job.max_request_bytes)
    except BaseException:
        built.close()
        raise
    built.estimate, built.prompt_bound = cost.estimate, cost.prompt_bound
    return built
