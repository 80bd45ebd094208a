"""ApiClient over real HTTP on 127.0.0.1: the project's emulator, plus a tiny raw server for
answers the emulator never gives (odd content types, stalls, echoed keys)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web
from support.error_table import ERROR_TABLE

from batchrun.api.client import (
    USER_AGENT,
    ApiClient,
    ClientSettings,
    balance_from_payload,
    mask_key,
)
from batchrun.core import errors
from batchrun.emulator.server import EmulatorServer

KEY = "sk-test-0123456789abcdefSECRET"
MODEL = "gemini-3.1-pro"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp is asyncio-only


def chat_body(text: str = "Hello there", **fields: Any) -> bytes:
    return orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": text}],
                         **fields})


def settings_for(base_url: str, **overrides: Any) -> ClientSettings:
    return ClientSettings(endpoint=base_url, api_key=overrides.pop("api_key", KEY), **overrides)


# ---------------------------------------------------------------- a raw loopback server

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RawServer:
    """An aiohttp app on a free 127.0.0.1 port in its own thread; every path goes to handler."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.peers: set[Any] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append({"method": request.method, "path": request.path,
                              "headers": dict(request.headers), "body": body})
        self.peers.add(request.transport.get_extra_info("peername") if request.transport
                       else None)
        return await self.handler(request)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

    def __enter__(self) -> RawServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def raw_server() -> Iterator[Callable[[Handler], RawServer]]:
    servers: list[RawServer] = []

    def make(handler: Handler) -> RawServer:
        server = RawServer(handler).__enter__()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.__exit__()


def json_answer(obj: Any, status: int = 200, headers: dict[str, str] | None = None,
                content_type: str = "application/json") -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=orjson.dumps(obj), content_type=content_type,
                            headers=headers)
    return handler


def sse_answer(events: list[bytes], content_type: str = "text/event-stream",
               stall_s: float = 0.0, abort: bool = False) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = content_type
        await response.prepare(request)
        for event in events:
            await response.write(event)
        if stall_s:
            await asyncio.sleep(stall_s)
        if abort and request.transport is not None:
            request.transport.abort()
            return response
        await response.write_eof()
        return response
    return handler


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def stream_chunk(content: str, finish: str | None = None, **top: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
            **top}


USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
GOOD_EVENTS = [sse(stream_chunk("Hel")), b": keep-alive\n\n",
               sse(stream_chunk("lo", "stop", usage=USAGE, credits_consumed=0.01)),
               b"data: [DONE]\n\n"]


# ---------------------------------------------------------------- success against the emulator


@pytest.mark.parametrize("style", ["field", "tag"])
async def test_stream_and_json_give_the_same_answer(
    make_emulator: Callable[..., EmulatorServer], style: str
) -> None:
    server = make_emulator(thoughts_style=style)
    async with ApiClient(settings_for(server.base_url)) as client:
        streamed = await client.complete(chat_body(stream=True), stream=True)
        whole = await client.complete(chat_body(stream=False), stream=False)
    for completion in (streamed, whole):
        assert completion.content.startswith("Emulated answer")
        assert "<thought>" not in completion.content
        assert completion.thoughts.startswith("Thinking (high effort)")
        assert completion.finish_reason == "stop"
        assert completion.model == "gemini-3.1-pro-preview"
        assert completion.response_id and completion.response_id.startswith("chatcmpl-")
        prompt, output = completion.prompt_tokens, completion.completion_tokens
        reasoning = completion.reasoning_tokens
        assert prompt and output and reasoning
        assert completion.total_tokens == prompt + output + reasoning
        expected = (prompt * 160 + output * 960) / 1e6
        assert completion.credits_consumed == pytest.approx(expected)
        assert completion.http_status == 200
    for name in ("content", "thoughts", "prompt_tokens", "completion_tokens", "reasoning_tokens",
                 "credits_consumed", "extra"):
        assert getattr(streamed, name) == getattr(whole, name), name
    assert server.stats.billed_requests == 2


async def test_grounding_annotations_are_kept(emulator: EmulatorServer) -> None:
    tools = [{"type": "function", "function": {"name": "googleSearch"}}]
    async with ApiClient(settings_for(emulator.base_url)) as client:
        for stream in (True, False):
            completion = await client.complete(chat_body(tools=tools, stream=stream),
                                               stream=stream)
            annotation = completion.extra["message"]["annotations"][0]
            assert annotation["type"] == "url_citation"


