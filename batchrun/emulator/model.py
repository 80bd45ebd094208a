"""The emulator's fake model: request validation, prompt tokens and a deterministic reply (pure).

Nothing here touches a socket: ``parse_chat_request`` takes the raw body and returns a
``ChatRequest`` or raises ``BadRequest`` with a 400 message in the gateway's style;
``synthesize_reply`` derives content, thoughts and token counts from the sha256 of the
canonical messages, so the same request always gets the same answer.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun.emulator.media import IMAGE_TOKENS, MediaRejected, decode_data_url, media_tokens
from batchrun.emulator.structured import find_schema, json_answer

# Role markers and turn separators of a chat template cost a few tokens per message.
PER_MESSAGE_TOKENS = 4
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
EFFORTS = ("low", "high")
SEARCH_TOOL_NAMES = frozenset({"googleSearch", "google_search"})

_WORD_TEXT = (
    "the model considers each part of the question and answers with care about data tokens "
    "batch request stream media image audio video page cost credit limit retry result journal "
    "parquet manifest emulator gateway latency budget resume window usage reasoning summary "
    "forecast weather city temperature cloudy clear evening morning detail point list step"
)
_WORDS = _WORD_TEXT.split()
_FILLER_RNG = random.Random(20260417)
# A fixed text to cut replies from: building each reply is then one slice, not a loop.
_FILLER = " ".join(_FILLER_RNG.choice(_WORDS) for _ in range(4000)) + ". "


class BadRequest(ValueError):
    """The body breaks the API contract: 400 invalid_request with this message."""


@dataclass
class ChatRequest:
    """What the emulator needs from a valid body."""

    model: str
    messages: list[Any]
    # The gateway's defaults (its API reference, https://api.aivideoapi.ai): it streams,
    # includes thoughts and reasons with high effort unless told otherwise.
    stream: bool = True
    include_thoughts: bool = True
    reasoning_effort: str = "high"
    google_search: bool = False
    max_tokens: int | None = None
    prompt_tokens: int = 0
    last_user_text: str = ""
    media: list[tuple[str, int]] = field(default_factory=list)  # (mime, decoded bytes)
    output_schema: dict[str, Any] | None = None  # asked for JSON fitting it (``structured``)
    include_usage: bool = False  # stream_options.include_usage (OpenAI's way to ask for usage)


@dataclass
class Reply:
    """The fake model's answer to one request."""

    content: str
    thoughts: str
    completion_tokens: int
    reasoning_tokens: int
    finish_reason: str
    annotations: list[dict[str, Any]] = field(default_factory=list)


def text_tokens(text: str, chars_per_token: float) -> int:
    return math.ceil(len(text) / chars_per_token) if text else 0


