"""Request bodies: exact fields per job setting, every row shape, media resolution."""

from __future__ import annotations

import base64
import copy
import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun.core.errors import MediaError, RowError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import iter_rows
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaResolver
from batchrun.request.body import body_sha256, build_body, encode_body, google_search_tool

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
# The API reference's shape of the tool.
SEARCH_TOOL = {"type": "function", "function": {"name": "googleSearch"}}


@pytest.fixture
def media(tmp_path: Path) -> MediaResolver:
    (tmp_path / "a.png").write_bytes(PNG)
    return MediaResolver(tmp_path)


def test_prompt_row_default_job() -> None:
    body = build_body(Row(id="1", line=1, prompt="Hi"), JobSpec(), None)
    assert body == {
        "model": "gemini-3.1-pro",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "include_thoughts": True,
    }
    assert list(body) == ["model", "messages", "stream", "include_thoughts"]


def test_every_job_field() -> None:
    job = JobSpec(model="gemini-x", stream=False, include_thoughts=False, reasoning_effort="low",
                  google_search=True, system="Be brief", extra_body={"temperature": 0.1})
    body = build_body(Row(id="1", line=1, prompt="Hi"), job, None)
    assert body == {
        "model": "gemini-x",
        "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
        "stream": False,
        "include_thoughts": False,
        "reasoning_effort": "low",
        "tools": [SEARCH_TOOL],
        "temperature": 0.1,
    }
    assert google_search_tool() == SEARCH_TOOL


def test_extra_body_is_merged_last_but_stream_stays_the_jobs() -> None:
    job = JobSpec(stream=True, reasoning_effort="high",
                  extra_body={"reasoning_effort": "low", "stream": False, "tools": []})
    body = build_body(Row(id="1", line=1, prompt="Hi"), job, None)
    assert body["reasoning_effort"] == "low" and body["tools"] == []
    assert body["stream"] is True


def test_row_system_beats_job_system() -> None:
    body = build_body(Row(id="1", line=1, prompt="Hi", system="Row S"), JobSpec(system="Job S"),
                      None)
    assert body["messages"][0] == {"role": "system", "content": "Row S"}


def test_prompt_with_media_parts(media: MediaResolver) -> None:
    row = Row(id="1", line=1, prompt="Describe", media=("a.png", "https://x/v.mp4"))
    body = build_body(row, JobSpec(), media)
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
        {"type": "image_url", "image_url": {"url": "https://x/v.mp4"}},
    ]}]


def test_media_only_prompt(media: MediaResolver) -> None:
    body = build_body(Row(id="1", line=1, prompt="", media=("a.png",)), JobSpec(), media)
    assert body["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": PNG_URL}}]


def test_messages_row_resolves_local_paths_only(media: MediaResolver) -> None:
    messages = (
        {"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": "a.png", "detail": "high"}},
            {"type": "image_url", "image_url": "https://x/b.jpg"},
        ]},
    )
    row = Row(id="1", line=1, messages=messages)
    before = copy.deepcopy(messages)
    body = build_body(row, JobSpec(system="Job S"), media)
    assert body["messages"] == [
        {"role": "system", "content": "Job S"},
        {"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://x/b.jpg"}},
        ]},
    ]
    assert row.messages == before  # the row is never mutated


def test_messages_row_keeps_its_own_system() -> None:
    messages = ({"role": "system", "content": "Mine"}, {"role": "user", "content": "Hi"})
    body = build_body(Row(id="1", line=1, messages=messages), JobSpec(system="Job S"), None)
    assert body["messages"] == list(messages)


def test_batch_body_taken_as_written() -> None:
    source: dict[str, Any] = {"model": "other-model",
                              "messages": [{"role": "user", "content": "Hi"}],
              "include_thoughts": False, "stream": False, "temperature": 0}
    row = Row(id="b", line=1, messages=tuple(source["messages"]), body=source)
    job = JobSpec(stream=True, reasoning_effort="low", google_search=True, system="ignored")
    body = build_body(row, job, None)
    # But the model and stream are the job's: one model per run (what was estimated and priced).
    assert body == {"model": "gemini-3.1-pro", "messages": [{"role": "user", "content": "Hi"}],
                    "include_thoughts": False, "stream": True, "temperature": 0,
                    "reasoning_effort": "low", "tools": [SEARCH_TOOL]}
    assert source["stream"] is False  # the row's body is untouched


