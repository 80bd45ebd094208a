"""The emulator over real HTTP on 127.0.0.1: the contract of the gateway's API reference
(https://api.aivideoapi.ai), its billing and injected faults."""

from __future__ import annotations

import base64
import hashlib
import io
import math
import re
import signal
import struct
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner
from support.emulator_http import MODEL, chat_body
from support.kit import reap

from batchrun.emulator.command import emulator_command
from batchrun.emulator.media import mp4_seconds, pdf_pages, wav_seconds
from batchrun.emulator.server import EmulatorServer

KEY = {"Authorization": "Bearer sk-test"}
MakeEmulator = Callable[..., EmulatorServer]




def post(
    http: httpx.Client,
    server: EmulatorServer,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    raw = content if content is not None else orjson.dumps(body if body is not None else {})
    return http.post(
        f"{server.base_url}/chat/completions",
        content=raw,
        headers={"Content-Type": "application/json", **(KEY if headers is None else headers)},
    )


def sse_events(text: str) -> tuple[list[Any], list[str]]:
    """(decoded data events, with "[DONE]" kept as a string; comment lines)."""
    events: list[Any] = []
    comments: list[str] = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else orjson.loads(data))
    return events, comments


def assert_error(response: httpx.Response, status: int, code: str, error_type: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert list(payload) == ["error"]
    assert list(payload["error"]) == ["code", "message", "type"]
    assert payload["error"]["code"] == code
    assert payload["error"]["type"] == error_type
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    return payload["error"]


# --- the gateway's error table ----------------------------------------------------------------

# (code, status, type, emulator config, body overrides, headers, requests sent before)
# task_not_found (404) has no route in the gateway's chat API, so nothing here can produce it.
ERROR_CASES = [
    ("invalid_request", 400, "invalid_request_error", {}, {"model": None}, None, 0),
    ("invalid_api_key", 401, "authentication_error", {}, {}, {"Authorization": "Bearer nope"}, 0),
    ("insufficient_credits", 402, "billing_error", {"balance": 0.0}, {}, None, 0),
    ("ip_not_allowed", 403, "permission_error", {"deny_ip": True}, {}, None, 0),
    ("model_not_found", 404, "invalid_request_error", {}, {"model": "gpt-4o"}, None, 0),
    ("rate_limit_exceeded", 429, "rate_limit_error", {"rpm": 1}, {}, None, 1),
    ("spend_limit_exceeded", 429, "billing_error", {"spend_limit": 0.0}, {}, None, 0),
    ("internal_error", 500, "api_error", {"fail_500": 1.0}, {}, None, 0),
    ("upstream_error", 503, "upstream_error", {"fail_503": 1.0}, {}, None, 0),
]


@pytest.mark.parametrize(
    ("code", "status", "error_type", "config", "overrides", "headers", "before"),
    ERROR_CASES,
    ids=[case[0] for case in ERROR_CASES],
)
def test_error_table(
    make_emulator: MakeEmulator,
    http: httpx.Client,
    code: str,
    status: int,
    error_type: str,
    config: dict,
    overrides: dict,
    headers: dict | None,
    before: int,
) -> None:
    server = make_emulator(**config)
    body = {k: v for k, v in chat_body(**overrides).items() if v is not None}
    for _ in range(before):
        assert post(http, server, body).status_code == 200
    error = assert_error(post(http, server, body, headers=headers), status, code, error_type)
    assert server.stats.by_status[status] == 1
    assert server.stats.billed_requests == before
    if code == "invalid_request":
        assert error["message"] == "'model' is required."  # the gateway's own message
    if code == "insufficient_credits":
        assert error["message"] == "Your credit balance is too low. Please top up."


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "sk-test"}, {"Authorization": "Basic sk-test"},
     {"Authorization": "Bearer"}, {"Authorization": "Bearer pk-test"},
     {"Authorization": "Bearer sk-"}],
    ids=["missing", "no-scheme", "basic", "empty", "not-sk", "bare-prefix"],
)
def test_bad_keys_are_401(emulator: EmulatorServer, http: httpx.Client, headers: dict) -> None:
    assert_error(post(http, emulator, chat_body(), headers=headers), 401, "invalid_api_key",
                 "authentication_error")


