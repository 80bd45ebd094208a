"""Axis maths for the report's charts (pure): ticks at round numbers, labels with their units,
histogram bins that suit how many values there are and how far they spread.

A chart's numbers must read at a glance: ticks fall on 1, 2 or 5 × 10^k (or on whole seconds,
minutes and hours for time), a small run gets a few wide bins instead of twenty-four bins
labelled "3 4 4 4 5 5 5", and a rate is never taken over less than a second.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_BINS = 24
# Latencies spreading wider than this (max / min) get bins of equal ratio (a log axis): 50 ms
# and 50 s answers both show. Narrower spreads read better on a plain linear axis.
WIDE_SPREAD = 20.0
# A rate over time is counted in buckets of at least a second: 60 rows that finish within
# 6 ms are "60 rows in the first second", never "10,000 rows/s".
MIN_BUCKET_S = 1.0
TARGET_BUCKETS = 40
# Fewer buckets than this do not make a chart over time (the report says how short it was).
MIN_BUCKETS = 4
# Round steps for time axes and buckets, in seconds: whole seconds, minutes, hours, days.
_TIME_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                 43200, 86400)
_EPSILON = 1e-9


def nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k that is at least ``raw`` (``raw`` > 0)."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    base = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if factor * base >= raw * (1 - _EPSILON):
            return _clean(factor * base)
    return _clean(10.0 * base)  # pragma: no cover - the loop always returns


def value_ticks(high: float, target: int = 5, *, whole: bool = False) -> list[float]:
    """0, step, 2·step … up to the first tick at or above ``high``; ``whole`` for counts (no
    tick at half a row)."""
    if high <= 0 or not math.isfinite(high):
        return [0.0, 1.0]
    step = nice_step(high / target)
    if whole:
        step = max(1.0, step)
    count = max(1, math.ceil(high / step - _EPSILON))
    return [_clean(index * step) for index in range(count + 1)]


def tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as the step needs (0.5 → one, 0.02 → two)."""
    decimals = 0 if step >= 1 else max(0, -math.floor(math.log10(step) + _EPSILON))
    return f"{value:,.{decimals}f}"


def duration_label(seconds: float, step_s: float | None = None) -> str:
    """A duration a person reads at once: 0, 250 ms, 1.5 s, 45 s, 2 min 30 s, 1 h 5 min.
    ``step_s``: the step between the labels, when they must stay apart: latencies all near
    505 ms in bins of 0.5 ms read 505.0, 505.5, 506.0 ms, not 505, 506, 506 ms."""
    if seconds <= 0:
        return "0"
    if seconds < 1:
        if step_s is not None:
            return f"{tick_label(seconds * 1000, step_s * 1000)} ms"
        return f"{_significant(seconds * 1000)} ms"
    if seconds < 60:
        if step_s is not None:
            return f"{tick_label(seconds, step_s)} s"
        return f"{_significant(seconds)} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def time_step(raw_s: float) -> float:
    """The smallest round time step (whole seconds, minutes, hours, days) of at least
    ``raw_s``; under a second, a 1-2-5 step."""
    if raw_s < 1:
        return nice_step(raw_s)
    for step in _TIME_STEPS_S:
        if step >= raw_s * (1 - _EPSILON):
            return float(step)
    return float(86400 * math.ceil(raw_s / 86400))


def time_ticks(span_s: float, target: int = 6) -> list[float]:
    """Ticks from 0 to the first round time at or above ``span_s``."""
    step = time_step(max(span_s, _EPSILON) / target)
    count = max(1, math.ceil(span_s / step - _EPSILON))
    return [_clean(index * step) for index in range(count + 1)]


@dataclass(frozen=True)
class Bins:
    """A histogram: ``counts[i]`` values fell in [``edges[i]``, ``edges[i + 1]``)."""

    edges: list[float]
    counts: list[int]
    log: bool = False  # edges of equal ratio (drawn on a log axis)


def histogram(values: Sequence[float], *, max_bins: int = MAX_BINS) -> Bins:
    """Bins whose edges are round numbers, as many as the values can fill (Sturges' rule,
    at most ``max_bins``): twelve latencies between 23 and 55 ms give 20–30, 30–40, 40–50 and
    50–60 ms; a spread wider than ``WIDE_SPREAD`` gets 1-2-5 edges (10, 20, 50, 100 …)."""
    if not values:
        return Bins([], [])
    low, high = min(values), max(values)
    wanted = max(1, min(max_bins, math.ceil(math.log2(len(values))) + 1))
    if low > 0 and high / low > WIDE_SPREAD:
        edges = _ladder(low, high)
        counts = [0] * (len(edges) - 1)
        for value in values:
            counts[min(len(counts) - 1, bisect.bisect_right(edges, value) - 1)] += 1
        return Bins(edges, counts, log=True)
    step = nice_step((high - low) / wanted) if high > low else nice_step(max(abs(high), 1) / 10)
    start = math.floor(low / step + _EPSILON) * step
    bins = max(1, math.floor((high - start) / step + _EPSILON) + 1)
    edges = [_clean(start + index * step) for index in range(bins + 1)]
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, math.floor((value - start) / step + _EPSILON)))] += 1
    return Bins(edges, counts)


def _ladder(low: float, high: float) -> list[float]:
    """1-2-5 edges from the largest at or below ``low`` to the smallest above ``high``."""
    exponent = math.floor(math.log10(low))
    edges: list[float] = []
    while True:
        for factor in (1.0, 2.0, 5.0):
            edge = _clean(factor * 10.0**exponent)
            if edge <= low * (1 + _EPSILON):
                edges = [edge]
            elif edges:
                edges.append(edge)
                if edge > high:
                    return edges
        exponent += 1


@dataclass(frozen=True)
class Buckets:
    """Rows finished and credits spent per bucket of time since the run's first request."""

    bucket_s: float
    span_s: float
    rows: list[int]
    credits: list[float]

    @property
    def edges(self) -> list[float]:
        return [_clean(index * self.bucket_s) for index in range(len(self.rows) + 1)]

    @property
    def chartable(self) -> bool:
        return len(self.rows) >= MIN_BUCKETS


def time_buckets(start: float, finished: Sequence[tuple[float, float]]) -> Buckets:
    """Bucket (finish time, credits) pairs by round spans of at least ``MIN_BUCKET_S``."""
    if not finished:
        return Buckets(MIN_BUCKET_S, 0.0, [], [])
    span = max(0.0, max(stamp for stamp, _ in finished) - start)
    bucket_s = max(MIN_BUCKET_S, time_step(span / TARGET_BUCKETS))
    count = max(1, math.floor(span / bucket_s + _EPSILON) + 1)
    rows = [0] * count
    credits = [0.0] * count
    for stamp, spent in finished:
        at = min(count - 1, max(0, math.floor((stamp - start) / bucket_s + _EPSILON)))
        rows[at] += 1
        credits[at] += spent
    return Buckets(bucket_s, span, rows, credits)


def _significant(value: float) -> str:
    """Three significant digits at most, no trailing zeros: 250, 12.5, 1.5, 0.8."""
    text = f"{value:.3g}"
    if "e" in text:
        text = f"{value:,.0f}"
    return text


def _clean(value: float) -> float:
    """Drop the binary noise of step arithmetic (0.30000000000000004 → 0.3)."""
    return float(f"{value:.12g}")
