"""Per-row settings: each row's model, reasoning effort, thoughts, stream, grounding, system and
extra_body reach the API (asserted from the bodies the emulator received); a bad value is that
row's error naming its column; columns the job does not read are listed by ``estimate`` and
given back by ``export --with-input``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.kit import by_id, fast_job, run_cli

from batchrun.core.errors import InputError
from batchrun.emulator.server import EmulatorServer
from batchrun.manifest.job import job_from_mapping

MIXED_ROWS: list[dict[str, Any]] = [
    {"id": "low-quiet", "prompt": "row low-quiet", "reasoning_effort": "low",
     "include_thoughts": False, "system": "Answer in French.", "google_search": True},
    {"id": "high-loud", "prompt": "row high-loud", "reasoning_effort": "high",
     "include_thoughts": True, "google_search": False},
    {"id": "defaults", "prompt": "row defaults", "tag": "kept"},
    {"id": "extreme", "prompt": "row extreme", "reasoning_effort": "extreme"},
    {"id": "preview", "prompt": "row preview", "model": "gemini-3.1-pro-preview",
     "stream": False, "extra_body": {"temperature": 0.2}},
    {"id": "text-flags", "prompt": "row text-flags", "include_thoughts": "false",
     "google_search": "true"},
]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _seen_by_prompt(server: EmulatorServer) -> dict[str, dict[str, Any]]:
    """The body the emulator received for each row, by the row's user message."""
    seen: dict[str, dict[str, Any]] = {}
    for body in server.stats.requests_seen:
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        seen[user] = body
    return seen


def _system_of(body: dict[str, Any]) -> str | None:
    return next((m["content"] for m in body["messages"] if m["role"] == "system"), None)