async def test_low_effort_without_thoughts(emulator: EmulatorServer) -> None:
    async with ApiClient(settings_for(emulator.base_url)) as client:
        completion = await client.complete(
            chat_body(include_thoughts=False, reasoning_effort="low"), stream=True)
    assert completion.thoughts == ""
    assert completion.content


async def test_pool_is_sized_to_max_connections(
    make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(latency_ms=150)
    async with ApiClient(settings_for(server.base_url, max_connections=4)) as client:
        results: list[Any] = []

        async def one(index: int) -> None:
            results.append(await client.complete(chat_body(f"row {index}"), stream=index % 2 == 0))

        async with anyio.create_task_group() as group:
            for index in range(16):
                group.start_soon(one, index)
        assert client.pool_limit == 4
    assert len(results) == 16
    assert server.stats.max_in_flight == 4


async def test_connections_are_reused(raw_server: Callable[[Handler], RawServer]) -> None:
    server = raw_server(sse_answer(GOOD_EVENTS))
    async with ApiClient(settings_for(server.base_url)) as client:
        for _ in range(10):
            assert (await client.complete(chat_body(), stream=True)).content == "Hello"
    assert len(server.requests) == 10
    assert len(server.peers) == 1


async def test_request_headers_and_body(raw_server: Callable[[Handler], RawServer]) -> None:
    server = raw_server(sse_answer(GOOD_EVENTS))
    body = chat_body("exact bytes")
    async with ApiClient(settings_for(server.base_url + "/")) as client:
        await client.complete(body, stream=True)
        await client.complete(body, stream=False)  # answered as SSE all the same
    streamed, plain = server.requests
    assert streamed["method"] == "POST" and streamed["path"] == "/v1/chat/completions"
    assert streamed["body"] == body
    assert streamed["headers"]["Authorization"] == f"Bearer {KEY}"
    assert streamed["headers"]["Content-Type"] == "application/json"
    assert streamed["headers"]["Accept"] == "text/event-stream"
    assert streamed["headers"]["User-Agent"] == USER_AGENT
    assert plain["headers"]["Accept"] == "application/json"


# ---------------------------------------------------------------- content types


async def test_json_answer_when_a_stream_was_asked(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    body = {"id": "x", "model": "m", "usage": USAGE,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "J"}}]}
    server = raw_server(json_answer(body))
    async with ApiClient(settings_for(server.base_url)) as client:
        completion = await client.complete(chat_body(), stream=True)
    assert completion.content == "J" and completion.has_usage


async def test_sse_under_a_json_content_type(raw_server: Callable[[Handler], RawServer]) -> None:
    server = raw_server(sse_answer(GOOD_EVENTS, content_type="application/json"))
    async with ApiClient(settings_for(server.base_url)) as client:
        assert (await client.complete(chat_body(), stream=False)).content == "Hello"


JSON_ANSWER = {"id": "x", "model": "m", "usage": USAGE, "credits_consumed": 0.01,
               "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "J"}}]}


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream",
                                          "text/event-stream"])
@pytest.mark.parametrize("pretty", [False, True])
async def test_a_json_answer_under_another_label_is_read_as_json(
    raw_server: Callable[[Handler], RawServer], content_type: str, pretty: bool
) -> None:
    # A stream was asked for; the whole answer came as JSON, labelled otherwise: it is the
    # answer (not a stream cut before its first event, sent and paid for again).
    option = orjson.OPT_INDENT_2 if pretty else 0
    body = b"\n  " + orjson.dumps(JSON_ANSWER, option=option)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={"Content-Type": content_type})

    server = raw_server(handler)
    async with ApiClient(settings_for(server.base_url)) as client:
        completion = await client.complete(chat_body(), stream=True)
    assert completion.content == "J" and completion.has_usage
    assert completion.credits_consumed == 0.01


