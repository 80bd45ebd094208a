"""``status --json`` and ``export`` on finished, interrupted and failed runs (real emulator)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from batchrun.cli import cli
from batchrun.core.result import RESULTS_SCHEMA
from batchrun.cost.catalog import USD_PER_CREDIT
from batchrun.emulator.server import EmulatorServer

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-status-test-0123456789"
STATUS_KEYS = {"rows_total", "rows_ok", "rows_failed", "rows_pending", "errors_by_code",
               "prompt_tokens", "completion_tokens", "reasoning_tokens", "credits", "usd",
               "resume_command"}
BATCH_KEYS = {"id", "custom_id", "response", "error"}


def cli_run(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, env={"BATCHRUN_API_KEY": KEY}, catch_exceptions=False)


def status_of(out: Path) -> dict[str, Any]:
    result = cli_run(["status", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    assert set(data) >= STATUS_KEYS
    return data


def export(out: Path, target: Path, *flags: str) -> list[dict[str, Any]]:
    result = cli_run(["export", str(out), "--output", str(target), *flags])
    assert result.exit_code == 0, result.output
    if target.suffix == ".parquet":
        rows: list[dict[str, Any]] = pq.read_table(target).to_pylist()
        return rows
    return [orjson.loads(line) for line in target.read_bytes().splitlines()]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def job(tmp_path: Path, **fields: Any) -> Path:
    lines = ["[job]"] + [f"{name} = {json.dumps(value)}" for name, value in fields.items()]
    path = tmp_path / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_finished_run_status_and_every_export_shape(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_rows(tmp_path / "m.jsonl", [
        {"id": f"r{n}", "prompt": f"Question {n}?", "topic": ["sky", "sea"][n % 2], "n": n,
         "content": f"input text {n}", "meta": {"k": n}}
        for n in range(40)
    ])
    out = tmp_path / "run"
    ran = cli_run(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                   "--concurrency", "8", "--quiet"])
    assert ran.exit_code == 0, ran.output

    status = status_of(out)
    assert (status["rows_total"], status["rows_ok"], status["rows_failed"],
            status["rows_pending"]) == (40, 40, 0, 0)
    assert status["errors_by_code"] == {} and status["resume_command"] is None
    assert status["credits"] == pytest.approx(emulator.stats.credits_billed)
    assert status["usd"] == pytest.approx(status["credits"] * USD_PER_CREDIT)
    assert status["reasoning_tokens"] > 0 and status["completion_tokens"] > 0
    assert status["estimate_left"]["rows"] == 0 and not status["running"]
    assert status["results_current"] is True

    parquet_rows = export(out, tmp_path / "x.parquet")
    assert [row["id"] for row in parquet_rows] == [f"r{n}" for n in range(40)]  # manifest order
    assert pq.read_schema(tmp_path / "x.parquet").remove_metadata() == RESULTS_SCHEMA

    jsonl_rows = export(out, tmp_path / "x.jsonl")
    assert [row["id"] for row in jsonl_rows] == [row["id"] for row in parquet_rows]
    assert jsonl_rows[0]["content"] == parquet_rows[0]["content"]
    assert jsonl_rows[0]["finished_at"].endswith("+00:00")

    batch = export(out, tmp_path / "batch.jsonl", "--format", "openai-batch")
    assert all(set(line) == BATCH_KEYS and line["error"] is None for line in batch)
    first, row = batch[0], parquet_rows[0]
    assert first["custom_id"] == "r0" and first["id"].startswith("batch_req_")
    assert first["response"]["status_code"] == 200
    body = first["response"]["body"]
    assert body["object"] == "chat.completion" and body["id"] == row["response_id"]
    assert body["choices"][0]["message"]["content"] == row["content"]
    assert body["choices"][0]["finish_reason"] == row["finish_reason"]
    assert body["usage"]["prompt_tokens"] == row["prompt_tokens"]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == (
        row["reasoning_tokens"])
    assert body["credits_consumed"] == row["credits"]
    assert len({line["id"] for line in batch}) == 40

    joined = export(out, tmp_path / "joined.jsonl", "--with-input")
    assert joined[3]["topic"] == "sea" and joined[3]["n"] == 3 and joined[3]["meta"] == {"k": 3}
    assert joined[3]["input_content"] == "input text 3"  # renamed: results have `content`
    assert joined[3]["content"] == parquet_rows[3]["content"]
    joined_parquet = export(out, tmp_path / "joined.parquet", "--with-input")
    schema = pq.read_schema(tmp_path / "joined.parquet")
    assert schema.field("n").type == pa.int64() and schema.field("topic").type == pa.string()
    assert json.loads(joined_parquet[5]["meta"]) == {"k": 5}  # nested values as JSON text
    assert joined_parquet[5]["prompt"] == "Question 5?"

    refused = cli_run(["export", str(out), "--output", str(tmp_path / "b.parquet"),
                       "--format", "openai-batch"])
    assert refused.exit_code == 2 and "jsonl" in refused.output


def test_export_and_report_make_the_output_folder_or_say_why_they_cannot(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = write_rows(tmp_path / "m.jsonl", [{"id": f"r{n}", "prompt": f"Q{n}?"}
                                                 for n in range(5)])
    out = tmp_path / "run"
    ran = cli_run(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                   "--quiet"])
    assert ran.exit_code == 0, ran.output
    # A folder that is not there yet is made, for every kind of output.
    for name in ("x.parquet", "x.jsonl"):
        assert len(export(out, tmp_path / "new" / "deeper" / name)) == 5
    report = cli_run(["report", str(out), "--output", str(tmp_path / "pages" / "r.html")])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "pages" / "r.html").read_text().startswith("<!doctype html>")
    # One that cannot be made (a file stands in its way) is bad input: one line, exit 2.
    (tmp_path / "taken").write_text("a file, not a folder")
    for command in (["export", str(out), "--output", str(tmp_path / "taken" / "x.jsonl")],
                    ["report", str(out), "--output", str(tmp_path / "taken" / "r.html")]):
        refused = CliRunner().invoke(cli, command)
        assert refused.exit_code == 2, refused.output
        assert f"cannot write {tmp_path / 'taken'}" in refused.output
        assert "Traceback" not in refused.output
        assert isinstance(refused.exception, SystemExit)  # a clean exit, not a crash
    assert not list(tmp_path.glob("new/deeper/*.tmp"))


def test_with_input_from_a_parquet_manifest_keeps_its_types(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({
        "custom_id": [f"p{n}" for n in range(6)],
        "prompt": [f"Question {n}?" for n in range(6)],
        "score": pa.array([n / 2 for n in range(6)], pa.float32()),
        "tags": [["a", str(n)] for n in range(6)],
    }), manifest)
    out = tmp_path / "run"
    assert cli_run(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                    "--quiet"]).exit_code == 0
    rows = export(out, tmp_path / "j.parquet", "--with-input")
    schema = pq.read_schema(tmp_path / "j.parquet")
    assert "custom_id" not in schema.names  # the id column is the results' `id`
    assert schema.field("score").type == pa.float32()
    assert schema.field("tags").type == pa.list_(pa.string())
    assert [(row["id"], row["tags"]) for row in rows[:2]] == [("p0", ["a", "0"]),
                                                              ("p1", ["a", "1"])]


def test_killed_run_status_reads_the_journal_and_export_compacts_it(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=50)
    manifest = write_rows(tmp_path / "m.jsonl",
                          [{"id": f"r{n}", "prompt": f"Question {n}?"} for n in range(400)])
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "batchrun.cli", "run", str(manifest), "--out", str(out),
         "--endpoint", server.base_url, "--concurrency", "8", "--quiet"],
        cwd=REPO, env={**os.environ, "BATCHRUN_API_KEY": KEY}, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while server.stats.billed_requests < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()
    process.wait()

    status = status_of(out)
    journal = [orjson.loads(line) for line in (out / "journal.jsonl").read_bytes().splitlines()
               if line.endswith(b"}")]
    assert status["rows_ok"] == len({r["id"] for r in journal if r["status"] == "ok"}) >= 30
    assert status["rows_pending"] == 400 - status["rows_ok"] - status["rows_failed"] > 0
    assert status["results_current"] is False and status["running"] is False
    assert f"--out {out}" in status["resume_command"]
    assert f"--endpoint {server.base_url}" in status["resume_command"]
    assert KEY not in json.dumps(status)
    left = status["estimate_left"]
    assert left["rows"] == left["from_manifest"]["rows"] == status["rows_pending"]
    assert left["credits_observed"] == pytest.approx(
        status["credits"] / status["rows_ok"] * status["rows_pending"], rel=1e-6)

    rows = export(out, tmp_path / "partial.jsonl")
    assert len(rows) == status["rows_ok"] + status["rows_failed"]
    assert pq.read_table(out / "results.parquet").num_rows == len(rows)
    assert status_of(out)["results_current"] is True

    human = cli_run(["status", str(out)])
    assert "pending" in human.output and "resume: batchrun run" in human.output


def test_failed_run_status_export_and_what_a_resume_sends_again(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(fail_503=1.0)
    manifest = write_rows(tmp_path / "m.jsonl", [
        *({"id": f"r{n}", "prompt": f"Question {n}?"} for n in range(6)),
        {"id": "pic", "prompt": "Describe", "media": ["missing.png"]},
    ])
    out = tmp_path / "run"
    args = ["run", str(manifest), "--out", str(out), "--endpoint", server.base_url,
            "--job", str(job(tmp_path, max_attempts=2, max_retry_wait_s=0.01)), "--quiet"]
    assert cli_run(args).exit_code == 1

    status = status_of(out)
    assert (status["rows_ok"], status["rows_failed"], status["rows_pending"]) == (0, 7, 0)
    assert status["rows_retryable"] == 6
    media_code = next(code for code in status["errors_by_code"] if code != "upstream_error")
    assert status["errors_by_code"]["upstream_error"] == 6
    assert status["credits"] == 0 and status["estimate_left"]["rows"] == 6
    assert status["resume_command"] and "--job" in status["resume_command"]

    batch = {line["custom_id"]: line for line in
             export(out, tmp_path / "b.jsonl", "--format", "openai-batch")}
    assert batch["r0"]["response"]["status_code"] == 503 and batch["r0"]["error"] is None
    assert batch["r0"]["response"]["body"]["error"]["code"] == "upstream_error"
    assert batch["pic"]["response"] is None
    assert batch["pic"]["error"]["code"] == media_code and batch["pic"]["error"]["message"]

    server.config.fail_503 = 0.0
    sent_before = server.stats.requests_total
    assert cli_run(args).exit_code == 1  # retryable rows resent, the media row is not
    assert server.stats.billed_requests == 6
    status = status_of(out)
    assert (status["rows_ok"], status["rows_failed"], status["rows_retryable"]) == (6, 1, 0)
    assert status["errors_by_code"] == {media_code: 1}
    assert server.stats.requests_total - sent_before == 6
    again = cli_run([*args, "--retry-failed"])
    assert again.exit_code == 1  # the media row is built again, fails again, nothing is sent
    assert server.stats.requests_total - sent_before == 6
    assert status_of(out)["rows_ok"] == 6
    assert (out / "journal.jsonl").read_bytes().count(b'"id":"pic"') == 2


def test_the_resume_command_names_absolute_paths_so_it_runs_from_anywhere(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run started with relative paths, stopped by the API's 402 when the balance ran out.
    server = make_emulator(balance=0.6)
    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path / "m.jsonl", [{"id": f"r{n}", "prompt": f"Question {n}?"}
                                      for n in range(12)])
    job(tmp_path, concurrency=1, max_retry_wait_s=0.2)
    stopped = cli_run(["run", "m.jsonl", "--job", "job.toml", "--out", "run",
                       "--endpoint", server.base_url, "--yes"])
    assert stopped.exit_code == 3, stopped.output
    monkeypatch.chdir(REPO)  # status asked from somewhere else
    command = status_of(tmp_path / "run")["resume_command"]
    assert f"{tmp_path / 'm.jsonl'} --out {tmp_path / 'run'} --job {tmp_path / 'job.toml'}" in (
        command)

    server.config.balance = 1_000.0
    resumed = subprocess.run([sys.executable, "-m", "batchrun.cli", *shlex.split(command)[1:]],
                             cwd=REPO, env={**os.environ, "BATCHRUN_API_KEY": KEY},
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert status_of(tmp_path / "run")["rows_ok"] == 12