def test_each_row_sends_its_own_settings_and_a_bad_one_is_its_error(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(record_requests=True,
                           models=("gemini-3.1-pro", "gemini-3.1-pro-preview"))
    manifest = _write_jsonl(tmp_path / "rows.jsonl", MIXED_ROWS)
    job = fast_job(tmp_path, system="Be brief.", reasoning_effort="high",
                   include_thoughts=True, extra_body={"top_p": 0.9})
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--quiet"])
    assert result.exit_code == 1, result.output  # one row's error

    seen = _seen_by_prompt(server)
    assert set(seen) == {f"row {row['id']}" for row in MIXED_ROWS} - {"row extreme"}
    low = seen["row low-quiet"]
    assert low["reasoning_effort"] == "low" and low["include_thoughts"] is False
    assert _system_of(low) == "Answer in French."
    assert low["tools"] == [{"type": "function", "function": {"name": "googleSearch"}}]
    high = seen["row high-loud"]
    assert high["reasoning_effort"] == "high" and high["include_thoughts"] is True
    assert _system_of(high) == "Be brief." and "tools" not in high
    defaults = seen["row defaults"]
    assert defaults["model"] == "gemini-3.1-pro" and defaults["stream"] is True
    assert defaults["reasoning_effort"] == "high" and "tag" not in defaults
    preview = seen["row preview"]
    assert preview["model"] == "gemini-3.1-pro-preview" and preview["stream"] is False
    assert preview["temperature"] == 0.2 and preview["top_p"] == 0.9  # row's over the job's
    flags = seen["row text-flags"]
    assert flags["include_thoughts"] is False and "tools" in flags

    rows = by_id(out)
    bad = rows["extreme"]
    assert bad["status"] == "error" and bad["attempts"] == 0
    assert 'column reasoning_effort = "extreme"' in bad["error_message"]
    assert "low, high" in bad["error_message"]
    assert all(rows[key]["status"] == "ok" for key in rows if key != "extreme")
    assert rows["low-quiet"]["thoughts"] is None  # it asked for none
    assert rows["high-loud"]["thoughts"]
    assert "url_citation" in (rows["low-quiet"]["extra"] or "")
    assert rows["preview"]["content"]  # answered as JSON, as the row asked


def test_a_job_maps_its_own_column_names_in_a_parquet_manifest(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(record_requests=True)
    table = pa.table({
        "id": ["a", "b", "c"],
        "prompt": ["row a", "row b", "row c"],
        "effort": ["low", None, "high"],
        "instructions": ["Use bullet points.", None, None],
        "grounded": [True, False, None],
        "reasoning_effort": ["high", "high", "high"],  # not read: the job maps `effort`
        "turns": [None, None, json.dumps([{"role": "user", "content": "row c turn"}])],
    })
    manifest = tmp_path / "rows.parquet"
    pq.write_table(table, manifest)
    job = fast_job(tmp_path, columns={"reasoning_effort": "effort", "system": "instructions",
                                      "google_search": "grounded", "messages": "turns"})
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--quiet"])
    assert result.exit_code == 0, result.output
    seen = _seen_by_prompt(server)
    assert seen["row a"]["reasoning_effort"] == "low" and "tools" in seen["row a"]
    assert _system_of(seen["row a"]) == "Use bullet points."
    assert "reasoning_effort" not in seen["row b"] and "tools" not in seen["row b"]
    assert seen["row c turn"]["reasoning_effort"] == "high"  # a multi-turn row, mapped


def test_a_bad_mapped_column_names_that_column(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(record_requests=True)
    manifest = _write_jsonl(tmp_path / "rows.jsonl", [
        {"id": "ok", "prompt": "row ok", "grounded": "yes please"},
        {"id": "fine", "prompt": "row fine", "grounded": False}])
    job = fast_job(tmp_path, columns={"google_search": "grounded"})
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(job), "--out", str(out),
                      "--endpoint", server.base_url, "--quiet"])
    assert result.exit_code == 1, result.output
    rows = by_id(out)
    assert 'column grounded = "yes please": must be true or false' in rows["ok"]["error_message"]
    assert rows["fine"]["status"] == "ok"
    assert list(_seen_by_prompt(server)) == ["row fine"]


def test_estimate_lists_unused_columns_and_export_gives_them_back(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    manifest = _write_jsonl(tmp_path / "rows.jsonl", [
        {"id": "a", "prompt": "row a", "reasoning_efort": "low", "notes": "keep me"},
        {"id": "b", "prompt": "row b", "notes": "me too", "sytem": "typo"}])
    result = run_cli(["estimate", str(manifest), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["unused_columns"] == [
        {"name": "reasoning_efort", "did_you_mean": "reasoning_effort"},
        {"name": "notes", "did_you_mean": None},
        {"name": "sytem", "did_you_mean": "system"},
    ]
    text = run_cli(["estimate", str(manifest)]).output
    assert "reasoning_efort, notes, sytem" in text
    assert "column reasoning_efort is not used; did you mean reasoning_effort?" in text

    out = tmp_path / "run"
    run = run_cli(["run", str(manifest), "--out", str(out), "--endpoint", emulator.base_url,
                   "--quiet"])
    assert run.exit_code == 0, run.output
    target = tmp_path / "joined.jsonl"
    exported = run_cli(["export", str(out), "--output", str(target), "--with-input"])
    assert exported.exit_code == 0, exported.output
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["notes"] for line in lines] == ["keep me", "me too"]
    assert lines[0]["reasoning_efort"] == "low" and lines[1]["sytem"] == "typo"


@pytest.mark.parametrize("columns, message", [
    ({"reasoning_efort": "effort"}, "did you mean 'reasoning_effort'?"),
    ({"model": ""}, "columns: model must name a column"),
])
def test_a_bad_column_map_is_refused_when_the_job_loads(columns: dict[str, str],
                                                        message: str) -> None:
    with pytest.raises(InputError, match=message):
        job_from_mapping({"job": {"columns": columns}})


def test_the_shipped_per_row_job_sends_each_rows_settings(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(record_requests=True)
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "run"
    result = run_cli(["run", str(root / "sample_inputs/per_row.jsonl"), "--job",
                      str(root / "jobs/per_row_settings.toml"), "--out", str(out),
                      "--endpoint", server.base_url, "--quiet"])
    assert result.exit_code == 0, result.output
    seen = {body["messages"][-1]["content"][:12]: body for body in server.stats.requests_seen}
    assert seen["Prove that t"]["reasoning_effort"] == "high"
    assert seen["Prove that t"]["include_thoughts"] is True
    assert seen["How many moo"]["reasoning_effort"] == "low"
    assert "tools" in seen["What changed"] and "tools" not in seen["How many moo"]
    assert _system_of(seen["Write four l"]) == "You are a poet."
