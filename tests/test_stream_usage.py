"""Usage on streams: a job asks for it (stream_options.include_usage) by its stream_usage
field — "ask", "never", or "auto" (ask unless the endpoint is the gateway's) — proven against
the emulator in its strict mode, which sends usage on a stream only when asked (as OpenAI and
vLLM do)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support.kit import by_id, fast_job, run_cli, write_manifest

from batchrun.emulator.server import EmulatorServer
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row
from batchrun.request.body import build_body


@pytest.mark.parametrize("stream_usage, asked", [("ask", True), ("auto", True)])
def test_a_strict_endpoint_sends_usage_when_asked(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer], stream_usage: str,
    asked: bool,
) -> None:
    server = make_emulator(strict_stream_usage=True, record_requests=True)
    manifest = write_manifest(tmp_path / "rows.jsonl", 6)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(fast_job(tmp_path,
                      stream_usage=stream_usage)), "--out", str(out), "--endpoint",
                      server.base_url, "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    assert all(body["stream_options"] == {"include_usage": True}
               for body in server.stats.requests_seen) is asked
    rows = by_id(out).values()
    assert all(row["prompt_tokens"] and row["error_code"] is None for row in rows)
    assert json.loads(result.stdout)["rows_missing_usage"] == 0


def test_not_asking_a_strict_endpoint_leaves_the_cost_unknown_and_says_so(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(strict_stream_usage=True, record_requests=True)
    manifest = write_manifest(tmp_path / "rows.jsonl", 4)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(fast_job(tmp_path,
                      stream_usage="never")), "--out", str(out), "--endpoint",
                      server.base_url, "--quiet"])
    assert result.exit_code == 0, result.output
    assert not any("stream_options" in body for body in server.stats.requests_seen)
    rows = by_id(out).values()
    assert all(row["status"] == "ok" and row["error_code"] == "missing_usage"
               and row["prompt_tokens"] is None for row in rows)
    assert "4 answers came without usage" in result.output


def test_the_gateway_is_not_asked_by_default_and_json_answers_never_are() -> None:
    row = Row(id="r", line=1, prompt="hi")
    gateway = JobSpec(endpoint="https://api.aivideoapi.ai/v1")
    assert "stream_options" not in build_body(row, gateway, None)
    other = JobSpec(endpoint="https://api.openai.com/v1")
    assert build_body(row, other, None)["stream_options"] == {"include_usage": True}
    assert "stream_options" not in build_body(row, JobSpec(endpoint="https://x/v1",
                                                           stream=False), None)
    kept = JobSpec(endpoint="https://x/v1", extra_body={"stream_options": {"chunk": 1}})
    assert build_body(row, kept, None)["stream_options"] == {"chunk": 1, "include_usage": True}
    asked = JobSpec(endpoint="https://api.aivideoapi.ai/v1", stream_usage="ask")
    assert "stream_options" in build_body(row, asked, None)
