"""``--calibrate`` end to end against an emulator whose tokenisation is not the estimator's."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.kit import fast_job, run_cli, write_manifest

from batchrun.emulator.server import EmulatorServer

TEXT = ("the quarterly report shows revenue grew while costs fell in most regions and the "
        "board asked for a plan to cut delays in shipping data to customers")
WORDS = TEXT.split(" ")


def write_documents(path: Path, rows: int, seed: int = 4) -> Path:
    """Document-like prompts (300-2,500 words): what batchrun is for."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for number in range(rows):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(300, 2500)))
            handle.write(json.dumps({"id": f"doc-{number}", "prompt": f"Summarise: {words}"})
                         + "\n")
    return path


@pytest.mark.slow  # ~15 s: 5,000 rows run for real
def test_calibrate_50_brings_a_5000_row_estimate_within_5_percent_of_the_real_cost(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    # The emulator reads 2.5 characters per token; the estimator assumes 4.
    server = make_emulator(chars_per_token=2.5)
    manifest = write_documents(tmp_path / "docs.jsonl", 5000)
    # The job even guesses the mean output right (the emulator's 20..400 average 210), so
    # what the uncalibrated estimate gets wrong is the tokenisation alone.
    job = fast_job(tmp_path, concurrency=64, expected_output_tokens=210, stream=False)
    out = tmp_path / "run"
    estimated = run_cli(["estimate", str(manifest), "--job", str(job), "--calibrate", "50",
                         "--endpoint", server.base_url, "--out", str(out), "--yes", "--json"])
    assert estimated.exit_code == 0, estimated.output
    report = json.loads(estimated.stdout)
    assert server.stats.requests_total == 50
    calibration = report["calibration"]
    assert calibration["sent"] == 50 and abs(calibration["prompt_ratio"] - 1.6) < 0.01
    # The sample's real cost is shown before the calibrated estimate.
    stderr = estimated.stderr
    assert stderr.index("real cost") < stderr.index("calibrated estimate for the whole run")

    ran = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                   "--endpoint", server.base_url, "--yes", "--quiet"])
    assert ran.exit_code == 0, ran.output
    assert server.stats.requests_total == 5000  # the sample was not paid for again
    table = pq.read_table(out / "results.parquet", columns=["credits"])
    real = sum(table["credits"].to_pylist())
    assert table.num_rows == 5000

    calibrated = report["credits"]
    uncalibrated = report["uncalibrated"]["credits"]["expected"]
    assert abs(calibrated["expected"] - real) / real < 0.05
    assert calibrated["low"] <= real <= calibrated["high"]
    assert abs(uncalibrated - real) / real > 0.15  # what calibration fixed


def test_run_calibrate_sends_the_sample_once_then_the_rest(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(chars_per_token=3.0)
    manifest = write_manifest(tmp_path / "m.jsonl", 400)
    job = fast_job(tmp_path, concurrency=16)
    out = tmp_path / "run"
    args = ["run", str(manifest), "--job", str(job), "--out", str(out),
            "--endpoint", server.base_url, "--calibrate", "20", "--yes"]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    stderr = result.stderr
    assert "calibration sample: 20 rows answered (20 sent now, 0 already" in stderr
    assert stderr.index("real cost") < stderr.index("done: 400 ok")
    assert server.stats.requests_total == 400
    assert max(server.stats.billed_by_body.values()) == 1
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) == 400 and all(row["status"] == "ok" for row in rows)

    # The same calibration on the finished run finds its sample already paid for.
    again = run_cli(args)
    assert again.exit_code == 0, again.output
    assert "(0 sent now, 20 already in the run directory)" in again.stderr
    assert server.stats.requests_total == 400
