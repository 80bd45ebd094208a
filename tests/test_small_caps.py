"""Small ``--max-credits`` caps: how many requests fit in flight is said up front, with why
(the worst-case answer each request reserves), a cap that lets the configured concurrency run,
and a suggested cap that always lets the run go on (no cap that suggests itself again)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path

from support.kit import by_id, fast_job, run_cli, write_manifest

from batchrun.cost.budget import ROUNDING_MARGIN, CreditLedger, suggested_cap
from batchrun.cost.catalog import CATALOG
from batchrun.emulator.server import EmulatorServer

PER_REQUEST = CATALOG["gemini-3.1-pro"].price.credits(0, 65_536) + ROUNDING_MARGIN  # ≈ 62.92


def test_a_cap_that_fits_no_request_says_so_and_suggests_one_that_runs(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 10)
    job = fast_job(tmp_path)  # concurrency 8
    out = tmp_path / "run"
    stopped = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                       "--endpoint", emulator.base_url, "--max-credits", "1"])
    assert stopped.exit_code == 4, stopped.output
    assert emulator.stats.requests_total == 0
    assert "no request fits under the cap" in stopped.output
    assert "reserves at least 62.92 credits for its worst-case answer (65,536 output tokens" \
        in stopped.output
    assert "will stop at the cap after about" not in stopped.output  # nothing will be sent
    assert "10 rows left; none answered yet" in stopped.output  # not "about 0.0000 credits"
    assert "max_output_tokens_bound = 4000" in stopped.output
    resume = re.search(r"to go on, raise the cap and resume:\n  (.+)", stopped.output)
    assert resume is not None, stopped.output
    args = shlex.split(resume.group(1))[1:]
    suggested = float(args[args.index("--max-credits") + 1])
    assert suggested >= 8 * PER_REQUEST  # room for the 8 requests of --concurrency

    resumed = run_cli(args)
    assert resumed.exit_code == 0, resumed.output
    assert "fits under the cap" not in resumed.output and "one at a time" not in resumed.output
    assert {row["status"] for row in by_id(out).values()} == {"ok"}


def test_a_cap_that_fits_one_request_says_they_go_one_at_a_time(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=50)
    manifest = write_manifest(tmp_path / "m.jsonl", 12)
    job = fast_job(tmp_path)
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(tmp_path / "run"),
                      "--endpoint", server.base_url, "--max-credits", "100", "--quiet"])
    assert result.exit_code == 0, result.output
    assert server.stats.max_in_flight == 1
    # Said even with --quiet: a run held to one request at a time is slow.
    assert "budget: requests will go one at a time, not 8 at once" in result.output
    lets = re.search(r"--max-credits ([\d,]+) lets 8 run at once", result.output)
    assert lets is not None and float(lets.group(1).replace(",", "")) >= 8 * PER_REQUEST


def test_the_suggested_cap_always_fits_the_refused_request() -> None:
    for cap, spent in ((1.0, 0.0), (2.0, 0.0), (70.0, 60.0), (500.0, 499.0)):
        ledger = CreditLedger.for_job(cap, "gemini-3.1-pro", spent=spent)
        ledger.refused = PER_REQUEST + 0.5  # a prompt bound on top of the output's
        higher = suggested_cap(ledger, rows_pending=3, credits_per_row=0.0, concurrency=8)
        assert higher - spent >= 3 * ledger.refused  # the 3 rows left, all at once
