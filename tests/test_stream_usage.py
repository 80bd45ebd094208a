"""Usage on streams: a job asks for it (stream_options.include_usage) by its stream_usage
field — "ask", "never", or "auto" (ask unless it is the gateway's API: its host, or its model
served anywhere) — proven against the emulator in its strict mode, which sends usage on a
stream only when asked (as OpenAI and vLLM do)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.kit import by_id, fast_job, run_cli, write_manifest

from batchrun.emulator.server import EmulatorServer
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row
from batchrun.request.body import build_body

# A model the gateway does not serve (vLLM's, say), with the job's own price.
OTHER_MODEL = {"model": "llama-3.3-70b", "price": {"input": 100, "output": 300}}


@pytest.mark.parametrize("stream_usage, model, asked", [
    ("ask", {}, True), ("auto", OTHER_MODEL, True), ("ask", OTHER_MODEL, True)])
def test_a_strict_endpoint_sends_usage_when_asked(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer], stream_usage: str,
    model: dict[str, Any], asked: bool,
) -> None:
    server = make_emulator(strict_stream_usage=True, record_requests=True,
                           models=(model.get("model", "gemini-3.1-pro"),))
    manifest = write_manifest(tmp_path / "rows.jsonl", 6)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(fast_job(tmp_path,
                      stream_usage=stream_usage, **model)), "--out", str(out), "--endpoint",
                      server.base_url, "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    assert all(body["stream_options"] == {"include_usage": True}
               for body in server.stats.requests_seen) is asked
    rows = by_id(out).values()
    assert all(row["prompt_tokens"] and row["error_code"] is None for row in rows)
    assert json.loads(result.stdout)["rows_missing_usage"] == 0


@pytest.mark.parametrize("stream_usage", ["never", "auto"])
def test_not_asking_a_strict_endpoint_leaves_the_cost_unknown_and_says_so(
    tmp_path: Path, make_emulator: Callable[..., EmulatorServer], stream_usage: str
) -> None:
    # "auto" does not ask the gateway's model at another address (the gateway's API
    # reference lists no stream_options): a server of it that wants asking is told by "ask".
    server = make_emulator(strict_stream_usage=True, record_requests=True)
    manifest = write_manifest(tmp_path / "rows.jsonl", 4)
    out = tmp_path / "run"
    result = run_cli(["run", str(manifest), "--job", str(fast_job(tmp_path,
                      stream_usage=stream_usage)), "--out", str(out), "--endpoint",
                      server.base_url, "--quiet"])
    assert result.exit_code == 0, result.output
    assert not any("stream_options" in body for body in server.stats.requests_seen)
    rows = by_id(out).values()
    assert all(row["status"] == "ok" and row["error_code"] == "missing_usage"
               and row["prompt_tokens"] is None for row in rows)
    assert "4 answers came without usage" in result.output
    assert 'stream_usage = "ask"' in " ".join(result.output.split())


def test_the_gateway_is_not_asked_by_default_and_json_answers_never_are() -> None:
    row = Row(id="r", line=1, prompt="hi")
    gateway = JobSpec(endpoint="https://api.aivideoapi.ai/v1")
    assert "stream_options" not in build_body(row, gateway, None)
    other = JobSpec(endpoint="https://api.openai.com/v1", model="gpt-4o-mini")
    assert build_body(row, other, None)["stream_options"] == {"include_usage": True}
    # The gateway's model anywhere else (a mirror, a proxy, a local copy): the reference's
    # fields only, whatever its version or path prefix.
    for model in ("gemini-3.1-pro", "gemini-3.1-pro-preview", "models/Gemini-3.1-Pro"):
        assert "stream_options" not in build_body(
            row, JobSpec(endpoint="http://127.0.0.1:8000/v1", model=model), None)
    assert "stream_options" not in build_body(row, JobSpec(endpoint="https://x/v1",
                                                           model="gpt-4o-mini",
                                                           stream=False), None)
    kept = JobSpec(endpoint="https://x/v1", model="gpt-4o-mini",
                   extra_body={"stream_options": {"chunk": 1}})
    assert build_body(row, kept, None)["stream_options"] == {"chunk": 1, "include_usage": True}
    asked = JobSpec(endpoint="https://api.aivideoapi.ai/v1", stream_usage="ask")
    assert "stream_options" in build_body(row, asked, None)
