"""A job's own price: ``price = { input = …, output = … }`` (credits per 1M tokens) works end to
end, in ``estimate`` and in ``run``, as ``[job.pricing]`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.kit import by_id, fast_job, run_cli, write_manifest

from batchrun.emulator.server import EmulatorServer

INPUT, OUTPUT = 1000.0, 2000.0  # credits per 1M tokens: far from the catalog's 160 / 960


def test_estimate_prices_the_rows_with_the_jobs_price(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 5)
    job = fast_job(tmp_path, price={"input": INPUT, "output": OUTPUT})
    result = run_cli(["estimate", str(manifest), "--job", str(job), "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    expected = (found["prompt_tokens"] * INPUT
                + found["output_tokens"]["expected"] * OUTPUT) / 1_000_000
    assert found["credits"]["expected"] == pytest.approx(expected, rel=1e-6)


def test_run_computes_each_rows_credits_with_the_jobs_price(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 5)
    job = fast_job(tmp_path, price={"input": INPUT, "output": OUTPUT, "usd_per_credit": 0.01})
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", emulator.base_url, "--max-credits", "2000"])
    assert result.exit_code == 0, result.output
    for row in by_id(out).values():
        computed = (row["prompt_tokens"] * INPUT + row["completion_tokens"] * OUTPUT) / 1e6
        assert row["credits_computed"] == pytest.approx(computed)
        assert row["cost_usd"] == pytest.approx(row["credits"] * 0.01)
    status = run_cli(["status", str(out), "--json"])
    assert status.exit_code == 0, status.output


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"input": 1}, "lacks output"),
        ({"input": 1, "output": 2, "cached": 3}, "unknown key(s) cached"),
        ({"input": "cheap", "output": 2}, "price.input must be a number"),
    ],
)
def test_a_wrong_price_table_is_an_input_error(tmp_path: Path, table: dict[str, object],
                                               message: str) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", 1)
    job = fast_job(tmp_path, price=table)
    result = run_cli(["estimate", str(manifest), "--job", str(job)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