def parse_chat_request(body: bytes, chars_per_token: float = 4.0) -> ChatRequest:
    """Validate a /v1/chat/completions body and count its prompt tokens."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("Request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object.")
    model = data.get("model")
    if model is None or model == "":
        raise BadRequest("'model' is required.")  # the gateway's own message
    if not isinstance(model, str):
        raise BadRequest("'model' must be a string.")
    messages = data.get("messages")
    if messages is None:
        raise BadRequest("'messages' is required.")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.")
    request = ChatRequest(model=model, messages=messages)
    for name in ("stream", "include_thoughts"):
        value = data.get(name)
        if value is not None:
            if not isinstance(value, bool):
                raise BadRequest(f"'{name}' must be a boolean.")
            setattr(request, name, value)
    effort = data.get("reasoning_effort")
    if effort is not None:
        if effort not in EFFORTS:
            raise BadRequest("'reasoning_effort' must be 'low' or 'high'.")
        request.reasoning_effort = effort
    request.google_search = _parse_tools(data.get("tools"))
    request.output_schema = find_schema(data)
    stream_options = data.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise BadRequest("'stream_options' must be an object.")
        include = stream_options.get("include_usage", False)
        if not isinstance(include, bool):
            raise BadRequest("'stream_options.include_usage' must be a boolean.")
        request.include_usage = include
    # The gateway's reference is silent on max_tokens; honoured as OpenAI does
    # (finish_reason "length").
    for name in ("max_completion_tokens", "max_tokens"):
        value = data.get(name)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadRequest(f"'{name}' must be a positive integer.")
            request.max_tokens = value
    for index, message in enumerate(messages):
        request.prompt_tokens += _message_tokens(request, index, message, chars_per_token)
    return request


def _parse_tools(tools: Any) -> bool:
    if tools is None:
        return False
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array.")
    for tool in tools:
        if not isinstance(tool, dict):
            raise BadRequest("'tools' entries must be objects.")
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if name not in SEARCH_TOOL_NAMES and not SEARCH_TOOL_NAMES.intersection(tool):
            raise BadRequest("Only the googleSearch tool is supported.")
    return bool(tools)


def _message_tokens(request: ChatRequest, index: int, message: Any, cpt: float) -> int:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise BadRequest(f"{where} must be an object.")
    role = message.get("role")
    if role not in ROLES:
        raise BadRequest(f"{where}.role must be one of {', '.join(sorted(ROLES))}.")
    content = message.get("content")
    tokens = PER_MESSAGE_TOKENS
    if isinstance(content, str):
        if role == "user":
            request.last_user_text = content
        return tokens + text_tokens(content, cpt)
    if content is None and role == "assistant":
        return tokens
    if not isinstance(content, list) or not content:
        raise BadRequest(f"{where}.content must be a string or a non-empty array of parts.")
    first_text = None
    for part_index, part in enumerate(content):
        part_where = f"{where}.content[{part_index}]"
        if not isinstance(part, dict):
            raise BadRequest(f"{part_where} must be an object.")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest(f"{part_where}.text must be a string.")
            first_text = text if first_text is None else first_text
            tokens += text_tokens(text, cpt)
        elif kind == "image_url":
            tokens += _media_part_tokens(request, part_where, part.get("image_url"))
        else:
            raise BadRequest(
                f"{part_where}.type {kind!r} is not supported; use 'text', or 'image_url' "
                "for every media type (image, video, audio, PDF)."
            )
    if role == "user" and first_text is not None:
        request.last_user_text = first_text
    return tokens


def _media_part_tokens(request: ChatRequest, where: str, image_url: Any) -> int:
    url = image_url.get("url") if isinstance(image_url, dict) else None
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.image_url must be an object with a 'url' string.")
    if url.startswith(("https://", "http://")):
        return IMAGE_TOKENS  # not fetched: counted as one image
    if not url.startswith("data:"):
        raise BadRequest(f"{where}.image_url.url must be an http(s) URL or a base64 data URL.")
    try:
        mime, data = decode_data_url(url)
        tokens = media_tokens(mime, data)
    except MediaRejected as exc:
        raise BadRequest(f"{where}.image_url.url: {exc}.") from None
    request.media.append((mime, len(data)))
    return tokens


def messages_digest(messages: list[Any]) -> bytes:
    """sha256 of the canonical (key-sorted, compact) JSON of the messages."""
    return hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).digest()


def cut_short(request: ChatRequest, rate: float, match: str | None) -> bool:
    """Whether this request's answer ends with finish_reason "length": when its last user text
    holds ``match``, or for a share ``rate`` of requests drawn from its messages' digest (so
    the same request is cut again, as a model at its output limit would be)."""
    if match and match in request.last_user_text:
        return True
    if rate <= 0:
        return False
    draw = int.from_bytes(messages_digest(request.messages)[8:16], "big") / 2**64
    return draw < rate


def synthesize_reply(request: ChatRequest, chars_per_token: float = 4.0, *,
                     cut: bool = False, bad_json_rate: float = 0.0) -> Reply:
    """The deterministic answer: same messages and effort → same content and token counts.
    ``cut``: the answer stops halfway with finish_reason "length". A request that asks for
    JSON of a schema gets JSON (a share ``bad_json_rate`` of it badly formed: ``structured``)."""
    digest = messages_digest(request.messages)
    number = int.from_bytes(digest[:8], "big")
    completion_tokens = 20 + number % 381  # 20..400
    if cut:
        completion_tokens = max(1, completion_tokens // 2)
    if request.reasoning_effort == "high":
        reasoning_tokens = 300 + (number >> 16) % 1700  # 300..1999
    else:
        # Low effort sometimes skips thinking altogether; otherwise thinks less than high.
        reasoning_tokens = 0 if (number >> 24) % 5 == 0 else 20 + (number >> 16) % 280
    echo = " ".join(request.last_user_text.split())[:48]
    tag = digest[:4].hex()
    head = f"Emulated answer {tag} to: {echo}. " if echo else f"Emulated answer {tag}. "
    finish_reason = "length" if cut else "stop"
    if request.max_tokens is not None and completion_tokens > request.max_tokens:
        completion_tokens, finish_reason = request.max_tokens, "length"
    if request.output_schema is not None:
        content = json_answer(request.output_schema, number, bad_json_rate)
        completion_tokens = max(1, math.ceil(len(content) / chars_per_token))
    else:
        length = max(1, round(completion_tokens * chars_per_token))
        content = _cut(head, length, (number >> 32) % 8000)
    thoughts = ""
    if reasoning_tokens and request.include_thoughts:
        thoughts = (
            f"Thinking ({request.reasoning_effort} effort) about {echo or 'the request'}: "
            f"plan {1 + number % 5} steps, then answer."
        )
    annotations: list[dict[str, Any]] = []
    if request.google_search:
        # The gateway's reference shows no grounding output; OpenAI's url_citation shape is used.
        end = min(len(content), len(head))
        annotations.append(
            {
                "type": "url_citation",
                "url_citation": {
                    "url": f"https://example.com/search/{tag}",
                    "title": f"Search result {tag}",
                    "start_index": 0,
                    "end_index": end,
                },
            }
        )
    return Reply(content, thoughts, completion_tokens, reasoning_tokens, finish_reason, annotations)


def _cut(head: str, length: int, start: int) -> str:
    if len(head) >= length:
        return head[:length]
    start = _FILLER.index(" ", start) + 1  # begin on a word
    need = length - len(head)
    body = _FILLER[start : start + need]
    while len(body) < need:
        body += _FILLER[: need - len(body)]
    return head + body