def test_batch_body_gets_what_it_lacks(media: MediaResolver) -> None:
    source = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "a.png"}}]}], "tools": [SEARCH_TOOL]}
    row = Row(id="b", line=1, body=source)
    body = build_body(row, JobSpec(google_search=True, stream=False), media)
    assert body["model"] == "gemini-3.1-pro"
    assert body["stream"] is False and body["include_thoughts"] is True
    assert "reasoning_effort" not in body
    assert body["tools"] == [SEARCH_TOOL]  # not added twice
    assert body["messages"][0]["content"][0]["image_url"]["url"] == PNG_URL


def test_error_row_raises_row_error() -> None:
    with pytest.raises(RowError, match="line 4: prompt must be a string"):
        build_body(Row(id="x", line=4, error="line 4: prompt must be a string, not integer"),
                   JobSpec(), None)
    with pytest.raises(RowError, match="has no messages, prompt or body"):
        build_body(Row(id="x", line=4), JobSpec(), None)


def test_media_errors_propagate(media: MediaResolver) -> None:
    with pytest.raises(MediaError, match="'missing.png' not found"):
        build_body(Row(id="1", line=1, prompt="x", media=("missing.png",)), JobSpec(), media)
    with pytest.raises(MediaError, match="no media root is set"):
        build_body(Row(id="1", line=1, prompt="x", media=("a.png",)), JobSpec(), None)
    # URLs need no resolver.
    body = build_body(Row(id="1", line=1, prompt="x", media=("https://a/b.png",)), JobSpec(), None)
    assert body["messages"][0]["content"][1]["image_url"]["url"] == "https://a/b.png"


def test_encode_and_hash() -> None:
    body = build_body(Row(id="1", line=1, prompt="Hi é"), JobSpec(reasoning_effort="low"), None)
    data = encode_body(body)
    assert data == (b'{"model":"gemini-3.1-pro",'
                    b'"messages":[{"role":"user","content":"Hi \xc3\xa9"}],'
                    b'"stream":true,"include_thoughts":true,"reasoning_effort":"low"}')
    assert orjson.loads(data) == body
    assert body_sha256(data) == hashlib.sha256(data).hexdigest()
    again = encode_body(build_body(Row(id="1", line=1, prompt="Hi é"),
                                   JobSpec(reasoning_effort="low"), None))
    assert body_sha256(again) == body_sha256(data)


def test_unencodable_body_is_a_row_error() -> None:
    body: dict[str, Any] = build_body(Row(id="1", line=1, prompt="x"),
                                      JobSpec(extra_body={"bad": {1, 2}}), None)
    with pytest.raises(RowError, match="cannot be encoded as JSON"):
        encode_body(body)


def test_manifest_to_bodies_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(PNG)
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\n".join([
        orjson.dumps({"id": 1, "title": "Cat", "pic": "img/a.png"}),
        orjson.dumps({"id": 2, "title": "Dog", "pic": "../etc/passwd"}),
        orjson.dumps({"id": 3}),
    ]) + b"\n")
    job = JobSpec(prompt_template="Describe the {title}", media_columns=("pic",))
    resolver = MediaResolver(tmp_path)
    outcomes: list[str] = []
    for row in iter_rows(manifest, job):
        try:
            body = build_body(row, job, resolver)
        except RowError as exc:
            outcomes.append(f"{row.id}: {type(exc).__name__}: {exc.message}")
        else:
            outcomes.append(f"{row.id}: ok {body['messages'][0]['content'][0]['text']}")
    assert outcomes[0] == "1: ok Describe the Cat"
    assert outcomes[1].startswith("2: MediaError: media '../etc/passwd' resolves outside")
    assert outcomes[2] == ("3: RowError: line 3: prompt_template needs column 'title', "
                           "which this row lacks")
