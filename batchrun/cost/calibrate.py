"""Calibration from a paid sample (pure): which rows to sample, what they teach, and the
whole run's estimate with an interval.

- The sample is spread evenly over the manifest's sendable rows: position
  ``floor((k + 0.5) * S / n)`` for k in 0..n-1 — deterministic, so a later ``run --calibrate``
  with the same N picks the same rows and finds them already paid for in RUN_DIR.
- Prompt tokens: the ratio of real to estimated tokens, as a ratio of sums (what totals need),
  per kind of row when the sample holds ``MIN_ROWS_PER_KIND`` of that kind, else overall.
- Output tokens: their mean per row; quantiles of the sample are reported as they are.
- Interval: the run's total is a sum over many rows, so its uncertainty is that of the sample's
  mean and ratio (a bootstrap over the sample, seeded, so the same sample gives the same
  interval) plus the spread of the rows still to send around that mean (normal, in
  quadrature). Per-row quantiles times the row count would be a far wider band than any real
  total can reach.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchrun.cost.catalog import Price
from batchrun.cost.estimate import Band, KindEstimate, RunEstimate, Tally

MIN_ROWS_PER_KIND = 5
CONFIDENCE = 0.90
BOOTSTRAP_ROUNDS = 2000
_Z = {0.80: 1.2816, 0.90: 1.6449, 0.95: 1.9600}


def sample_positions(rows_sendable: int, sample_size: int) -> list[int]:
    """0-based positions among the sendable rows, spread evenly (all rows if n >= S)."""
    if sample_size >= rows_sendable:
        return list(range(rows_sendable))
    return [math.floor((k + 0.5) * rows_sendable / sample_size) for k in range(sample_size)]


@dataclass(frozen=True)
class SampleRow:
    """One answered sample row: what was estimated and what the API billed."""

    kind: str
    estimated_prompt: int
    prompt_tokens: int
    completion_tokens: int
    credits: float


@dataclass(frozen=True)
class CalibrationFit:
    rows: tuple[SampleRow, ...]
    prompt_ratio: float
    prompt_ratio_by_kind: dict[str, float]
    completion_mean: float
    completion_quantiles: dict[str, float]  # p10, p50, p90, max

    @property
    def credits(self) -> float:
        return sum(row.credits for row in self.rows)


def _ratio(rows: Iterable[SampleRow]) -> float | None:
    real = estimated = 0
    for row in rows:
        real += row.prompt_tokens
        estimated += row.estimated_prompt
    return real / estimated if estimated > 0 else None


def _ratios_by_kind(rows: Sequence[SampleRow]) -> tuple[float, dict[str, float]]:
    overall = _ratio(rows) or 1.0
    by_kind: dict[str, list[SampleRow]] = {}
    for row in rows:
        by_kind.setdefault(row.kind, []).append(row)
    ratios = {
        kind: ratio
        for kind, members in by_kind.items()
        if len(members) >= MIN_ROWS_PER_KIND and (ratio := _ratio(members)) is not None
    }
    return overall, ratios


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values."""
    if not sorted_values:
        return 0.0
    at = q * (len(sorted_values) - 1)
    low = math.floor(at)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (at - low)


def fit(rows: Sequence[SampleRow]) -> CalibrationFit | None:
    """What the answered sample teaches; None when no row came back with usage."""
    if not rows:
        return None
    overall, by_kind = _ratios_by_kind(rows)
    completions = sorted(float(row.completion_tokens) for row in rows)
    return CalibrationFit(
        rows=tuple(rows),
        prompt_ratio=overall,
        prompt_ratio_by_kind=by_kind,
        completion_mean=statistics.fmean(completions),
        completion_quantiles={
            "p10": _quantile(completions, 0.10),
            "p50": _quantile(completions, 0.50),
            "p90": _quantile(completions, 0.90),
            "max": completions[-1],
        },
    )


@dataclass
class _Projection:
    prompt_tokens: float
    output_tokens: float
    by_kind_prompt: dict[str, float] = field(default_factory=dict)


def _project(rows: Sequence[SampleRow], remaining: Tally) -> _Projection:
    overall, by_kind = _ratios_by_kind(rows)
    mean = statistics.fmean(row.completion_tokens for row in rows)
    projection = _Projection(0.0, mean * remaining.rows_sendable)
    for kind, totals in remaining.by_kind.items():
        tokens = totals.prompt_tokens * by_kind.get(kind, overall)
        projection.by_kind_prompt[kind] = tokens
        projection.prompt_tokens += tokens
    return projection