def test_check_order_auth_before_everything(make_emulator: MakeEmulator,
                                            http: httpx.Client) -> None:
    server = make_emulator(deny_ip=True, balance=0.0, fail_503=1.0)
    response = post(http, server, content=b"not json", headers={})
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert post(http, server, content=b"not json").json()["error"]["code"] == "ip_not_allowed"
    server.config.deny_ip = False
    assert post(http, server, content=b"not json").json()["error"]["code"] == (
        "insufficient_credits")
    server.config.balance = None
    assert post(http, server, content=b"not json").json()["error"]["code"] == "invalid_request"
    assert post(http, server, chat_body(model="x")).json()["error"]["code"] == "model_not_found"
    assert post(http, server, chat_body()).json()["error"]["code"] == "upstream_error"


BAD_BODIES = [
    ("not-json", b"{nope", "not valid JSON"),
    ("not-object", b"[1, 2]", "JSON object"),
    ("model-empty", {"model": "", "messages": [{"role": "user", "content": "x"}]},
     "'model' is required."),
    ("model-not-string", {"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ("messages-missing", {"model": MODEL}, "'messages' is required."),
    ("messages-empty", chat_body(messages=[]), "messages"),
    ("messages-not-list", chat_body(messages={"role": "user"}), "messages"),
    ("message-not-object", chat_body(messages=["hi"]), "messages[0]"),
    ("bad-role", chat_body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    ("content-number", chat_body(messages=[{"role": "user", "content": 5}]), "messages[0]"),
    ("part-type", chat_body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "input_audio", "input_audio": {}}]}]),
     "messages[0].content[1]"),
    ("text-not-string", chat_body(messages=[{"role": "user", "content": [
        {"type": "text", "text": 1}]}]), "messages[0].content[0].text"),
    ("image-url-missing", chat_body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {}}]}]), "messages[0].content[0].image_url"),
    ("image-url-scheme", chat_body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]), "image_url.url"),
    ("stream-not-bool", chat_body(stream="yes"), "'stream'"),
    ("thoughts-not-bool", chat_body(include_thoughts=1), "'include_thoughts'"),
    ("effort", chat_body(reasoning_effort="medium"), "'reasoning_effort'"),
    ("tools-other", chat_body(tools=[{"type": "function", "function": {"name": "get_time"}}]),
     "googleSearch"),
    ("tools-not-list", chat_body(tools={"googleSearch": {}}), "'tools'"),
    ("max-tokens", chat_body(max_tokens=0), "'max_tokens'"),
]


@pytest.mark.parametrize(("body", "needle"), [(b, n) for _, b, n in BAD_BODIES],
                         ids=[case[0] for case in BAD_BODIES])
def test_invalid_bodies_are_400(emulator: EmulatorServer, http: httpx.Client, body: Any,
                                needle: str) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    error = assert_error(post(http, emulator, content=content), 400, "invalid_request",
                         "invalid_request_error")
    assert needle in error["message"]
    assert emulator.stats.billed_requests == 0


# --- successful answers -----------------------------------------------------------------------


def test_stream_is_the_default(emulator: EmulatorServer, http: httpx.Client) -> None:
    response = post(http, emulator, chat_body())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n")


def test_non_stream_shape(emulator: EmulatorServer, http: httpx.Client) -> None:
    response = post(http, emulator, chat_body(stream=False))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert list(payload) == ["id", "object", "created", "model", "choices", "usage",
                             "credits_consumed"]
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", payload["id"])
    assert payload["object"] == "chat.completion"
    assert isinstance(payload["created"], int)
    assert payload["model"] == "gemini-3.1-pro-preview"
    (choice,) = payload["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"].startswith("Emulated answer ")
    assert "Hi, introduce yourself" in message["content"]
    assert message["reasoning_content"]  # include_thoughts defaults to true
    usage = payload["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens",
                          "completion_tokens_details"}
    assert set(usage["completion_tokens_details"]) == {"reasoning_tokens", "audio_tokens",
                                                       "text_tokens"}
    assert 20 <= usage["completion_tokens"] <= 400
    assert abs(len(message["content"]) - 4 * usage["completion_tokens"]) <= 4


