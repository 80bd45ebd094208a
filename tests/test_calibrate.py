"""Calibration maths (pure): sample positions, the fit, the projected interval."""

from __future__ import annotations

import random

import pytest

from batchrun.cost.calibrate import SampleRow, fit, project, sample_positions
from batchrun.cost.catalog import CATALOG
from batchrun.cost.estimate import Tally
from batchrun.cost.tokens import RowEstimate

PRICE = CATALOG["gemini-3.1-pro"].price


def test_sample_positions_are_spread_evenly_and_deterministic() -> None:
    positions = sample_positions(5000, 50)
    assert positions == sample_positions(5000, 50)
    assert len(set(positions)) == 50 and positions == sorted(positions)
    assert positions[0] == 50 and positions[-1] == 4950  # centred in 50 equal strata
    gaps = {b - a for a, b in zip(positions, positions[1:], strict=False)}
    assert gaps == {100}
    assert sample_positions(7, 50) == list(range(7))
    assert len(set(sample_positions(101, 100))) == 100


def test_fit_is_a_ratio_of_sums_with_quantiles() -> None:
    rows = [SampleRow("text", 100, 160, tokens, 0.0) for tokens in (10, 20, 30, 40, 50)]
    rows.append(SampleRow("text", 1000, 1500, 60, 0.0))
    calibration = fit(rows)
    assert calibration is not None
    assert calibration.prompt_ratio == pytest.approx((5 * 160 + 1500) / (5 * 100 + 1000))
    assert calibration.completion_mean == pytest.approx(35.0)
    assert calibration.completion_quantiles["max"] == 60
    assert calibration.completion_quantiles["p50"] == pytest.approx(35.0)
    assert fit([]) is None


def test_kinds_with_enough_sample_rows_get_their_own_ratio() -> None:
    rows = [SampleRow("text", 100, 160, 100, 0.0) for _ in range(10)]
    rows += [SampleRow("image", 1200, 1200, 100, 0.0) for _ in range(5)]
    rows += [SampleRow("pdf", 3000, 6000, 100, 0.0)]  # one row: borrows the overall ratio
    calibration = fit(rows)
    assert calibration is not None
    assert calibration.prompt_ratio_by_kind == {"text": pytest.approx(1.6), "image": 1.0}
    remaining = Tally()
    remaining.add(RowEstimate(1000, "text"))
    remaining.add(RowEstimate(1200, "image"))
    remaining.add(RowEstimate(3000, "pdf"))
    projected = project(calibration, remaining, PRICE, rounds=200)
    assert projected.by_kind["text"].prompt_tokens == 1600
    assert projected.by_kind["image"].prompt_tokens == 1200
    assert projected.by_kind["pdf"].prompt_tokens == round(3000 * calibration.prompt_ratio)


def test_identical_rows_give_a_point_estimate() -> None:
    rows = [SampleRow("text", 100, 250, 300, 0.0) for _ in range(20)]
    calibration = fit(rows)
    assert calibration is not None
    remaining = Tally()
    for _ in range(1000):
        remaining.add(RowEstimate(100, "text"))
    projected = project(calibration, remaining, PRICE, rounds=100)
    expected = PRICE.credits(1000 * 250, 1000 * 300)
    assert projected.credits.expected == pytest.approx(expected)
    assert projected.credits.low == pytest.approx(expected)
    assert projected.credits.high == pytest.approx(expected)


def test_the_90_percent_interval_covers_the_true_total_about_90_percent_of_the_time() -> None:
    """A population shaped like the emulator's answers (20..400 output tokens, prompts read
    at 1.6x the estimate): many different samples of 50, each projected to the rest; the
    interval must hold the true total about as often as it claims."""
    rng = random.Random(11)
    population = []
    for _ in range(3000):
        estimated = rng.randint(50, 2000)
        population.append(SampleRow("text", estimated, round(estimated * 1.6),
                                    rng.randint(20, 400), 0.0))
    trials = covered = 0
    for trial in range(120):
        picks = set(random.Random(trial).sample(range(len(population)), 50))
        sample = [population[i] for i in picks]
        rest = [population[i] for i in range(len(population)) if i not in picks]
        remaining = Tally()
        for row in rest:
            remaining.add(RowEstimate(row.estimated_prompt, "text"))
        calibration = fit(sample)
        assert calibration is not None
        projected = project(calibration, remaining, PRICE, rounds=300, seed=trial)
        truth = PRICE.credits(sum(r.prompt_tokens for r in rest),
                              sum(r.completion_tokens for r in rest))
        trials += 1
        covered += projected.credits.low <= truth <= projected.credits.high
    assert 0.80 <= covered / trials <= 0.99
