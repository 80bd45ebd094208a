"""Cost truth: a reported ``credits_consumed`` of 0.0 stays 0.0 everywhere (live progress,
status, the run's totals, the report); a model batchrun cannot price is refused by
``estimate`` and ``run`` (exit 2, naming the model and the job field to set) unless the job
gives its price; the catalog names every model it prices."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from support.kit import by_id, fast_job, run_cli, write_manifest

from batchrun.cost.catalog import CATALOG, UnknownModel, price_for, priced_models
from batchrun.emulator.server import EmulatorServer


def test_a_reported_zero_stays_zero_everywhere(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    # credits_rounding=0: the gateway rounds every answer's credits_consumed to 0.0.
    server = make_emulator(credits_rounding=0, latency_ms=150)
    manifest = write_manifest(tmp_path / "rows.jsonl", 24)
    out = tmp_path / "run"
    job = fast_job(tmp_path, concurrency=4)
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out), "--endpoint",
                      server.base_url, "--progress-every", "0.2", "--json"])
    assert result.exit_code == 0, result.output
    rows = by_id(out)
    assert all(row["credits"] == 0.0 and row["credits_computed"] > 0 for row in rows.values())
    assert all(row["cost_usd"] == 0.0 for row in rows.values())
    progress = re.findall(r"rows (\d+)/24 .*? ([\d.]+) credits", result.output)
    assert any(int(done) > 0 for done, _ in progress), result.output
    assert all(float(credits) == 0.0 for _, credits in progress), progress
    assert json.loads(result.stdout)["credits"] == 0.0
    status = json.loads(run_cli(["status", str(out), "--json"]).stdout)
    assert status["credits"] == 0.0 and status["usd"] == 0.0
    report = tmp_path / "report.html"
    assert run_cli(["report", str(out), "--output", str(report)]).exit_code == 0
    costliest = report.read_text().split("<h2>Costliest rows</h2>", 1)[1]
    assert "<td>row-" not in costliest  # nothing cost anything: no row is listed as costly


@pytest.mark.parametrize("command", ["estimate", "run"])
def test_an_unknown_model_without_a_price_is_refused(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer], command: str
) -> None:
    server = make_emulator(models=("acme-large",))
    manifest = write_manifest(tmp_path / "rows.jsonl", 3)
    job = fast_job(tmp_path, model="acme-large")
    args = [command, str(manifest), "--job", str(job)]
    if command == "run":
        args += ["--out", str(tmp_path / "run"), "--endpoint", server.base_url]
    result = run_cli(args)
    assert result.exit_code == 2, result.output
    assert "'acme-large' has no known price" in result.output
    assert "price = {input = …, output = …}" in result.output
    assert server.stats.requests_total == 0 and not (tmp_path / "run").exists()


def test_an_unknown_model_with_the_jobs_price_is_priced_by_it(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(models=("acme-large",))
    manifest = write_manifest(tmp_path / "rows.jsonl", 3)
    job = fast_job(tmp_path, model="acme-large", price={"input": 1000, "output": 2000})
    estimate = run_cli(["estimate", str(manifest), "--job", str(job), "--json"])
    assert estimate.exit_code == 0, estimate.output
    data = json.loads(estimate.stdout)
    expected = (data["prompt_tokens"] * 1000 + data["output_tokens"]["expected"] * 2000) / 1e6
    assert data["credits"]["expected"] == pytest.approx(expected, rel=1e-6)
    out = tmp_path / "run"
    run = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out), "--endpoint",
                   server.base_url, "--quiet"])
    assert run.exit_code == 0, run.output
    for row in by_id(out).values():
        assert row["credits_computed"] == pytest.approx(
            (row["prompt_tokens"] * 1000 + row["completion_tokens"] * 2000) / 1e6)


def test_a_row_naming_an_unpriced_model_is_that_rows_error(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text('{"id": "a", "prompt": "x", "model": "acme-large"}\n'
                        '{"id": "b", "prompt": "y"}\n')
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--out", str(out), "--endpoint",
                      emulator.base_url, "--quiet"])
    assert result.exit_code == 1, result.output
    rows = by_id(out)
    assert "column model = 'acme-large'" in rows["a"]["error_message"]
    assert "no price" in rows["a"]["error_message"] and rows["b"]["status"] == "ok"
    assert emulator.stats.requests_total == 1


def test_the_catalog_names_every_model_it_prices() -> None:
    assert priced_models() == tuple(sorted(CATALOG))
    for name in priced_models():
        assert price_for(name) is CATALOG[name].price
    with pytest.raises(UnknownModel, match="catalog prices gemini-3.1-pro"):
        price_for("acme-large")