async def test_a_broken_json_answer_under_a_stream_label_says_what_came(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"choices": [', content_type="text/event-stream")

    server = raw_server(handler)
    async with ApiClient(settings_for(server.base_url)) as client:
        with pytest.raises(errors.TransportError, match="HTTP 200 answer is"):
            await client.complete(chat_body(), stream=True)


@pytest.mark.parametrize("opening", [b": hello\n\n", b"event: message\n", b"id: 1\n",
                                     b"retry: 1000\n\n"])
@pytest.mark.parametrize("stream", [False, True])
async def test_sse_under_a_json_label_opening_with_any_field(
    raw_server: Callable[[Handler], RawServer], opening: bytes, stream: bool
) -> None:
    server = raw_server(sse_answer([opening, *GOOD_EVENTS], content_type="application/json"))
    async with ApiClient(settings_for(server.base_url)) as client:
        assert (await client.complete(chat_body(), stream=stream)).content == "Hello"


async def test_stream_without_done_but_complete_is_accepted(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    server = raw_server(sse_answer(GOOD_EVENTS[:-1]))
    async with ApiClient(settings_for(server.base_url)) as client:
        completion = await client.complete(chat_body(), stream=True)
    assert completion.content == "Hello" and completion.credits_consumed == 0.01


async def test_stream_with_done_but_no_usage(raw_server: Callable[[Handler], RawServer]) -> None:
    server = raw_server(sse_answer([sse(stream_chunk("Hi", "stop")), b"data: [DONE]\n\n"]))
    async with ApiClient(settings_for(server.base_url)) as client:
        completion = await client.complete(chat_body(), stream=True)
    assert completion.content == "Hi" and not completion.has_usage


@pytest.mark.parametrize(
    ("events", "match"),
    [
        ([sse(stream_chunk("Hel"))], r"stream ended before \[DONE\]"),
        ([sse(stream_chunk("Hel")), b'data: {"id": "c1", "choi'], "cut mid-event"),
        ([b"data: <html>oops</html>\n\n"], "not JSON"),
        ([b"data: [1, 2]\n\n"], "not a JSON object"),
    ],
)
async def test_broken_streams_are_transport_errors(
    raw_server: Callable[[Handler], RawServer], events: list[bytes], match: str
) -> None:
    server = raw_server(sse_answer(events))
    async with ApiClient(settings_for(server.base_url)) as client:
        with pytest.raises(errors.TransportError, match=match):
            await client.complete(chat_body(), stream=True)


async def test_error_event_inside_a_200_stream(raw_server: Callable[[Handler], RawServer]) -> None:
    error = {"error": {"code": "upstream_error", "message": "provider failed",
                       "type": "upstream_error"}}
    server = raw_server(sse_answer([sse(stream_chunk("par")), sse(error)]))
    async with ApiClient(settings_for(server.base_url)) as client:
        with pytest.raises(errors.UpstreamError) as caught:
            await client.complete(chat_body(), stream=True)
    assert caught.value.code == "upstream_error"


async def test_non_json_200_is_a_transport_error(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    server = raw_server(handler)
    async with ApiClient(settings_for(server.base_url)) as client:
        with pytest.raises(errors.TransportError, match="not JSON"):
            await client.complete(chat_body(), stream=False)


async def test_proxy_html_error_page(raw_server: Callable[[Handler], RawServer]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")

    server = raw_server(handler)
    async with ApiClient(settings_for(server.base_url)) as client:
        with pytest.raises(errors.ServerError) as caught:
            await client.complete(chat_body(), stream=True)
    assert caught.value.http_status == 502 and caught.value.code == "http_502"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_compressed_answers(raw_server: Callable[[Handler], RawServer], stream: bool) -> None:
    body = {"id": "x", "usage": USAGE, "choices": [{"index": 0, "finish_reason": "stop",
                                                    "message": {"content": "Z" * 5000}}]}

    async def handler(request: web.Request) -> web.StreamResponse:
        if stream:
            response = web.StreamResponse()
            response.content_type = "text/event-stream"
            response.enable_compression()
            await response.prepare(request)
            for event in GOOD_EVENTS:
                await response.write(event)
            await response.write_eof()
            return response
        response = web.Response(body=orjson.dumps(body), content_type="application/json")
        response.enable_compression()
        return response

    server = raw_server(handler)
    async with ApiClient(settings_for(server.base_url)) as client:
        completion = await client.complete(chat_body(), stream=stream)
    assert completion.content == ("Hello" if stream else "Z" * 5000)
    assert "gzip" in server.requests[0]["headers"]["Accept-Encoding"]


async def test_error_status_with_an_event_stream_body(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    error = {"error": {"code": "insufficient_credits", "message": "top up",
                       "type": "billing_error"}}

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=402, body=b": hi\n\n" + sse(error),
                            content_type="text/event-stream")

    server = raw_server(handler)
    async with ApiClient(settings_for(server.base_url)) as client:
        with pytest.raises(errors.InsufficientCreditsError) as caught:
            await client.complete(chat_body(), stream=True)
    assert caught.value.message == "top up"


# ------------------------------------------------------------- the gateway's error table



@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize(("status", "code", "error_type", "cls"), ERROR_TABLE,
                         ids=[row[1] for row in ERROR_TABLE])
async def test_gateway_error_table_over_http(
    raw_server: Callable[[Handler], RawServer], status: int, code: str, error_type: str,
    cls: type[errors.BatchrunError], stream: bool,
) -> None:
    body = {"error": {"code": code, "message": f"the gateway says {code}", "type": error_type}}
    server = raw_server(json_answer(body, status=status, headers={"Retry-After": "7"}))
    async with ApiClient(settings_for(server.base_url)) as client:
        with pytest.raises(errors.BatchrunError) as caught:
            await client.complete(chat_body(), stream=stream)
    error = caught.value
    assert type(error) is cls
    assert (error.http_status, error.code, error.error_type) == (status, code, error_type)
    assert error.message == f"the gateway says {code}"
    assert error.retry_after == 7.0


EMULATED_ERRORS = [
    ("invalid_request", {}, {"body": orjson.dumps({"messages": []})}, errors.InvalidRequestError),
    ("invalid_api_key", {}, {"api_key": "not-a-key"}, errors.AuthenticationError),
    ("insufficient_credits", {"balance": 0.0}, {}, errors.InsufficientCreditsError),
    ("ip_not_allowed", {"deny_ip": True}, {}, errors.PermissionDeniedError),
    ("model_not_found", {"models": ("other-model",)}, {}, errors.ModelNotFoundError),
    ("spend_limit_exceeded", {"spend_limit": 0.0}, {}, errors.SpendLimitError),
    ("internal_error", {"fail_500": 1.0}, {}, errors.ServerError),
    ("upstream_error", {"fail_503": 1.0}, {}, errors.UpstreamError),
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize(("code", "config", "request_kw", "cls"), EMULATED_ERRORS,
                         ids=[row[0] for row in EMULATED_ERRORS])
async def test_emulator_errors_map_to_classes(
    make_emulator: Callable[..., EmulatorServer], code: str, config: dict[str, Any],
    request_kw: dict[str, Any], cls: type[errors.BatchrunError], stream: bool,
) -> None:
    server = make_emulator(**config)
    settings = settings_for(server.base_url, **({"api_key": request_kw["api_key"]}
                                                if "api_key" in request_kw else {}))
    async with ApiClient(settings) as client:
        with pytest.raises(errors.BatchrunError) as caught:
            await client.complete(request_kw.get("body", chat_body(stream=stream)), stream=stream)
    assert type(caught.value) is cls
    assert caught.value.code == code
    assert caught.value.http_status == cls.http_status


async def test_rate_limit_carries_retry_after(
    make_emulator: Callable[..., EmulatorServer]
) -> None:
    server = make_emulator(rpm=1)
    async with ApiClient(settings_for(server.base_url)) as client:
        await client.complete(chat_body(), stream=True)
        with pytest.raises(errors.RateLimitedError) as caught:
            await client.complete(chat_body(), stream=True)
    assert caught.value.code == "rate_limit_exceeded" and caught.value.http_status == 429
    # rpm=1: the next token is about a minute away, retry-after-ms says so, capped at 60 s.
    assert caught.value.retry_after is not None and 50 <= caught.value.retry_after <= 60


async def test_retry_after_is_capped(raw_server: Callable[[Handler], RawServer]) -> None:
    body = {"error": {"code": "rate_limit_exceeded", "message": "slow", "type": "rate_limit_error"}}
    server = raw_server(json_answer(body, status=429, headers={"Retry-After": "3600"}))
    async with ApiClient(settings_for(server.base_url, max_retry_after_s=5)) as client:
        with pytest.raises(errors.RateLimitedError) as caught:
            await client.complete(chat_body(), stream=False)
    assert caught.value.retry_after == 5.0


# ---------------------------------------------------------------- wire failures


@pytest.mark.parametrize("mode", ["reset", "truncate"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
async def test_dropped_answers_are_transport_errors(
    make_emulator: Callable[..., EmulatorServer], mode: str, stream: bool
) -> None:
    server = make_emulator(drop_rate=1.0, drop_mode=mode)
    async with ApiClient(settings_for(server.base_url)) as client:
        for _ in range(3):
            with pytest.raises(errors.TransportError) as caught:
                await client.complete(chat_body(stream=stream), stream=stream)
            assert caught.value.http_status is None
            assert caught.value.__cause__ is None
    assert server.stats.dropped == 3


async def test_client_recovers_after_drops(make_emulator: Callable[..., EmulatorServer]) -> None:
    server = make_emulator(drop_rate=0.5, seed=3)
    outcomes: list[str] = []
    async with ApiClient(settings_for(server.base_url, max_connections=4)) as client:
        async def one(index: int) -> None:
            try:
                await client.complete(chat_body(f"r{index}"), stream=index % 2 == 0)
                outcomes.append("ok")
            except errors.TransportError:
                outcomes.append("dropped")

        async with anyio.create_task_group() as group:
            for index in range(40):
                group.start_soon(one, index)
    assert outcomes.count("dropped") == server.stats.dropped
    assert outcomes.count("ok") == 40 - server.stats.dropped > 0


async def test_stalled_stream_hits_the_read_timeout(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    server = raw_server(sse_answer([sse(stream_chunk("Hel"))], stall_s=3.0))
    async with ApiClient(settings_for(server.base_url, read_timeout_s=0.3)) as client:
        with anyio.fail_after(2.5):
            with pytest.raises(errors.TransportError, match="read timed out"):
                await client.complete(chat_body(), stream=True)


async def next_request_goes_as_usual(server: RawServer, client: ApiClient) -> None:
    """After a request the client failed on its own timer: the task carries no cancellation
    on, and the next request goes as usual."""
    server.handler = sse_answer(GOOD_EVENTS)
    assert (await client.complete(chat_body(), stream=True)).content == "Hello"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


def paced_answer(events: list[bytes], pause_s: float, stall_s: float = 0.0,
                 headers_after_s: float = 0.0) -> Handler:
    """Each event ``pause_s`` after the one before; then silence for ``stall_s``."""
    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(headers_after_s)
        response = web.StreamResponse()
        response.content_type = "text/event-stream"
        await response.prepare(request)
        for event in events:
            await asyncio.sleep(pause_s)
            await response.write(event)
        if stall_s:
            await asyncio.sleep(stall_s)
        await response.write_eof()
        return response
    return handler


async def test_a_slow_stream_that_keeps_coming_is_not_a_stall(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    # 0.15 s between parts, 1 s in all, against a 0.3 s read timeout: every read counts.
    events = [sse(stream_chunk(str(number))) for number in range(6)] + GOOD_EVENTS
    server = raw_server(paced_answer(events, pause_s=0.15))
    async with ApiClient(settings_for(server.base_url, read_timeout_s=0.3)) as client:
        completion = await client.complete(chat_body(), stream=True)
    assert completion.content == "012345Hello"


async def test_a_stall_after_some_parts_hits_the_read_timeout_soon(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    events = [sse(stream_chunk(str(number))) for number in range(4)]
    server = raw_server(paced_answer(events, pause_s=0.05, stall_s=3.0))
    async with ApiClient(settings_for(server.base_url, read_timeout_s=0.3)) as client:
        started = anyio.current_time()
        with pytest.raises(errors.TransportError, match=r"read timed out: no data for 0.3s"):
            await client.complete(chat_body(), stream=True)
        # the last part at ~0.2 s, then 0.3 s of silence, found within one tick of the watch
        assert anyio.current_time() - started < 0.2 + 0.3 + 0.3
        # the stalled connection is dropped, not handed to the next request
        server.handler = sse_answer(GOOD_EVENTS)
        assert (await client.complete(chat_body(), stream=True)).content == "Hello"
    assert len(server.peers) == 2


async def test_a_stream_kept_open_after_done_is_answered_within_a_tick_or_two(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    # The body never ends on its own (no chunked terminator for 3 s): the reader, waiting
    # for the end of the body, is woken once the stream falls quiet with bytes unread.
    server = raw_server(sse_answer(GOOD_EVENTS, stall_s=3.0))
    async with ApiClient(settings_for(server.base_url, read_timeout_s=0.8)) as client:
        started = anyio.current_time()
        completion = await client.complete(chat_body(), stream=True)
        assert anyio.current_time() - started < 0.8  # two ticks of 0.1 s, not the stall
    assert completion.content == "Hello"
    assert completion.finish_reason == "stop"


async def test_a_long_burst_of_stream_is_not_held_up_by_flow_control(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    # 6 MiB of events at once: more than aiohttp buffers before it stops reading the
    # socket. The watch wakes the reader as unread bytes pile up, so the socket flows.
    piece = "x" * 4000
    events = [sse(stream_chunk(piece)) for _ in range(1500)] + GOOD_EVENTS
    server = raw_server(sse_answer(events))
    async with ApiClient(settings_for(server.base_url, read_timeout_s=2.0)) as client:
        started = anyio.current_time()
        completion = await client.complete(chat_body(), stream=True)
        elapsed = anyio.current_time() - started
    assert completion.content == piece * 1500 + "Hello"
    # Woken every tick of 0.25 s, 2 MiB a tick at most: about a second here. A reader left
    # waiting would be failed as stalled once the socket stops (2 s of no byte).
    assert elapsed < 4.0


async def test_an_empty_stream_body_is_a_truncated_answer(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, body=b"", content_type="text/event-stream")

    server = raw_server(handler)
    async with ApiClient(settings_for(server.base_url)) as client:
        with anyio.fail_after(5):
            with pytest.raises(errors.TransportError, match=r"stream ended before \[DONE\]"):
                await client.complete(chat_body(), stream=True)


class ChunkedBody:
    """A ``SizedBody``: the request's bytes in two chunks (a body with media streams so)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    async def __aiter__(self) -> Any:
        half = self.size // 2
        yield self.data[:half]
        yield self.data[half:]


@pytest.mark.parametrize("chunked", [False, True], ids=["in-memory", "streamed-upload"])
async def test_headers_that_never_come_hit_the_read_timeout(
    raw_server: Callable[[Handler], RawServer], chunked: bool
) -> None:
    # A body in memory is timed by the stall watch from when it began; one sent in chunks (a
    # body with media) keeps aiohttp's read timer, armed when the upload ends.
    def body(text: str) -> bytes | ChunkedBody:
        return ChunkedBody(chat_body(text)) if chunked else chat_body(text)

    server = raw_server(paced_answer(GOOD_EVENTS, pause_s=0.0, headers_after_s=3.0))
    async with ApiClient(settings_for(server.base_url, read_timeout_s=0.3)) as client:
        with anyio.fail_after(2.5):
            with pytest.raises(errors.TransportError,
                               match=r"request failed: read timed out: no data for 0.3s"):
                await client.complete(body("first"), stream=True)
        server.handler = sse_answer(GOOD_EVENTS)
        assert (await client.complete(body("again"), stream=True)).content == "Hello"
    assert orjson.loads(server.requests[-1]["body"])["messages"][0]["content"] == "again"


def stalled_body(status: int, content_type: str, head: bytes, stall_s: float) -> Handler:
    """``head`` of a body, then silence for ``stall_s`` before the rest (never a whole body)."""
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status)
        response.content_type = content_type
        response.content_length = len(head) + 100
        await response.prepare(request)
        await response.write(head)
        await asyncio.sleep(stall_s)
        return response
    return handler


@pytest.mark.parametrize(("status", "content_type", "what"), [
    (200, "application/json", "reading the answer failed"),
    (503, "application/json", "reading the answer failed"),
    (200, "text/html", "reading the answer failed"),
])
async def test_a_body_that_stalls_hits_the_read_timeout_whatever_its_kind(
    raw_server: Callable[[Handler], RawServer], status: int, content_type: str, what: str
) -> None:
    # The watch times every body of an in-memory request, not only event streams: a JSON
    # answer, an error's body, a proxy's page.
    server = raw_server(stalled_body(status, content_type, b'{"choices": [', stall_s=3.0))
    async with ApiClient(settings_for(server.base_url, read_timeout_s=0.3)) as client:
        started = anyio.current_time()
        with anyio.fail_after(2.5):
            with pytest.raises(errors.TransportError,
                               match=rf"{what}: read timed out: no data for 0.3s"):
                await client.complete(chat_body(), stream=False)
        assert anyio.current_time() - started < 0.3 + 0.9  # the watch, not a later timer
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_headers_that_never_come_to_a_plain_request_hit_the_read_timeout(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    server = raw_server(paced_answer(GOOD_EVENTS, pause_s=0.0, headers_after_s=3.0))
    async with ApiClient(settings_for(server.base_url, read_timeout_s=0.3)) as client:
        started = anyio.current_time()
        with pytest.raises(errors.TransportError,
                           match=r"request failed: read timed out: no data for 0.3s"):
            await client.complete(chat_body(), stream=False)
        assert anyio.current_time() - started < 0.3 + 0.9  # the watch, not a later timer
        await next_request_goes_as_usual(server, client)


async def test_a_request_waiting_for_a_pooled_connection_is_not_a_stall(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    # One connection, two requests: the second waits out the first's slow (never stalled)
    # stream, longer than the read timeout. Its wait for the headers starts when it is sent.
    slow = [sse(stream_chunk(str(number))) for number in range(6)] + GOOD_EVENTS
    answers = iter([paced_answer(slow, pause_s=0.15), sse_answer(GOOD_EVENTS)])

    async def handler(request: web.Request) -> web.StreamResponse:
        return await next(answers)(request)

    server = raw_server(handler)
    settings = settings_for(server.base_url, read_timeout_s=0.3, max_connections=1)
    contents: list[str] = []

    async def one(text: str) -> None:
        contents.append((await client.complete(chat_body(text), stream=True)).content)

    async with ApiClient(settings) as client, anyio.create_task_group() as group:
        group.start_soon(one, "first")
        await anyio.sleep(0.05)
        group.start_soon(one, "second")
    assert contents == ["012345Hello", "Hello"]


async def test_streams_on_one_connection_after_a_stream_keep_their_read_timeout(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    answers = iter([sse_answer(GOOD_EVENTS), sse_answer([sse(stream_chunk("Hel"))],
                                                         stall_s=3.0)])

    async def handler(request: web.Request) -> web.StreamResponse:
        return await next(answers)(request)

    server = raw_server(handler)
    settings = settings_for(server.base_url, read_timeout_s=0.3, max_connections=1)
    async with ApiClient(settings) as client:
        assert (await client.complete(chat_body(), stream=True)).content == "Hello"
        with anyio.fail_after(2.5):
            with pytest.raises(errors.TransportError, match="read timed out"):
                await client.complete(chat_body(), stream=True)


async def test_headers_that_come_too_late_hit_the_request_timeout(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    server = raw_server(paced_answer(GOOD_EVENTS, pause_s=0.0, headers_after_s=3.0))
    settings = settings_for(server.base_url, read_timeout_s=5.0, request_timeout_s=0.3)
    async with ApiClient(settings) as client:
        with anyio.fail_after(2.5):
            with pytest.raises(errors.TransportError,
                               match=r"request failed: request timed out: no complete answer "
                                     r"within 0.3s"):
                await client.complete(chat_body(), stream=True)
        await next_request_goes_as_usual(server, client)


async def test_a_trickling_stream_hits_the_request_timeout(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    events = [sse(stream_chunk(str(number))) for number in range(40)]
    server = raw_server(paced_answer(events, pause_s=0.05))
    settings = settings_for(server.base_url, read_timeout_s=5.0, request_timeout_s=0.4)
    async with ApiClient(settings) as client:
        started = anyio.current_time()
        with pytest.raises(errors.TransportError,
                           match=r"reading the answer failed: request timed out"):
            await client.complete(chat_body(), stream=True)
        assert anyio.current_time() - started < 0.4 + 0.3


async def test_a_cancelled_request_is_cancelled_not_timed_out(
    raw_server: Callable[[Handler], RawServer]
) -> None:
    server = raw_server(paced_answer(GOOD_EVENTS, pause_s=0.0, headers_after_s=3.0))
    settings = settings_for(server.base_url, request_timeout_s=0.5)
    async with ApiClient(settings) as client:
        with anyio.move_on_after(0.2) as scope:  # the run's own cancel, before the deadline
            await client.complete(chat_body(), stream=True)
        assert scope.cancelled_caught
        await anyio.sleep(0.6)  # the deadline passes: nothing is cancelled any more


async def test_reset_mid_stream(raw_server: Callable[[Handler], RawServer]) -> None:
    server = raw_server(sse_answer([sse(stream_chunk("Hel"))], abort=True))
    async with ApiClient(settings_for(server.base_url)) as client:
        with pytest.raises(errors.TransportError):
            await client.complete(chat_body(), stream=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused() -> None:
    settings = settings_for(f"http://127.0.0.1:{free_port()}/v1", connect_timeout_s=2)
    async with ApiClient(settings) as client:
        with pytest.raises(errors.TransportError, match="cannot connect") as caught:
            await client.complete(chat_body(), stream=True)
        with pytest.raises(errors.TransportError):
            await client.get_credits()
    assert KEY not in str(caught.value)


# ---------------------------------------------------------------- the key stays secret


async def test_key_never_appears_in_errors(
    make_emulator: Callable[..., EmulatorServer], raw_server: Callable[[Handler], RawServer]
) -> None:
    echo = {"error": {"code": "invalid_api_key", "type": "authentication_error",
                      "message": f"Incorrect API key provided: {KEY}"}}
    stream_echo = {"error": {"code": "upstream_error", "message": f"bad key {KEY} upstream"}}
    sources = [
        raw_server(json_answer(echo, status=401)).base_url,
        raw_server(sse_answer([sse(stream_echo)])).base_url,
        raw_server(sse_answer([f"data: {KEY}\n\n".encode()])).base_url,
        raw_server(sse_answer([sse(stream_chunk(KEY))])).base_url,  # truncated
        raw_server(sse_answer([sse(stream_chunk("x"))], stall_s=2.0)).base_url,
        raw_server(sse_answer([], abort=True)).base_url,
        make_emulator(drop_rate=1.0, drop_mode="reset").base_url,
        make_emulator(drop_rate=1.0, drop_mode="truncate").base_url,
        make_emulator(fail_503=1.0).base_url,
        make_emulator(deny_ip=True).base_url,
        f"http://127.0.0.1:{free_port()}/v1",
        "http://batchrun-test.invalid/v1",  # DNS failure
    ]
    caught: list[BaseException] = []
    for base_url in sources:
        async with ApiClient(settings_for(base_url, read_timeout_s=0.3,
                                          connect_timeout_s=2)) as client:
            assert KEY not in repr(client) and KEY not in repr(client.settings)
            for stream in (True, False):
                try:
                    await client.complete(chat_body(stream=stream), stream=stream)
                except errors.BatchrunError as error:
                    caught.append(error)
    assert len(caught) == 2 * len(sources)
    for exc in caught:
        assert isinstance(exc, errors.BatchrunError)
        texts = [str(exc), repr(exc), exc.message, *map(str, exc.args)]
        chained = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if chained is not None:
            texts += [str(chained), repr(chained)]
        for text in texts:
            assert KEY not in text, text
    assert any("sk-…" in str(exc) for exc in caught)


def test_mask_key() -> None:
    assert mask_key(f"key {KEY} and {KEY}", KEY) == "key sk-…CRET and sk-…CRET"
    assert mask_key("nothing here", KEY) == "nothing here"
    assert mask_key("anything", "") == "anything"
    assert mask_key("short sk-abc", "sk-abc") == "short sk-…"


# ---------------------------------------------------------------- credits


async def test_get_credits_from_the_emulator(make_emulator: Callable[..., EmulatorServer]) -> None:
    server = make_emulator(balance=12.5)
    async with ApiClient(settings_for(server.base_url)) as client:
        assert await client.get_credits() == 12.5
        await client.complete(chat_body(), stream=True)
        balance = await client.get_credits()
        assert balance is not None and balance < 12.5


async def test_get_credits_unlimited_and_bad_key(emulator: EmulatorServer) -> None:
    async with ApiClient(settings_for(emulator.base_url)) as client:
        assert await client.get_credits() is None  # the emulator's default: no balance
    async with ApiClient(settings_for(emulator.base_url, api_key="nope")) as client:
        with pytest.raises(errors.AuthenticationError):
            await client.get_credits()


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (200, {"balance": 3.25}, 3.25),
        (200, {"data": {"credits": "7.5"}}, 7.5),
        (200, {"object": "credits", "credits": None}, None),
        (404, {"error": {"code": "not_found", "message": "no"}}, None),
        (500, {"error": {"code": "internal_error", "message": "no"}}, None),
    ],
)
async def test_get_credits_shapes_over_http(
    raw_server: Callable[[Handler], RawServer], status: int, payload: Any,
    expected: float | None,
) -> None:
    server = raw_server(json_answer(payload, status=status))
    async with ApiClient(settings_for(server.base_url)) as client:
        assert await client.get_credits() == expected
    assert server.requests[0]["path"] == "/v1/credits"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"credits": 10}, 10.0), ({"balance": 0}, 0.0), ({"data": {"balance": 2.5}}, 2.5),
        ({"data": {"credits": {"balance": 4}}}, 4.0), ({"credits": "unlimited"}, None),
        ({"credits": -1}, None), ({"credits": True}, None), ({"unknown": 5}, None),
        ([1, 2], None), ({"total_available": 18.0}, 18.0), ({"credits": float("inf")}, None),
    ],
)
def test_balance_from_payload(payload: Any, expected: float | None) -> None:
    assert balance_from_payload(payload) == expected


_DEEP = b"[" * 1000 + b"]" * 1000  # orjson reads it (1,024 levels); Python cannot print it


@pytest.mark.parametrize("stream", [True, False])
async def test_an_answer_nested_too_deeply_is_a_transport_error_not_a_crash(
    raw_server: Callable[[Handler], RawServer], stream: bool
) -> None:
    if stream:
        events = [sse(stream_chunk("Hi")),
                  b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": ' + _DEEP
                  + b"}]}\n\n", b"data: [DONE]\n\n"]
        handler = sse_answer(events)
    else:
        body = (b'{"id": "c1", "choices": [{"index": 0, "message": {"content": "Hi"}, '
                b'"finish_reason": ' + _DEEP + b"}]}")

        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(body=body, content_type="application/json")
    server = raw_server(handler)
    async with ApiClient(settings_for(server.base_url)) as client:
        with pytest.raises(errors.TransportError, match="nested too deeply"):
            await client.complete(chat_body(), stream=stream)
