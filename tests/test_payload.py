"""Bodies prepared with media unread, then streamed: same bytes as the simple path, exact size."""

from __future__ import annotations

import hashlib
import os
import wave
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.media import make_media

from batchrun.api.client import ApiClient, ClientSettings
from batchrun.core.errors import MediaError, TransportError
from batchrun.cost.catalog import GEMINI_2_RULES, GEMINI_3_RULES, rules_for
from batchrun.cost.limits import PromptTooLargeError
from batchrun.cost.request_cost import RequestCost, request_cost
from batchrun.cost.tokens import media_tokens, meta_tokens
from batchrun.emulator.server import EmulatorServer
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaResolver
from batchrun.media.meta import MediaMeta
from batchrun.request.body import build_body, encode_body
from batchrun.request.payload import READ_BLOCK, PreparedRequest, StreamedBody, build_request


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def priced(row: Row, job: JobSpec, resolver: MediaResolver | None, *, probe: bool = False,
           counts: bool = True) -> tuple[PreparedRequest, RequestCost]:
    """What the runner does with a row before sending it: build its request, then price it."""
    request = build_request(row, job, resolver, probe=probe)
    return request, request_cost(request.messages, request.metas, model=job.model,
                                 body_bytes=len(request.skeleton),
                                 text_only=request.text_only, counts=counts)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_media.write_all(tmp_path)
    # Larger than one read block and not a multiple of 3: the blocks must join seamlessly.
    with wave.open(str(tmp_path / "long.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(bytes(range(256)) * 7001)
    assert (tmp_path / "long.wav").stat().st_size > 2 * READ_BLOCK
    return tmp_path


ROWS = [
    Row(id="text", line=1, prompt="Just text, with \"quotes\" and ünïcode."),
    Row(id="many", line=2, prompt="All of them", system="Be brief.",
        media=("chart.png", "photo.jpg", "report.pdf", "https://example.com/x.png",
               "long.wav", "chart.png")),
    Row(id="messages", line=3, messages=(
        {"role": "user", "content": [{"type": "text", "text": "Look"},
                                     {"type": "image_url", "image_url": {"url": "clip.mp4"}},
                                     {"type": "image_url", "image_url": "silence.mp3"}]},)),
    Row(id="batch", line=4, body={"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "tone.wav"}}]}], "temperature": 0.2}),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_prepared_body_is_byte_for_byte_the_simple_one(root: Path, row: Row) -> None:
    job = JobSpec(google_search=True, reasoning_effort="low")
    resolver = MediaResolver(root)
    simple = encode_body(build_body(row, job, resolver))
    before = open_fds()
    prepared = build_request(row, job, resolver)
    assert prepared.size == len(simple)
    assert prepared.encode() == simple
    assert prepared.encode() == simple  # files are read again: encoding is repeatable

    async def stream() -> tuple[bytes, str | None]:
        body = prepared.stream()
        pieces = [bytes(piece) async for piece in body]
        return b"".join(pieces), body.sha256

    streamed, sha = anyio.run(stream)
    assert streamed == simple and sha == hashlib.sha256(simple).hexdigest()
    assert max(map(len, prepared.pieces())) <= READ_BLOCK * 4 // 3  # one block at a time
    prepared.close()
    assert open_fds() == before


def test_a_file_that_changes_after_preparing_is_a_media_error(root: Path) -> None:
    row = Row(id="r", line=1, prompt="x", media=("tone.wav",))
    prepared = build_request(row, JobSpec(), MediaResolver(root))
    with open(root / "tone.wav", "ab") as handle:
        handle.write(b"more")
    with pytest.raises(MediaError, match="'tone.wav' changed size while being sent"):
        prepared.encode()
    prepared.close()


def test_request_limit_counts_base64_and_closes_what_it_opened(root: Path) -> None:
    row = Row(id="r", line=1, prompt="x", media=("tone.wav", "silence.mp3"))
    resolver = MediaResolver(root)
    size = len(encode_body(build_body(row, JobSpec(), resolver)))
    before = open_fds()
    prepared = build_request(row, JobSpec(), resolver)
    assert prepared.size == size
    prepared.check_size(size)  # at the limit: accepted
    with pytest.raises(MediaError, match=f"would be {size:,} bytes") as info:
        prepared.check_size(size - 1)
    assert "'tone.wav' (16,044 bytes)" in info.value.message
    assert open_fds() == before + 2  # open and checked, not read, until closed
    prepared.close()
    assert open_fds() == before


def test_probed_metadata_drives_the_estimate(root: Path) -> None:
    row = Row(id="r", line=1, prompt="", media=("report.pdf", "tone.wav", "clip.mp4"))
    prepared, cost = priced(row, JobSpec(), MediaResolver(root), probe=True)
    prepared.close()
    metas = sorted(prepared.metas.values(), key=lambda meta: meta.kind)
    assert [(m.kind, m.pages, m.seconds) for m in metas] == [
        ("audio", None, 1.0), ("pdf", 3, None), ("video", None, 2.0)]
    media = 3 * 560 + 25 + (2 * 70 + 50)
    assert cost.estimate is not None
    assert cost.estimate.prompt_tokens == 4 + media  # one message, no text
    assert cost.estimate.kind == "pdf"


def test_without_counts_a_small_text_row_is_not_counted_but_everything_else_is(
        root: Path) -> None:
    """counts=False (no --tpm, no budget): the runner needs no count for a plain short text."""
    text = Row(id="t", line=1, prompt="a short prompt")
    _, cost = priced(text, JobSpec(), None, counts=False)
    assert (cost.estimate, cost.prompt_bound) == (None, 0)
    _, counted = priced(text, JobSpec(), None)
    assert counted.estimate is not None and counted.prompt_bound > 0
    # A data: URL is short on the wire but costs a whole image: always counted.
    image = Row(id="i", line=2, prompt="x", media=("data:image/png;base64,iVBORw0KGgo=",))
    assert priced(image, JobSpec(), None, counts=False)[1].estimate is not None
    # So is a local file, and a text long enough to pass the window.
    local = Row(id="l", line=3, prompt="x", media=("report.pdf",))
    with_file, file_cost = priced(local, JobSpec(), MediaResolver(root), counts=False)
    with_file.close()
    assert file_cost.estimate is not None


@given(prompt=st.text(max_size=300), system=st.none() | st.text(max_size=100))
@settings(max_examples=300, deadline=None)
def test_a_text_body_has_at_least_as_many_bytes_as_estimated_tokens(
        prompt: str, system: str | None) -> None:
    """What lets counts=False skip the count: the context check cannot fire below the bytes."""
    row = Row(id="p", line=1, prompt=prompt, system=system)
    prepared, cost = priced(row, JobSpec(), None)
    assert cost.estimate is not None
    assert cost.estimate.prompt_tokens <= len(prepared.skeleton)


def test_without_counts_a_text_beyond_the_window_is_still_refused() -> None:
    huge = Row(id="h", line=1, prompt="word " * 1_300_000)  # 6.5 MB: ~1.6M estimated tokens
    with pytest.raises(PromptTooLargeError):
        priced(huge, JobSpec(), None, counts=False)


def test_rules_per_model_family() -> None:
    assert rules_for("gemini-3.1-pro") is GEMINI_3_RULES
    assert rules_for("gemini-2.5-flash") is GEMINI_2_RULES
    assert rules_for("models/gemini-1.5-pro") is GEMINI_2_RULES
    photo = MediaMeta(kind="image", width=1920, height=1080)
    assert meta_tokens(photo) == 1120  # Gemini 3: one image, whatever its size
    assert meta_tokens(photo, GEMINI_2_RULES) == 3 * 2 * 258  # 768 px tiles
    assert meta_tokens(MediaMeta(kind="image", width=300, height=200), GEMINI_2_RULES) == 258
    assert media_tokens("audio", seconds=10, rules=GEMINI_2_RULES) == 320
    # No header duration: guessed from the size, as the emulator does.
    assert meta_tokens(MediaMeta(kind="audio", size=160_000)) == 250


def test_a_file_changed_mid_send_surfaces_as_its_media_error(
    root: Path, emulator: EmulatorServer
) -> None:
    row = Row(id="r", line=1, prompt="x", media=("tone.wav",))
    prepared = build_request(row, JobSpec(stream=False), MediaResolver(root))
    (root / "tone.wav").write_bytes(b"RIFF" + bytes(100))  # shrinks after the check

    async def send() -> StreamedBody:
        settings = ClientSettings(endpoint=emulator.base_url, api_key="sk-test-payload")
        async with ApiClient(settings) as client:
            body = prepared.stream()
            with pytest.raises(TransportError):
                await client.complete(body, stream=False)
            return body

    body = anyio.run(send)
    prepared.close()
    assert isinstance(body.error, MediaError) and "changed size" in body.error.message
    assert body.sha256 is None
    assert emulator.stats.by_status.get(200, 0) == 0 and emulator.stats.media_seen == []
