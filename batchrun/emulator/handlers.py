"""The emulator's request handlers: chat completions, credits, the unknown routes and the
``/_emulator/*`` control endpoints. ``server`` builds the app from them and serves it; the
choices they make where the gateway's API reference is silent are listed in ``server``'s docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math

import orjson
from aiohttp import web

from batchrun.emulator.faults import (
    early_eof_json,
    half_of,
    not_json_200,
    proxy_502,
    stalled_json,
    write_quietly,
)
from batchrun.emulator.model import (
    BadRequest,
    ChatRequest,
    cut_short,
    parse_chat_request,
    synthesize_reply,
)
from batchrun.emulator.render import Answer, error_response
from batchrun.emulator.state import EmulatorState, EmulatorStats, apply_config

CHAT_PATH = "/v1/chat/completions"
CREDITS_PATH = "/v1/credits"
STATE_KEY = web.AppKey("batchrun_emulator_state", EmulatorState)


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    stats = state.stats
    stats.requests_total += 1
    if state.config.count_by_second:
        stats.requests_by_second[int(state.elapsed_s())] += 1
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    try:
        return await _chat_inner(request, state)
    except ConnectionResetError:
        # The client went away mid-answer (killed, timed out): nothing to answer, no traceback.
        raise web.HTTPBadRequest() from None
    finally:
        stats.in_flight -= 1


async def _chat_inner(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    config, stats = state.config, state.stats
    # Read the whole body first so that an early error never races the client's upload.
    try:
        body: bytes | None = await request.read()
    except web.HTTPRequestEntityTooLarge:
        body = None
    revoked = config.revoke_after is not None and stats.requests_total > config.revoke_after
    denied = state.access_error(request, revoked)
    if denied is not None:
        if revoked:
            stats.faults["revoked"] += 1
        return _count(stats, denied)
    wait = state.rate_wait()
    if wait > 0:
        stats.faults["rpm"] += 1
        headers = {
            "Retry-After": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        }
        if config.rate_headers:
            headers["x-ratelimit-limit-requests"] = str(int(state.current_rpm() or 0))
            headers["x-ratelimit-remaining-requests"] = "0"
        return _count(stats, error_response(
            "rate_limit_exceeded", "Too many requests, please slow down.", headers))
    if config.balance is not None and config.balance <= 0:
        stats.faults["no_credits"] += 1
        return _count(stats, error_response(
            "insufficient_credits", "Your credit balance is too low. Please top up."))
    if config.spend_limit is not None and stats.credits_billed >= config.spend_limit:
        stats.faults["spend_limit"] += 1
        return _count(stats, error_response(
            "spend_limit_exceeded", "Key spend limit reached (hourly/daily/total)."))
    if body is None or len(body) > config.max_body_mb * 1e6:
        return _count(stats, error_response(
            "invalid_request", f"Request body exceeds {config.max_body_mb:g} MB."))
    try:
        chat = parse_chat_request(body, config.chars_per_token)
    except BadRequest as exc:
        return _count(stats, error_response("invalid_request", str(exc)))
    stats.models_requested[chat.model] += 1
    if config.record_requests:
        stats.requests_seen.append(orjson.loads(body))
    if chat.model not in config.models:
        return _count(stats, error_response(
            "model_not_found", f"Model '{chat.model}' does not exist or is inactive."))
    fault = state.draw_fault()
    if fault == "429":
        # The shared gateway's own refusal, before calling upstream: it says nothing of the
        # caller's rate, so no x-ratelimit-* headers, only its Retry-After style.
        return _count(stats, error_response(
            "rate_limit_exceeded", "Too many requests, please slow down.",
            state.retry_after_headers()))
    delay = state.delay_s()
    pace = 0.0
    if chat.stream and config.stream_parts > 0 and fault in _STREAMED:
        # A streamed answer spends the latency across its parts; the first one's share now.
        pace = delay / config.stream_parts
        await asyncio.sleep(pace)
    elif delay > 0:
        await asyncio.sleep(delay)
    if fault == "503":
        return _count(stats, error_response(
            "upstream_error", "Upstream AI provider returned an error."))
    if fault == "500":
        return _count(stats, error_response("internal_error", "Unexpected server error."))
    if fault == "502":
        return _count(stats, proxy_502())
    if fault == "not_json":
        return _count(stats, not_json_200())
    if fault == "reset":
        stats.by_status[0] += 1
        stats.dropped += 1
        _abort(request)
        # Writing this to the aborted transport fails quietly inside aiohttp.
        return web.Response()
    body_sha = hashlib.sha256(body).hexdigest()
    answer = Answer(
        chat,
        synthesize_reply(chat, config.chars_per_token,
                         cut=cut_short(chat, config.length_rate, config.length_match),
                         bad_json_rate=config.bad_json_rate),
        body_sha,
        config.thoughts_style,
        config.credits_rounding,
        with_usage=fault != "no_usage" and not (
            config.strict_stream_usage and chat.stream and not chat.include_usage),
    )
    rate_headers = {}
    limit = state.current_rpm()
    if limit and config.rate_headers:
        # The limit in force when the answer starts (a schedule may have stepped meanwhile).
        rate_headers["x-ratelimit-limit-requests"] = str(int(limit))
        rate_headers["x-ratelimit-remaining-requests"] = str(int(state.bucket_tokens or 0))
    if chat.stream:
        return await _send_stream(request, state, answer, chat, body_sha, rate_headers, fault,
                                  pace)
    payload = answer.json_body()
    stats.by_status[200] += 1
    state.bill(answer.credits, body_sha, chat)
    if fault == "stall":
        return await stalled_json(request, rate_headers, payload, config.stall_s)
    if fault == "early_eof":
        return await early_eof_json(request, rate_headers, payload)
    if fault != "truncate":
        return web.Response(body=payload, content_type="application/json", headers=rate_headers)
    stats.dropped += 1
    response = web.StreamResponse(headers=rate_headers)
    response.content_type = "application/json"
    response.content_length = len(payload)
    await response.prepare(request)
    await response.write(payload[: len(payload) // 2])
    _abort(request)
    return response


# The faults answered by a stream (an answer, whole or cut): the ones ``stream_parts`` paces.
_STREAMED = frozenset({None, "no_usage", "truncate", "early_eof", "stall"})
# A stream as writes: (seconds to wait before, events written together).
Steps = list[tuple[float, list[bytes]]]


def _stream_steps(answer: Answer, parts: int, pace: float) -> Steps:
    """The whole answer in one write, or in ``parts`` writes ``pace`` seconds apart (the
    first one's wait is already spent: it came before the headers)."""
    if parts <= 0:
        return [(0.0, answer.sse_events())]
    return [(0.0 if index == 0 else pace, part)
            for index, part in enumerate(answer.sse_parts(parts))]


def _cut_steps(steps: Steps, cut: int) -> tuple[Steps, Steps]:
    """The steps before event number ``cut`` and those after, the step holding it split."""
    head: Steps = []
    tail: Steps = []
    seen = 0
    for wait, events in steps:
        if seen + len(events) <= cut:
            head.append((wait, events))
        elif seen >= cut:
            tail.append((wait, events))
        else:
            head.append((wait, events[: cut - seen]))
            tail.append((0.0, events[cut - seen :]))
        seen += len(events)
    return head, tail


async def _play(request: web.Request, response: web.StreamResponse, steps: Steps,
                chunk_delay: float = 0.0) -> bool:
    """Write ``steps`` at their pace (event by event with a pause after each when
    ``chunk_delay``); False once the client has gone."""
    for wait, events in steps:
        if wait > 0:
            await asyncio.sleep(wait)
        if chunk_delay <= 0:
            if not await write_quietly(request, response, b"".join(events)):
                return False
            continue
        for event in events:
            if not await write_quietly(request, response, event):
                return False
            await asyncio.sleep(chunk_delay)
    return True


async def _send_stream(
    request: web.Request,
    state: EmulatorState,
    answer: Answer,
    chat: ChatRequest,
    body_sha: str,
    headers: dict[str, str],
    fault: str | None,
    pace: float = 0.0,
) -> web.StreamResponse:
    stats, config = state.stats, state.config
    response = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream; charset=utf-8",
                 "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    stats.by_status[200] += 1
    state.bill(answer.credits, body_sha, chat)
    steps = _stream_steps(answer, config.stream_parts, pace)
    if fault in ("truncate", "early_eof", "stall"):
        # Role delta, keep-alive and about half the content; never usage nor [DONE].
        head, tail = _cut_steps(steps, half_of([e for _, events in steps for e in events]))
        return await _send_cut(request, response, state, fault, head, tail)
    if await _play(request, response, steps, config.chunk_delay_ms / 1000.0):
        await response.write_eof()
    return response


async def _send_cut(request: web.Request, response: web.StreamResponse, state: EmulatorState,
                    fault: str | None, head: Steps, tail: Steps) -> web.StreamResponse:
    """The half-answer faults: reset after the head (truncate), a clean end after it
    (early_eof), or silence for ``stall_s`` between head and tail (stall)."""
    if fault == "truncate":
        state.stats.dropped += 1
        await _play(request, response, head)
        _abort(request)
        return response
    if not await _play(request, response, head):
        return response
    if fault == "stall":
        await asyncio.sleep(state.config.stall_s)
        if not await _play(request, response, tail):
            return response
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


def _count(stats: EmulatorStats, response: web.Response) -> web.Response:
    stats.by_status[response.status] += 1
    return response


async def get_credits(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    limit = state.config.revoke_after
    revoked = limit is not None and state.stats.requests_total >= limit
    denied = state.access_error(request, revoked)
    if denied is not None:
        return denied
    body = orjson.dumps({"object": "credits", "credits": state.config.balance})
    return web.Response(body=body, content_type="application/json")


async def not_found(request: web.Request) -> web.Response:
    if request.path in (CHAT_PATH, CREDITS_PATH) or request.path.startswith("/_emulator/"):
        message = f"Method {request.method} is not allowed on {request.path}."
    else:
        message = f"Unknown route {request.method} {request.path}."
    status, code = (405, "method_not_allowed") if "not allowed" in message else (404, "not_found")
    body = {"error": {"code": code, "message": message, "type": "invalid_request_error"}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


# --- control endpoints (no auth: the emulator only listens where the tests are) ---------------


async def get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    # clock_s: where the schedule's clock (and requests_by_second) stands as this answers.
    snapshot = {**state.stats.snapshot(), "balance": state.config.balance,
                "clock_s": round(state.elapsed_s(), 3)}
    return web.Response(body=orjson.dumps(snapshot), content_type="application/json")


async def get_config(request: web.Request) -> web.Response:
    config = request.app[STATE_KEY].config
    return web.Response(body=orjson.dumps(config.to_dict()), content_type="application/json")


async def post_config(request: web.Request) -> web.Response:
    config = request.app[STATE_KEY].config
    try:
        changes = orjson.loads(await request.read())
        if not isinstance(changes, dict):
            raise ValueError("send a JSON object of config fields")
        apply_config(config, changes)
    except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        return error_response("invalid_request", str(exc))
    return web.Response(body=orjson.dumps(config.to_dict()), content_type="application/json")


async def post_reset(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.stats.reset()
    state.reset()
    return web.Response(body=orjson.dumps(state.stats.snapshot()),
                        content_type="application/json")