def test_sse_shape_matches_json_answer(emulator: EmulatorServer, http: httpx.Client) -> None:
    streamed = post(http, emulator, chat_body(stream=True))
    whole = post(http, emulator, chat_body(stream=False)).json()
    events, comments = sse_events(streamed.text)
    assert comments == [": keep-alive"]
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["model"] == "gemini-3.1-pro-preview" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    content_chunks = chunks[:-1]
    finishes = [c["choices"][0]["finish_reason"] for c in content_chunks]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    deltas = [c["choices"][0]["delta"] for c in content_chunks]
    assert sum("content" in d and d["content"] != "" for d in deltas) >= 3  # several pieces
    content = "".join(d.get("content", "") for d in deltas)
    thoughts = "".join(d.get("reasoning_content", "") for d in deltas)
    message = whole["choices"][0]["message"]
    assert content == message["content"]
    assert thoughts == message["reasoning_content"]
    assert usage_chunk["usage"] == whole["usage"]
    assert usage_chunk["credits_consumed"] == whole["credits_consumed"]


def test_usage_and_credits_follow_the_gateway_formula(emulator: EmulatorServer,
                                                      http: httpx.Client) -> None:
    text = "abcd" * 10 + "x"  # 41 chars at 4 chars/token -> 11 tokens, + 4 per message
    payload = post(http, emulator, chat_body(
        stream=False, messages=[{"role": "system", "content": ""},
                                {"role": "user", "content": text}])).json()
    usage = payload["usage"]
    assert usage["prompt_tokens"] == 4 + 4 + 11
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] + reasoning
    expected = (usage["prompt_tokens"] * 160 + usage["completion_tokens"] * 960) / 1_000_000
    assert payload["credits_consumed"] == pytest.approx(expected, abs=1e-10)
    assert emulator.stats.credits_billed == pytest.approx(expected, abs=1e-10)
    assert emulator.stats.billed_requests == 1


def test_credits_rounding_like_the_gateway(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    server = make_emulator(credits_rounding=2)
    payload = post(http, server, chat_body(stream=False)).json()
    usage = payload["usage"]
    exact = (usage["prompt_tokens"] * 160 + usage["completion_tokens"] * 960) / 1_000_000
    assert payload["credits_consumed"] == round(exact, 2)


def test_chars_per_token_changes_prompt_tokens(make_emulator: MakeEmulator,
                                               http: httpx.Client) -> None:
    server = make_emulator(chars_per_token=2.0)
    body = chat_body(stream=False, messages=[{"role": "user", "content": "a" * 40}])
    assert post(http, server, body).json()["usage"]["prompt_tokens"] == 4 + 20


def test_answers_are_deterministic(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    first, second = make_emulator(), make_emulator()
    body = chat_body(stream=False)
    one, two = post(http, first, body).json(), post(http, second, body).json()
    for payload in (one, two):
        payload.pop("created")
    assert one == two
    other = post(http, first, chat_body(stream=False, messages=[
        {"role": "user", "content": "Something else entirely"}])).json()
    assert other["choices"][0]["message"]["content"] != one["choices"][0]["message"]["content"]
    assert other["id"] != one["id"]


def test_reasoning_effort_and_thought_styles(make_emulator: MakeEmulator,
                                             http: httpx.Client) -> None:
    server = make_emulator()
    high = post(http, server, chat_body(stream=False)).json()
    low = post(http, server, chat_body(stream=False, reasoning_effort="low")).json()
    hidden = post(http, server, chat_body(stream=False, include_thoughts=False)).json()
    high_reasoning = high["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert high_reasoning > low["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert hidden["usage"] == high["usage"]  # still thinks, only hides the text
    assert "reasoning_content" not in hidden["choices"][0]["message"]
    server.config.thoughts_style = "tag"
    tagged = post(http, server, chat_body(stream=False)).json()["choices"][0]["message"]
    thoughts = high["choices"][0]["message"]["reasoning_content"]
    assert "reasoning_content" not in tagged
    assert tagged["content"] == (
        f"<thought>{thoughts}</thought>" + high["choices"][0]["message"]["content"])
    streamed, _ = sse_events(post(http, server, chat_body()).text)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in streamed[:-2])
    assert text == tagged["content"]


def test_max_tokens_cuts_with_finish_reason_length(emulator: EmulatorServer,
                                                   http: httpx.Client) -> None:
    payload = post(http, emulator, chat_body(stream=False, max_tokens=5)).json()
    assert payload["choices"][0]["finish_reason"] == "length"
    assert payload["usage"]["completion_tokens"] == 5
    assert len(payload["choices"][0]["message"]["content"]) == 20


def test_google_search_adds_a_citation(emulator: EmulatorServer, http: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "googleSearch"}}]
    message = post(http, emulator, chat_body(stream=False, tools=tools)).json()[
        "choices"][0]["message"]
    assert message["annotations"][0]["type"] == "url_citation"


