"""What the emulator puts on the wire: error bodies, credits, JSON answers and SSE events (pure)."""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
from aiohttp import web

from batchrun.emulator.model import ChatRequest, Reply

# The gateway's price (credits per million tokens, https://api.aivideoapi.ai), written out
# here rather than read from cost/catalog.py so that the emulator stays an independent oracle.
INPUT_CREDITS_PER_M = 160.0
OUTPUT_CREDITS_PER_M = 960.0

# The gateway's error table (its API reference, https://api.aivideoapi.ai):
# code -> (HTTP status, type).
ERROR_TABLE: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "invalid_api_key": (401, "authentication_error"),
    "insufficient_credits": (402, "billing_error"),
    "ip_not_allowed": (403, "permission_error"),
    "model_not_found": (404, "invalid_request_error"),
    "task_not_found": (404, "invalid_request_error"),
    "rate_limit_exceeded": (429, "rate_limit_error"),
    "spend_limit_exceeded": (429, "billing_error"),
    "internal_error": (500, "api_error"),
    "upstream_error": (503, "upstream_error"),
}


def error_response(code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The gateway's error body ``{"error": {"code", "message", "type"}}`` with its status."""
    status, error_type = ERROR_TABLE[code]
    body = orjson.dumps({"error": {"code": code, "message": message, "type": error_type}})
    return web.Response(status=status, body=body, content_type="application/json",
                        headers=headers)


def credits_for(prompt_tokens: int, completion_tokens: int, rounding: int | None) -> float:
    """The gateway's billing: prompt × 160/1M + completion × 960/1M; reasoning is not billed."""
    raw = (prompt_tokens * INPUT_CREDITS_PER_M + completion_tokens * OUTPUT_CREDITS_PER_M) / 1e6
    return round(raw, 10 if rounding is None else rounding)  # 10 places only kill float noise


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _pieces(text: str, parts: int = 6) -> list[str]:
    """Split into a few pieces; boundaries may fall inside a <thought> tag on purpose."""
    if not text:
        return []
    size = max(16, math.ceil(len(text) / parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _even_pieces(text: str, count: int) -> list[str]:
    """Exactly ``count`` pieces of near-equal length (fewer only when the text is shorter)."""
    bounds = [round(i * len(text) / count) for i in range(count + 1)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _spread(items: list[bytes], count: int) -> list[list[bytes]]:
    """``items`` in order over ``count`` groups of near-equal size."""
    bounds = [round(i * len(items) / count) for i in range(count + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


class Answer:
    """One successful answer, rendered as JSON or as SSE events."""

    def __init__(
        self,
        chat: ChatRequest,
        reply: Reply,
        body_sha: str,
        thoughts_style: str = "field",
        credits_rounding: int | None = None,
        with_usage: bool = True,
    ) -> None:
        self.reply = reply
        self.id = "chatcmpl-" + body_sha[:32]
        self.created = int(time.time())
        # The gateway answers with the upstream model's version, which may carry a suffix
        # (its reference's example says gemini-3.1-pro-preview).
        self.model = chat.model + "-preview"
        self.style = thoughts_style
        # False: a complete answer that carries neither usage nor credits_consumed (a fault).
        self.with_usage = with_usage
        self.credits = credits_for(chat.prompt_tokens, reply.completion_tokens, credits_rounding)
        self.usage = {
            "prompt_tokens": chat.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            # The total includes reasoning (the reference's example: 194 + 229 + 457 = 880).
            "total_tokens": chat.prompt_tokens + reply.completion_tokens + reply.reasoning_tokens,
            # text_tokens is 0 in the API reference's example too.
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": 0,
                "text_tokens": 0,
            },
        }

    def _content(self) -> str:
        if self.style == "tag" and self.reply.thoughts:
            return f"<thought>{self.reply.thoughts}</thought>{self.reply.content}"
        return self.reply.content

    def json_body(self) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": self._content()}
        if self.style == "field" and self.reply.thoughts:
            message["reasoning_content"] = self.reply.thoughts
        if self.reply.annotations:
            message["annotations"] = self.reply.annotations
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "finish_reason": self.reply.finish_reason, "message": message}
            ],
        }
        if self.with_usage:
            body["usage"] = self.usage
            body["credits_consumed"] = self.credits
        return orjson.dumps(body)

    def sse_events(self) -> list[bytes]:
        """role delta, keep-alive, thought and content deltas, usage chunk, [DONE]."""
        thoughts = _pieces(self.reply.thoughts, 2)
        content = _pieces(self._content()) or [""]
        return [*self._head(), *self._deltas(thoughts, content), *self._tail()]

    def sse_parts(self, parts: int) -> list[list[bytes]]:
        """The same stream in ``parts`` groups, as a gateway streams while the model works:
        the first opens with the role delta, the last closes with finish_reason, usage and
        [DONE]; thought and content deltas are spread over all of them in order (thoughts
        first). Thoughts and content are each cut into ``parts`` pieces, so every part
        carries text unless the answer is shorter than ``parts`` characters."""
        thoughts = _even_pieces(self.reply.thoughts, parts)
        content = _even_pieces(self._content(), parts) or [""]
        groups = _spread(self._deltas(thoughts, content), parts)
        groups[0][:0] = self._head()
        groups[-1].extend(self._tail())
        return groups

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def _head(self) -> list[bytes]:
        return [self._chunk({"role": "assistant", "content": ""}), b": keep-alive\n\n"]

    def _deltas(self, thoughts: list[str], content: list[str]) -> list[bytes]:
        """Thought deltas (field style only), then content deltas; finish_reason on the last."""
        events = []
        if self.style == "field" and self.reply.thoughts:
            events += [self._chunk({"reasoning_content": piece}) for piece in thoughts]
        events += [self._chunk({"content": piece}) for piece in content[:-1]]
        last: dict[str, Any] = {"content": content[-1]}
        if self.reply.annotations:
            last["annotations"] = self.reply.annotations
        events.append(self._chunk(last, self.reply.finish_reason))
        return events

    def _tail(self) -> list[bytes]:
        events = []
        if self.with_usage:
            events.append(_sse(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": self.usage,
                    "credits_consumed": self.credits,
                }
            ))
        events.append(b"data: [DONE]\n\n")
        return events