def project(
    calibration: CalibrationFit,
    remaining: Tally,
    price: Price,
    *,
    confidence: float = CONFIDENCE,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> RunEstimate:
    """The calibrated estimate of the rows still to send, with a ``confidence`` interval."""
    rows = calibration.rows
    point = _project(rows, remaining)
    expected_credits = price.credits(point.prompt_tokens, point.output_tokens)

    rng = random.Random(seed)
    credit_draws: list[float] = []
    output_draws: list[float] = []
    size = len(rows)
    for _ in range(rounds if size > 1 else 0):
        resample = [rows[rng.randrange(size)] for _ in range(size)]
        draw = _project(resample, remaining)
        credit_draws.append(price.credits(draw.prompt_tokens, draw.output_tokens))
        output_draws.append(draw.output_tokens)
    tail = (1.0 - confidence) / 2
    z = _Z.get(round(confidence, 2), 1.6449)
    # The rows still to send scatter around the mean: sqrt(M) * sd of one row's output.
    spread_tokens = (
        z * math.sqrt(remaining.rows_sendable) * statistics.stdev(
            row.completion_tokens for row in rows)
        if size > 1 else 0.0
    )
    spread_credits = price.credits(0, spread_tokens)

    # The bootstrap's spread is that of a variance with divisor n; widen it to n - 1.
    widen = math.sqrt(size / (size - 1)) if size > 1 else 1.0

    def band(expected: float, draws: list[float], spread: float) -> Band:
        draws.sort()
        below = (expected - _quantile(draws, tail)) * widen if draws else 0.0
        above = (_quantile(draws, 1.0 - tail) - expected) * widen if draws else 0.0
        return Band(
            max(0.0, expected - math.hypot(max(0.0, below), spread)),
            expected,
            expected + math.hypot(max(0.0, above), spread),
        )

    credits = band(expected_credits, credit_draws, spread_credits)
    output = band(point.output_tokens, output_draws, spread_tokens)
    by_kind = {
        kind: KindEstimate(
            rows=totals.rows,
            prompt_tokens=round(point.by_kind_prompt.get(kind, 0.0)),
            output_tokens=calibration.completion_mean * totals.rows,
            credits=price.credits(point.by_kind_prompt.get(kind, 0.0),
                                  calibration.completion_mean * totals.rows),
        )
        for kind, totals in remaining.by_kind.items()
    }
    return RunEstimate(
        rows=remaining.rows,
        rows_unsendable=remaining.rows_unsendable,
        unsendable=list(remaining.unsendable),
        prompt_tokens=round(point.prompt_tokens),
        output_tokens=output,
        credits=credits,
        usd=credits.map(price.usd),
        by_kind=by_kind,
        basis=(
            f"calibrated on {len(rows)} sample rows: prompt tokens x{calibration.prompt_ratio:.3f}"
            f" of the estimate, {calibration.completion_mean:,.0f} output tokens per row; "
            f"{confidence:.0%} interval"
        ),
    )


def spent_estimate(rows: int, prompt_tokens: int, output_tokens: int, credits: float,
                   price: Price, by_kind: dict[str, KindEstimate] | None = None) -> RunEstimate:
    """Rows already answered, as an 'estimate' with no uncertainty: what they really cost."""
    return RunEstimate(
        rows=rows,
        prompt_tokens=prompt_tokens,
        output_tokens=Band.exact(output_tokens),
        credits=Band.exact(credits),
        usd=Band.exact(price.usd(credits)),
        by_kind=by_kind or {},
        basis=f"{rows:,} rows already answered at their billed cost",
    )


def report_lines(calibration: CalibrationFit, price: Price, *, sent: int, reused: int,
                 failed: int) -> list[str]:
    """The sample's real cost, shown before any projection (stderr)."""
    rows = calibration.rows
    estimated = sum(row.estimated_prompt for row in rows)
    real_prompt = sum(row.prompt_tokens for row in rows)
    quantiles = calibration.completion_quantiles
    lines = [
        f"calibration sample: {len(rows)} rows answered ({sent} sent now, {reused} already in "
        f"the run directory{f', {failed} failed' if failed else ''})",
        f"  real cost {calibration.credits:,.4f} credits (${price.usd(calibration.credits):,.4f})",
        f"  prompt tokens: {real_prompt:,} real vs {estimated:,} estimated "
        f"(x{calibration.prompt_ratio:.3f})",
        f"  output tokens per row: mean {calibration.completion_mean:,.0f} · p10 "
        f"{quantiles['p10']:,.0f} · p50 {quantiles['p50']:,.0f} · p90 {quantiles['p90']:,.0f}"
        f" · max {quantiles['max']:,.0f}",
    ]
    if calibration.prompt_ratio_by_kind and len(calibration.prompt_ratio_by_kind) > 1:
        kinds = ", ".join(f"{k} x{v:.3f}" for k, v in calibration.prompt_ratio_by_kind.items())
        lines.append(f"  prompt ratio by kind: {kinds}")
    return lines


def as_dict(calibration: CalibrationFit, *, sent: int, reused: int, failed: int,
            run_dir: str) -> dict[str, Any]:
    rows = calibration.rows
    return {
        "sample_rows": len(rows),
        "sent": sent,
        "reused": reused,
        "failed": failed,
        "credits": round(calibration.credits, 6),
        "prompt_tokens": sum(row.prompt_tokens for row in rows),
        "estimated_prompt_tokens": sum(row.estimated_prompt for row in rows),
        "prompt_ratio": round(calibration.prompt_ratio, 6),
        "prompt_ratio_by_kind": {k: round(v, 6) for k, v in
                                 calibration.prompt_ratio_by_kind.items()},
        "completion_tokens": {"mean": round(calibration.completion_mean, 3),
                              **calibration.completion_quantiles},
        "confidence": CONFIDENCE,
        "run_dir": run_dir,
    }
