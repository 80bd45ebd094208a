"""``--max-credits`` end to end: real runs against the emulator at concurrency 64."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.kit import fast_job, run_cli, write_manifest

from batchrun.cost.budget import ROUNDING_MARGIN
from batchrun.cost.catalog import CATALOG
from batchrun.emulator.server import EmulatorServer

PRICE = CATALOG["gemini-3.1-pro"].price
EMULATOR_MEAN_OUTPUT = 210  # the emulator answers 20..400 completion tokens, by hash
ROWS = 2000


def credits_column(run_dir: Path) -> list[float]:
    table = pq.read_table(run_dir / "results.parquet", columns=["credits", "status"])
    return [c for c, s in zip(table["credits"].to_pylist(), table["status"].to_pylist(),
                              strict=True) if s == "ok"]


def estimate_credits(manifest: Path, job: Path) -> float:
    result = run_cli(["estimate", str(manifest), "--job", str(job), "--json"])
    assert result.exit_code == 0, result.output
    return float(json.loads(result.stdout)["credits"]["expected"])


@pytest.mark.slow  # ~10 s each: 2,000 rows at 64 in flight until the cap stops them
@pytest.mark.parametrize(
    ("bound", "latency_ms", "in_flight_at_least"),
    [
        # Default: each request reserves the model's 65,536-token output limit (~63 credits),
        # a true bound, so the cap itself limits how many requests are out at once.
        pytest.param(None, 0, 1, id="model-output-limit"),
        # The emulator never answers more than 400 tokens: a true bound too, and a small one,
        # so all 64 workers are really in flight (latency keeps them there).
        pytest.param(400, 200, 48, id="max_output_tokens_bound-400"),
    ],
)
def test_a_cap_at_half_the_estimate_stops_with_exit_4_and_spend_under_it(
    tmp_path: Path,
    make_emulator: Callable[..., EmulatorServer],
    bound: int | None,
    latency_ms: float,
    in_flight_at_least: int,
) -> None:
    server = make_emulator(latency_ms=latency_ms)
    manifest = write_manifest(tmp_path / "m.jsonl", ROWS)
    fields = {"concurrency": 64, "expected_output_tokens": EMULATOR_MEAN_OUTPUT}
    if bound is not None:
        fields["max_output_tokens_bound"] = bound
    job = fast_job(tmp_path, **fields)
    cap = round(estimate_credits(manifest, job) / 2, 2)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--max-credits", str(cap), "--yes"])
    assert result.exit_code == 4, result.output

    spent = sum(credits_column(out))
    assert spent <= cap
    assert server.stats.credits_billed == pytest.approx(spent)  # nothing paid off the books
    per_request = PRICE.credits(0, bound or 65_536) + ROUNDING_MARGIN
    # It stops only when the next reservation (output bound + a small prompt bound) no longer
    # fits: at most about one reservation of the cap is left unspent.
    assert spent > cap - per_request - 0.05
    assert server.stats.max_in_flight >= in_flight_at_least
    if bound is None:  # the cap, not the concurrency, limited what was out at once
        assert server.stats.max_in_flight <= math.floor(cap / per_request)
    assert "stopped at the budget cap" in result.output

    # The printed command resumes with a higher cap and finishes, paying no row twice.
    server.config.latency_ms = 0
    resume = re.search(r"to go on, raise the cap and resume:\n  (.+)", result.output)
    assert resume is not None
    args = resume.group(1).split()
    higher = float(args[args.index("--max-credits") + 1])
    assert higher > cap
    again = run_cli(args[1:])
    assert again.exit_code == 0, again.output
    assert len(credits_column(out)) == ROWS and sum(credits_column(out)) <= higher
    assert max(server.stats.billed_by_body.values()) == 1


def test_an_answer_over_a_too_tight_bound_stops_dispatch_and_is_reported(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    """max_output_tokens_bound = 30 while answers run 20..400 tokens: the first answer over
    its reservation is spent at its real cost, the bound is dropped for the model's limit
    (which no longer fits), so nothing is dispatched after it but what was already in flight."""
    server = make_emulator(latency_ms=30)
    manifest = write_manifest(tmp_path / "m.jsonl", 1000)
    job = fast_job(tmp_path, concurrency=64, max_output_tokens_bound=30)
    out = tmp_path / "run"
    cap = 50.0
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--max-credits", str(cap), "--yes"])
    assert result.exit_code == 4, result.output
    assert "cost more than their reservation" in result.output
    spent = credits_column(out)
    assert sum(spent) <= cap
    assert len(spent) <= 64  # only the requests already in flight at the first overshoot
    assert server.stats.requests_total == len(spent)


def test_the_cap_covers_the_whole_run_directory_across_resumes(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 300)
    job = fast_job(tmp_path, concurrency=16, max_output_tokens_bound=400)
    out = tmp_path / "run"
    base = ["run", str(manifest), "--job", str(job), "--out", str(out), "--endpoint",
            emulator.base_url, "--yes"]
    first = run_cli([*base, "--max-credits", "20"])
    assert first.exit_code == 4, first.output
    spent_first = sum(credits_column(out))
    requests_first = emulator.stats.requests_total
    # Same cap again: what the run directory already spent counts, so nothing more is sent.
    second = run_cli([*base, "--max-credits", "20"])
    assert second.exit_code == 4, second.output
    assert emulator.stats.requests_total - requests_first <= 1
    assert sum(credits_column(out)) <= 20 and sum(credits_column(out)) >= spent_first
