"""The steady rate of a run: answers per second once the pool is full and before it drains.

A run's overall rate (first send to last answer) includes the ramp (no answer can come before
one latency has passed, and hundreds of connections open at once) and the drain. The ideal
``concurrency / latency`` is a steady-state figure, so both are reported.
"""

from __future__ import annotations

from collections.abc import Sequence

SKIP_HEAD_S = 2.0
SKIP_TAIL_S = 1.0


def steady_rate(finished_at: Sequence[float], first_sent: float) -> float | None:
    """Answers per second between ``first_sent + 2 s`` and ``last answer - 1 s``; None if the
    run is too short for that window to hold at least a second."""
    if not finished_at:
        return None
    start = first_sent + SKIP_HEAD_S
    end = max(finished_at) - SKIP_TAIL_S
    if end - start < 1.0:
        return None
    inside = sum(1 for moment in finished_at if start <= moment < end)
    return inside / (end - start)
