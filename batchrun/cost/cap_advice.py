"""What a spending cap does to concurrency, said before anything is sent (pure).

Each request reserves a bound of its cost before it is sent (``budget``), and the bound's
largest part is the worst-case answer: the model's output limit (65,536 tokens for
gemini-3.1-pro, about 63 credits), since the API has no max-tokens field. A cap of 100 credits
therefore holds one request at a time and a cap of 1 none. These lines say so up front, with a
cap that lets the configured concurrency run to the end and the job field that reserves less.
"""

from __future__ import annotations

import math

from batchrun.cost.budget import (
    CAP_HEADROOM,
    ROUNDING_MARGIN,
    CreditLedger,
    in_flight_under_cap,
    least_reservation,
)
from batchrun.cost.catalog import Price

# The output bound shown as the example of reserving less (a long answer of most jobs).
BOUND_EXAMPLE = 4000


def cap_for(ledger: CreditLedger, per_request: float, *, in_flight: int, expected: float) -> int:
    """A cap that holds ``in_flight`` reservations on top of the spend so far and the
    estimate: the run keeps that many requests out until its last row."""
    return math.ceil(ledger.spent + expected + per_request * CAP_HEADROOM * in_flight)


def cap_warnings(ledger: CreditLedger, price: Price, *, concurrency: int, rows: int,
                 expected: float) -> list[str]:
    """Lines for a cap that lets fewer requests be in flight than ``concurrency`` (or than the
    ``rows`` to send, when fewer): how many, why, and the two ways to more. Empty otherwise.
    Meant to be shown even with --quiet: a run held to one request at a time is slow."""
    per_request = least_reservation(ledger, price)
    wanted = max(1, min(concurrency, rows))
    fits = in_flight_under_cap(ledger, per_request, wanted)
    if fits >= wanted:
        return []
    why = (f"each request reserves at least {per_request:,.2f} credits for its worst-case "
           f"answer ({ledger.output_bound:,} output tokens, {ledger.output_bound_source}; the "
           f"API has no max-tokens field) and the cap leaves {ledger.room:,.2f}")
    if fits == 0:
        head = f"budget: no request fits under the cap: {why}; nothing will be sent (exit 4)"
    elif fits == 1:
        head = f"budget: requests will go one at a time, not {wanted} at once: {why}"
    else:
        head = f"budget: at most {fits} requests in flight under the cap, not {wanted}: {why}"
    suggested = cap_for(ledger, per_request, in_flight=wanted, expected=expected)
    lines = [head, f"  --max-credits {suggested:,} lets {wanted} run at once to the end (the "
                   f"estimate, {expected:,.2f}, plus {wanted} reservations)"]
    if ledger.output_bound > BOUND_EXAMPLE:
        smaller = price.credits(0, BOUND_EXAMPLE) + ROUNDING_MARGIN
        lines.append(f"  or reserve less: max_output_tokens_bound = {BOUND_EXAMPLE} in the job "
                     f"reserves {smaller:,.2f} credits a request (a longer answer is reported and "
                     "the model's limit reserved from then on)")
    return lines
