"""Job spec loading and the pure estimator."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.core.errors import InputError
from batchrun.cost.catalog import CATALOG, IMAGE_TOKENS, PDF_PAGE_TOKENS
from batchrun.cost.estimate import Tally, assumed_estimate
from batchrun.cost.tokens import (
    media_kind,
    media_tokens,
    messages_estimate,
    row_estimate,
    text_tokens,
)
from batchrun.emulator.model import parse_chat_request
from batchrun.manifest.job import DEFAULT_ENDPOINT, JobSpec, load_job
from batchrun.manifest.reader import iter_rows
from batchrun.plan.preflight import estimate_of
from batchrun.request.body import build_body, encode_body


def test_job_file_fields_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "j.toml"
    path.write_text(
        '[job]\nmodel = "gemini-3.1-pro"\nreasoning_effort = "low"\nconcurrency = 4\n'
        'media_columns = ["scan"]\n[job.pricing]\ninput_credits_per_m = 1\n'
        "output_credits_per_m = 2\n"
    )
    spec = load_job(path)
    assert spec.reasoning_effort == "low" and spec.concurrency == 4
    assert spec.media_columns == ("scan",)
    assert spec.price is not None and spec.price.credits(1_000_000, 1_000_000) == 3
    assert spec.with_overrides(concurrency=9, rpm=None).concurrency == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[job]\nmodle = "x"\n', "unknown job field"),
        ('[job]\nreasoning_effort = "medium"\n', "reasoning_effort"),
        ("[job\n", "not valid TOML"),
        ("[job]\nconcurrency = 0\n", "concurrency"),
    ],
)
def test_bad_job_files_are_input_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "j.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_job(path)


def test_endpoint_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHRUN_ENDPOINT", raising=False)
    assert JobSpec().resolved_endpoint() == DEFAULT_ENDPOINT
    monkeypatch.setenv("BATCHRUN_ENDPOINT", "http://127.0.0.1:9/v1/")
    assert JobSpec().resolved_endpoint() == "http://127.0.0.1:9/v1"
    assert JobSpec(endpoint="http://x/v1").resolved_endpoint() == "http://x/v1"


def test_text_tokens_by_script() -> None:
    assert text_tokens("a" * 400) == 100
    assert text_tokens("长城" * 50) == 100  # about one token per CJK character
    assert text_tokens("") == 0


def test_media_kinds_and_tokens() -> None:
    assert media_kind("scan.PDF") == "pdf"
    assert media_kind("https://x/y/clip.mp4?sig=1") == "video"
    assert media_kind("data:audio/wav;base64,AAAA") == "audio"
    assert media_tokens("image") == IMAGE_TOKENS
    assert media_tokens("pdf", pages=3) == 3 * PDF_PAGE_TOKENS
    assert media_tokens("audio", seconds=10) == 250
    assert media_tokens("video", seconds=10) == 950


def test_run_estimate_bands_follow_the_formula() -> None:
    price = CATALOG["gemini-3.1-pro"].price
    tally = Tally()
    row = row_estimate(None, "x" * 4000, None, ["photo.png"])
    tally.add(row)
    tally.add_unsendable("bad", 2, "line 2: not valid JSON")
    estimate = assumed_estimate(tally, 500, price)
    assert estimate.rows == 2 and estimate.rows_unsendable == 1
    assert row.kind == "image" and row.prompt_tokens > 1000 + IMAGE_TOKENS
    assert estimate.credits.expected == pytest.approx(price.credits(row.prompt_tokens, 500))
    assert estimate.credits.low < estimate.credits.expected < estimate.credits.high
    assert estimate.usd.expected == pytest.approx(estimate.credits.expected * 0.005)
    data = estimate.as_dict()
    assert set(data["by_kind"]) == {"text", "image", "pdf", "audio", "video"}
    assert data["by_kind"]["image"]["rows"] == 1 and data["by_kind"]["text"]["rows"] == 0
    assert data["unsendable"] == [{"id": "bad", "line": 2, "reason": "line 2: not valid JSON"}]
    assert set(data["credits"]) == {"low", "expected", "high"}


def test_text_fast_path_matches_the_messages_path() -> None:
    for prompt, system in [("hello world", None), ("长城 and more", "be brief"), ("", "sys")]:
        built = [{"role": "system", "content": system}] if system else []
        built.append({"role": "user", "content": [{"type": "text", "text": prompt}]})
        assert row_estimate(None, prompt, system, ()) == messages_estimate(built)


def _reference_text_tokens(text: str) -> int:
    """The rule spelled out one character at a time (what the regexes must count)."""
    latin = cjk = other = 0
    for char in text:
        code = ord(char)
        if code < 0x250:
            latin += 1
        elif (0x3040 <= code <= 0x30FF or 0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF
              or 0xAC00 <= code <= 0xD7AF or 0xF900 <= code <= 0xFAFF
              or 0x20000 <= code <= 0x2FA1F):
            cjk += 1
        else:
            other += 1
    return math.ceil(latin / 4 + cjk + other / 2)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
       | st.text(alphabet="aé长城カ한Ω\U00020001ж ", max_size=200))
def test_text_tokens_counts_scripts_as_the_rule_says(text: str) -> None:
    assert text_tokens(text) == _reference_text_tokens(text)


def test_the_estimate_counts_what_the_request_builder_sends(tmp_path: Path) -> None:
    """Same tokenisation as the estimator (the emulator at 4 chars per token, ASCII text):
    every row shape, with the job's system prompt, estimates exactly what is sent."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"id": "p", "prompt": "Explain tides in plain words."}\n'
        '{"id": "ps", "prompt": "Hi", "system": "Own system prompt."}\n'
        '{"id": "m", "messages": [{"role": "user", "content": [{"type": "text", '
        '"text": "Classify: the train was late."}]}]}\n'
        '{"id": "ms", "messages": [{"role": "system", "content": "Mine."}, '
        '{"role": "user", "content": "Go."}]}\n'
        '{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": '
        '{"model": "gemini-3.1-pro", "messages": [{"role": "user", "content": "Batch."}]}}\n'
    )
    job = JobSpec(system="You are a concise assistant.")
    for row in iter_rows(manifest, job):
        body = encode_body(build_body(row, job, None))
        assert estimate_of(row, job).prompt_tokens == parse_chat_request(body).prompt_tokens, row.id
