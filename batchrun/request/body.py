"""Row + JobSpec → chat-completions request body (pure, apart from the media resolver).

Field order is fixed (model, messages, stream, include_thoughts, reasoning_effort, tools, then
``extra_body``), so the same row and job always encode to the same bytes and sha256.

A row's own settings (``Row.settings``: model, reasoning effort, thoughts, stream, grounding,
extra_body) win over the job's; the row's ``extra_body`` is merged after the job's.

``stream`` comes from the row or the job, even for OpenAI batch bodies and even when an
``extra_body`` names it: the client decides from the body's ``stream`` whether it parses SSE
or JSON, so the body must say what the client will expect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from batchrun.core.errors import MediaError, RowError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaResolver, is_passthrough_url
from batchrun.request.stream_usage import ask_stream_usage, asks_stream_usage
from batchrun.request.structured import response_format, wants_response_format, with_instruction

_SYSTEM_ROLES = ("system", "developer")


def google_search_tool() -> dict[str, Any]:
    """The one tool the gateway supports, in the exact shape of its API reference
    (https://api.aivideoapi.ai)."""
    return {"type": "function", "function": {"name": "googleSearch"}}


def build_body(row: Row, job: JobSpec, media: MediaResolver | None) -> dict[str, Any]:
    """The request body for one row; RowError (MediaError included) if it cannot be built.

    - prompt rows: system (row's, else job's) then the user turn; with media, the user content
      is a text part followed by one ``image_url`` part per media reference.
    - messages rows: the messages, with local paths in ``image_url`` parts turned into data
      URLs; the row's or job's system prompt is put first unless a system message is there.
    - OpenAI batch rows: the body as written, but ``model`` and ``stream`` are the job's (see
      ``_batch_body``); the job fills in what the body lacks (include_thoughts,
      reasoning_effort, the googleSearch tool).
    """
    if row.error is not None:
        raise RowError(row.error)
    if row.body is not None:
        return _batch_body(row.body, job, media)
    if row.messages is not None:
        messages = _resolve_messages(row.messages, media)
        system = row.system if row.system is not None else job.system
        if system and not any(m.get("role") in _SYSTEM_ROLES for m in messages):
            messages.insert(0, {"role": "system", "content": system})
    elif row.prompt is not None:
        messages = _prompt_messages(row, job, media)
    else:
        raise RowError(f"row {row.id!r} (line {row.line}) has no messages, prompt or body")
    if row.output_schema is not None:
        _tell_schema(messages, row.output_schema)
    messages.extend(row.extra_turns)
    body = _settings_body(row, job, messages)
    if row.output_schema is not None and wants_response_format(job):
        body["response_format"] = response_format(row.output_schema)
    if body["stream"] and asks_stream_usage(job):
        ask_stream_usage(body)
    return body


def _tell_schema(messages: list[dict[str, Any]], schema: Mapping[str, Any]) -> None:
    """The schema instruction at the end of the first system message (one put first if none)."""
    first = messages[0] if messages else {}
    if first.get("role") in _SYSTEM_ROLES and isinstance(first.get("content"), str):
        messages[0] = {**first, "content": with_instruction(first["content"], schema)}
    else:
        messages.insert(0, {"role": "system", "content": with_instruction(None, schema)})


def _settings_body(row: Row, job: JobSpec, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """model, messages, stream, thoughts, effort, tools and extra_body: the row's, else the
    job's."""
    own = row.settings
    if own is None:
        body: dict[str, Any] = {
            "model": job.model,
            "messages": messages,
            "stream": job.stream,
            "include_thoughts": job.include_thoughts,
        }
        if job.reasoning_effort is not None:
            body["reasoning_effort"] = job.reasoning_effort
        if job.google_search:
            body["tools"] = [google_search_tool()]
        body.update(job.extra_body)
        body["stream"] = job.stream
        return body
    stream = _pick(own.stream, job.stream)
    body = {
        "model": _pick(own.model, job.model),
        "messages": messages,
        "stream": stream,
        "include_thoughts": _pick(own.include_thoughts, job.include_thoughts),
    }
    effort = _pick(own.reasoning_effort, job.reasoning_effort)
    if effort is not None:
        body["reasoning_effort"] = effort
    if _pick(own.google_search, job.google_search):
        body["tools"] = [google_search_tool()]
    body.update(job.extra_body)
    if own.extra_body:
        body.update(own.extra_body)
    body["stream"] = stream
    return body


def _pick(own: Any, default: Any) -> Any:
    return default if own is None else own


def encode_body(body: dict[str, Any]) -> bytes:
    """Compact JSON bytes of a body; a value JSON cannot hold is a row error."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        raise RowError(f"request body cannot be encoded as JSON: {exc}") from None


def body_sha256(body_bytes: bytes) -> str:
    return hashlib.sha256(body_bytes).hexdigest()


def _prompt_messages(
    row: Row, job: JobSpec, media: MediaResolver | None
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = row.system if row.system is not None else job.system
    if system:
        messages.append({"role": "system", "content": system})
    prompt = row.prompt or ""
    if not row.media:
        messages.append({"role": "user", "content": prompt})
        return messages
    parts: list[dict[str, Any]] = []
    if prompt:
        parts.append({"type": "text", "text": prompt})
    for ref in row.media:
        parts.append({"type": "image_url", "image_url": {"url": _media_url(ref, media)}})
    messages.append({"role": "user", "content": parts})
    return messages


def _resolve_messages(
    messages: Iterable[Mapping[str, Any]], media: MediaResolver | None
) -> list[dict[str, Any]]:
    """Copies of the messages with local image_url paths made data URLs (the row is untouched)."""
    resolved: list[dict[str, Any]] = []
    for message in messages:
        copy = dict(message)
        content = copy.get("content")
        if isinstance(content, list | tuple):
            copy["content"] = [_resolve_part(part, media) for part in content]
        resolved.append(copy)
    return resolved


def _resolve_part(part: Any, media: MediaResolver | None) -> Any:
    if not isinstance(part, Mapping) or part.get("type") != "image_url":
        return part
    image = part.get("image_url")
    # OpenAI wants {"url": ...}; a bare string is accepted in manifests and normalised here.
    image_obj = dict(image) if isinstance(image, Mapping) else {"url": image}
    image_obj["url"] = _media_url(image_obj.get("url"), media)
    return {**part, "image_url": image_obj}


def _media_url(ref: Any, media: MediaResolver | None) -> str:
    if not isinstance(ref, str) or not ref:
        raise MediaError(f"media reference must be a URL or path string, not {ref!r}")
    if is_passthrough_url(ref):
        return ref
    if media is None:
        raise MediaError(f"media {ref!r} is a local path, but no media root is set")
    return media.to_url(ref)


def _batch_body(
    source: Mapping[str, Any], job: JobSpec, media: MediaResolver | None
) -> dict[str, Any]:
    body = dict(source)
    body["messages"] = _resolve_messages(body.get("messages") or (), media)
    # One model per run, the job's: it is what the estimate, the price, the budget's bound and
    # the context-window check were computed for, and what a 404's advice says to fix. Batch
    # files written for another API name that API's model (``gpt-4o-mini``).
    body["model"] = job.model
    body.setdefault("include_thoughts", job.include_thoughts)
    if job.reasoning_effort is not None:
        body.setdefault("reasoning_effort", job.reasoning_effort)
    if job.google_search:
        tools = list(body.get("tools") or [])
        if not any(_is_google_search(tool) for tool in tools):
            tools.append(google_search_tool())
        body["tools"] = tools
    body.update(job.extra_body)
    body["stream"] = job.stream
    if job.stream and asks_stream_usage(job):
        ask_stream_usage(body)
    return body


def _is_google_search(tool: Any) -> bool:
    if not isinstance(tool, Mapping):
        return False
    function = tool.get("function")
    return isinstance(function, Mapping) and function.get("name") == "googleSearch"