# --- limits, balance, faults ------------------------------------------------------------------


def test_rpm_limit_gives_429_with_retry_after(make_emulator: MakeEmulator,
                                              http: httpx.Client) -> None:
    server = make_emulator(rpm=2)  # bucket of one request (one second of flow, at least 1)
    assert post(http, server, chat_body()).status_code == 200
    response = post(http, server, chat_body())
    assert_error(response, 429, "rate_limit_exceeded", "rate_limit_error")
    retry_ms = int(response.headers["retry-after-ms"])
    assert 0 < retry_ms <= 30_000  # one token every 30 s at 2 rpm
    assert int(response.headers["Retry-After"]) == math.ceil(retry_ms / 1000)
    server.config.rpm = 600_000  # refills at once: the limit is live config
    assert post(http, server, chat_body()).status_code == 200


def test_rpm_burst_allows_a_minute_up_front(make_emulator: MakeEmulator,
                                            http: httpx.Client) -> None:
    server = make_emulator(rpm=3, rpm_burst=3)
    statuses = [post(http, server, chat_body()).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_balance_runs_out_into_402(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    server = make_emulator(balance=0.001)
    statuses = [post(http, server, chat_body(messages=[
        {"role": "user", "content": f"row {i}"}])).status_code for i in range(10)]
    assert statuses[0] == 200 and 402 in statuses
    first_402 = statuses.index(402)
    assert set(statuses[first_402:]) == {402}
    assert server.stats.billed_requests == first_402
    assert server.config.balance is not None and server.config.balance <= 0
    assert server.config.balance == pytest.approx(0.001 - server.stats.credits_billed)
    credits = http.get(f"{server.base_url}/credits", headers=KEY).json()
    assert credits == {"object": "credits", "credits": server.config.balance}


def test_spend_limit(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    server = make_emulator(spend_limit=0.0005)
    statuses = [post(http, server, chat_body()).status_code for _ in range(8)]
    assert statuses[0] == 200 and statuses[-1] == 429
    assert server.stats.credits_billed >= 0.0005
    assert_error(post(http, server, chat_body()), 429, "spend_limit_exceeded", "billing_error")


def test_revoke_after(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    server = make_emulator(revoke_after=2)
    assert [post(http, server, chat_body()).status_code for _ in range(2)] == [200, 200]
    assert_error(post(http, server, chat_body()), 401, "invalid_api_key", "authentication_error")
    assert http.get(f"{server.base_url}/credits", headers=KEY).status_code == 401


def test_upstream_and_server_errors_are_not_billed(make_emulator: MakeEmulator,
                                                   http: httpx.Client) -> None:
    server = make_emulator(fail_503=0.5, fail_500=0.5)
    statuses = {post(http, server, chat_body()).status_code for _ in range(20)}
    assert statuses == {500, 503}
    assert server.stats.billed_requests == 0 and server.config.balance is None


def test_fault_sequence_is_seeded(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    def run(server: EmulatorServer) -> list[int]:
        return [post(http, server, chat_body(stream=False)).status_code for _ in range(30)]

    first = run(make_emulator(fail_503=0.3, seed=7))
    assert first == run(make_emulator(fail_503=0.3, seed=7))
    assert {200, 503} == set(first)
    assert first != run(make_emulator(fail_503=0.3, seed=8))


def test_drop_reset_sends_nothing_and_bills_nothing(make_emulator: MakeEmulator,
                                                    http: httpx.Client) -> None:
    server = make_emulator(drop_rate=1.0, drop_mode="reset")
    for stream in (False, True):
        with pytest.raises(httpx.TransportError):
            post(http, server, chat_body(stream=stream))
    assert server.stats.billed_requests == 0
    assert server.stats.by_status[0] == 2 and server.stats.dropped == 2


def test_drop_truncate_is_paid_but_lost(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    server = make_emulator(drop_rate=1.0, drop_mode="truncate")
    received: list[str] = []
    with pytest.raises(httpx.TransportError), http.stream(
        "POST", f"{server.base_url}/chat/completions", headers=KEY,
        content=orjson.dumps(chat_body()),
    ) as response:
        assert response.status_code == 200
        for text in response.iter_text():
            received.append(text)
    events, _ = sse_events("".join(received))
    assert events and events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "[DONE]" not in events and not any(
        isinstance(e, dict) and "usage" in e for e in events)
    with pytest.raises(httpx.TransportError):
        post(http, server, chat_body(stream=False))
    assert server.stats.billed_requests == 2 and server.stats.dropped == 2


def test_drop_rate_one_mixed_never_answers(make_emulator: MakeEmulator,
                                           http: httpx.Client) -> None:
    server = make_emulator(drop_rate=1.0)
    for _ in range(6):
        with pytest.raises(httpx.TransportError):
            post(http, server, chat_body(stream=False))
    assert server.stats.dropped == 6


def test_latency(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    server = make_emulator(latency_ms=150)
    response = post(http, server, chat_body())
    assert response.elapsed.total_seconds() >= 0.14


# --- media ------------------------------------------------------------------------------------


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def media_body(*urls: str, text: str = "") -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return chat_body(stream=False, messages=[{"role": "user", "content": parts}])


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(rate * seconds))
    return buffer.getvalue()


def mp4_bytes(seconds: float) -> bytes:
    mvhd = b"mvhd" + bytes(4) + struct.pack(">IIII", 0, 0, 1000, int(seconds * 1000))
    return b"\x00\x00\x00\x20ftypisom" + bytes(20) + struct.pack(">I", 8 + len(mvhd)) + mvhd


PDF3 = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 3 >> endobj\n"
        b"3 0 obj << /Type /Page >> endobj\n4 0 obj << /Type/Page >> endobj\n"
        b"5 0 obj << /Type /Page /Parent 2 0 R >> endobj\n%%EOF\n")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


@pytest.mark.parametrize(
    ("mime", "data", "tokens"),
    [
        ("image/png", PNG, 1120),
        ("application/pdf", PDF3, 3 * 560),
        ("audio/wav", wav_bytes(2.0), 50),
        ("audio/mpeg", bytes(32_000), 50),  # 2 s at the assumed 16 kB/s
        ("video/mp4", mp4_bytes(3.5), 4 * 70 + 88),
        ("video/webm", bytes(500_000), 2 * 70 + 50),  # 2 s at the assumed 250 kB/s
    ],
    ids=["image", "pdf", "wav", "mp3", "mp4", "webm"],
)
def test_media_data_urls_are_counted_and_recorded(
    emulator: EmulatorServer, http: httpx.Client, mime: str, data: bytes, tokens: int
) -> None:
    payload = post(http, emulator, media_body(data_url(mime, data), text="abcd")).json()
    assert payload["usage"]["prompt_tokens"] == 4 + 1 + tokens
    assert emulator.stats.media_seen == [(mime, len(data))]


def test_http_media_url_counts_as_one_image(emulator: EmulatorServer,
                                            http: httpx.Client) -> None:
    payload = post(http, emulator, media_body("https://example.com/photo.jpg")).json()
    assert payload["usage"]["prompt_tokens"] == 4 + 1120
    assert emulator.stats.media_seen == []


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("data:image/png;base64,@@not-base64@@", "invalid base64"),
        ("data:image/png;base64,", "no data"),
        ("data:image/png,rawbytes", "base64"),
        (data_url("text/html", b"<p>hi</p>"), "unsupported media type 'text/html'"),
    ],
    ids=["bad-base64", "empty", "not-base64", "mime"],
)
def test_bad_media_is_400_naming_the_part(emulator: EmulatorServer, http: httpx.Client,
                                          url: str, needle: str) -> None:
    error = assert_error(post(http, emulator, media_body(url, text="look")), 400,
                         "invalid_request", "invalid_request_error")
    assert error["message"].startswith("messages[0].content[1].image_url.url")
    assert needle in error["message"]
    assert emulator.stats.media_seen == []


def test_media_header_parsers() -> None:
    assert pdf_pages(PDF3) == 3
    assert pdf_pages(b"%PDF-1.5 compressed /Type /Pages /Count 12") == 12
    assert pdf_pages(b"%PDF garbage") == 1
    assert wav_seconds(wav_bytes(1.5)) == pytest.approx(1.5)
    assert wav_seconds(b"RIFF....WAVEjunk") is None
    assert mp4_seconds(mp4_bytes(3.5)) == pytest.approx(3.5)
    assert mp4_seconds(b"no movie header") is None


def test_billed_by_body_is_sha256_of_the_raw_body(emulator: EmulatorServer,
                                                  http: httpx.Client) -> None:
    raw = orjson.dumps(chat_body(stream=False))
    for _ in range(2):
        post(http, emulator, content=raw)
    assert emulator.stats.billed_by_body == {hashlib.sha256(raw).hexdigest(): 2}


# --- other routes -----------------------------------------------------------------------------


def test_credits_endpoint(make_emulator: MakeEmulator, http: httpx.Client) -> None:
    unlimited, funded = make_emulator(), make_emulator(balance=5)
    assert http.get(f"{unlimited.base_url}/credits", headers=KEY).json() == {
        "object": "credits", "credits": None}
    assert http.get(f"{funded.base_url}/credits", headers=KEY).json()["credits"] == 5
    assert_error(http.get(f"{funded.base_url}/credits"), 401, "invalid_api_key",
                 "authentication_error")


def test_unknown_routes_are_json_404(emulator: EmulatorServer, http: httpx.Client) -> None:
    response = http.get(f"{emulator.base_url}/models", headers=KEY)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = http.get(f"{emulator.base_url}/chat/completions", headers=KEY)
    assert response.status_code == 405


def test_control_endpoints(emulator: EmulatorServer, http: httpx.Client) -> None:
    root = emulator.root_url
    post(http, emulator, chat_body())
    stats = http.get(f"{root}/_emulator/stats").json()
    assert stats["requests_total"] == 1 and stats["billed_requests"] == 1
    assert stats["by_status"] == {"200": 1} and stats["balance"] is None
    orjson.dumps(emulator.stats.snapshot())  # JSON-able
    changed = http.post(f"{root}/_emulator/config", json={"balance": 0, "rpm": None})
    assert changed.status_code == 200 and changed.json()["balance"] == 0.0
    assert post(http, emulator, chat_body()).status_code == 402
    assert http.post(f"{root}/_emulator/config", json={"nope": 1}).status_code == 400
    assert http.post(f"{root}/_emulator/config", json={"fail_503": 2}).status_code == 400
    assert http.post(f"{root}/_emulator/config", json={"drop_mode": "x"}).status_code == 400
    assert emulator.config.fail_503 == 0.0  # a rejected change leaves the config alone
    reset = http.post(f"{root}/_emulator/reset").json()
    assert reset["requests_total"] == 0 and reset["by_status"] == {}
    assert emulator.stats.requests_total == 0


def test_concurrency_is_observed(make_emulator: MakeEmulator) -> None:
    import anyio

    server = make_emulator(latency_ms=100)

    async def main() -> None:
        async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(lambda: client.post(
                    f"{server.base_url}/chat/completions", headers=KEY, json=chat_body()))

    anyio.run(main)
    assert server.stats.max_in_flight == 8 and server.stats.in_flight == 0


# --- the command ------------------------------------------------------------------------------


def test_cli_help_lists_every_flag() -> None:
    result = CliRunner().invoke(emulator_command, ["--help"])
    assert result.exit_code == 0
    for flag in ("--port", "--latency-ms", "--rpm", "--fail-503", "--fail-500", "--balance",
                 "--spend-limit", "--drop-rate", "--host", "--jitter-ms", "--chars-per-token",
                 "--seed", "--revoke-after", "Examples:"):
        assert flag in result.output


def test_cli_flags_land_on_the_config_field_of_the_same_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from batchrun.emulator import command
    from batchrun.emulator.state import EmulatorConfig

    fields = set(EmulatorConfig.__dataclass_fields__)
    destinations = {param.name for param in emulator_command.params}
    assert destinations - {"host", "port", "no_rate_headers"} <= fields
    served: list[tuple[EmulatorConfig, str, int]] = []
    monkeypatch.setattr(command, "_serve", lambda config, host, port: (config, host, port))
    monkeypatch.setattr(command, "run_server", served.append)
    result = CliRunner().invoke(emulator_command, [
        "--port", "0", "--no-rate-headers", "--seed", "5", "--stream-parts", "3",
        "--retry-after", "none", "--fail-429", "0.25", "--rpm-schedule", "600@0,60@10"])
    assert result.exit_code == 0, result.output
    [(config, host, port)] = served
    assert (host, port) == ("127.0.0.1", 0)
    assert config.rate_headers is False and config.seed == 5 and config.stream_parts == 3
    assert config.retry_after == "none" and config.fail_429 == 0.25
    assert config.rpm is None and config.rpm_schedule == "600@0,60@10"
    assert config.latency_ms == 0.0 and config.balance is None  # the flags' defaults


def test_cli_serves_as_a_subprocess(http: httpx.Client) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchrun.emulator", "--port", "0", "--balance", "7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"batchrun emulator listening on (http://127\.0\.0\.1:(\d+)/v1)\n",
                             line)
        assert match, line
        base_url = match.group(1)
        assert http.get(f"{base_url}/credits", headers=KEY).json()["credits"] == 7
        response = http.post(f"{base_url}/chat/completions", headers=KEY,
                             json=chat_body(stream=False))
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""  # exactly one stdout line
    finally:
        reap(process)


def test_a_client_leaving_mid_stream_is_not_a_server_error(
    make_emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed client (the crash tests do it on purpose) must not make the emulator log
    a traceback for every answer it could not finish."""
    import json as json_module
    import logging
    import socket
    import time

    server = make_emulator(chunk_delay_ms=50)
    port = int(server.base_url.split(":")[2].split("/")[0])
    caplog.set_level(logging.ERROR)
    for number in range(3):
        body = json_module.dumps({"model": "gemini-3.1-pro",
                                  "messages": [{"role": "user", "content": f"hi {number}"}]})
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test"
                b"\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body.encode())
            assert sock.recv(200).startswith(b"HTTP/1.1 200")
    time.sleep(1.0)
    assert "Error handling request" not in caplog.text
    assert server.stats.requests_total == 3


def test_the_emulator_listens_with_a_deep_accept_queue() -> None:
    """aiohttp's default backlog (128) dropped SYNs when a client opened 512 connections at
    once, and each dropped one came back only after a 1 s retransmission."""
    import shutil

    from batchrun.emulator.server import LISTEN_BACKLOG

    if shutil.which("ss") is None:
        pytest.skip("needs iproute2's ss to read a listening socket's backlog")
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    with EmulatorServer() as server:
        shown = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True,
                               text=True, check=True).stdout.split()
    # LISTEN  Recv-Q  Send-Q(= the backlog)  local  peer
    assert int(shown[2]) == min(LISTEN_BACKLOG, somaxconn) >= 512
