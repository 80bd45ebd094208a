"""Assemble a streamed answer (``chat.completion.chunk`` events) into one ``Completion``.

Pure: SSE data payloads in, a ``Completion`` or a ``BatchrunError`` out, with the same result and
the same ``Completion.extra`` layout as ``response.parse_completion`` gives for the JSON form of
the answer. This is the hot path of a streamed run (every chunk of every answer comes through
``StreamAccumulator.feed_payloads``): the usual chunk takes the plain-chunk fast path.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchrun.api.response import (
    TOP_KNOWN,
    apply_usage,
    audited_reasoning,
    content_text,
    float_or_none,
    payload_error,
    put,
    str_or_none,
)
from batchrun.api.thoughts import ThoughtSplitter, join_thoughts
from batchrun.core.errors import TransportError
from batchrun.core.result import Completion

# String fields that arrive in pieces inside stream deltas.
_CONCAT_KEYS = frozenset({"arguments", "refusal", "reasoning"})
# The usual stream chunk, choice and delta: nothing in them needs the general merge (the
# one-pass parse of a whole body, ``stream_whole``, takes only these too).
PLAIN_CHUNK = frozenset({"id", "object", "created", "model", "choices", "usage",
                          "credits_consumed"})
PLAIN_CHOICE = frozenset({"index", "delta", "finish_reason"})
PLAIN_DELTA = frozenset({"role", "content", "reasoning_content"})


def decode_event(data: str) -> dict[str, Any]:
    """One SSE ``data`` payload as a JSON object; anything else is a malformed answer."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise TransportError(f"stream event is not JSON: {_snippet(data)}") from None
    if not isinstance(obj, dict):
        raise TransportError(f"stream event is not a JSON object: {_snippet(data)}")
    return obj


def stream_completion(content: str, thoughts: str, finish_reason: str | None, *,
                      model: str | None, response_id: str | None, credits: Any, usage: Any,
                      http_status: int, extra: dict[str, Any]) -> Completion:
    """The ``Completion`` of a stream's assembled parts (both parse paths end here): credits
    from the chunk's field, else from ``usage``; the token counts from ``usage``."""
    if credits is None and isinstance(usage, dict):
        credits = usage.get("credits_consumed")
    completion = Completion(content=content, thoughts=thoughts, finish_reason=finish_reason,
                            model=model, response_id=response_id,
                            credits_consumed=float_or_none(credits), http_status=http_status,
                            extra=extra)
    apply_usage(completion, usage)
    audited_reasoning(completion)
    return completion


class StreamAccumulator:
    """Collects ``chat.completion.chunk`` events into one ``Completion``."""

    def __init__(self, http_status: int = 200) -> None:
        self.http_status = http_status
        self._choices: dict[int, _ChoiceState] = {}
        self._id: str | None = None
        self._model: str | None = None
        self._usage: Any = None
        self._credits: Any = None
        self._extra: dict[str, Any] = {}
        self.events = 0

    def feed_event(self, data: str) -> bool:
        """Take one SSE data payload; True when it is the ``[DONE]`` sentinel."""
        data = data.strip()
        if not data:
            return False  # an empty event: a keep-alive, nothing to parse
        if data == "[DONE]":
            return True
        self.add(decode_event(data))
        return False

    def feed_payloads(self, payloads: list[bytes]) -> bool:
        """``feed_event`` for each undecoded payload in turn (``SSEDecoder.feed_bytes``); True
        at ``[DONE]``, and what follows it is left alone. Same results: a JSON object is
        parsed from its bytes, anything else (or bytes orjson refuses: bad UTF-8, odd
        whitespace) goes the text way, decoded as ``SSEDecoder.feed`` would."""
        for payload in payloads:
            chunk: Any = None
            if payload[:1] == b"{":
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    chunk = None  # the text way names the error, as it always did
            if type(chunk) is not dict:  # [DONE], a blank keep-alive, garbage
                if self.feed_event(payload.decode("utf-8", "replace")):
                    return True
            elif not (chunk.keys() <= PLAIN_CHUNK and self._add_plain(chunk)):
                self.add(chunk)
        return False

    def add(self, chunk: dict[str, Any]) -> None:
        """Take one decoded chunk; an ``error`` object in it is raised at once."""
        if type(chunk) is dict and chunk.keys() <= PLAIN_CHUNK and self._add_plain(chunk):
            return
        if not isinstance(chunk, dict):
            raise TransportError(f"stream event is a JSON {type(chunk).__name__}, not an object")
        self.events += 1
        for key, value in chunk.items():
            if value is None:
                continue
            if key == "choices":
                self._add_choices(value)
            elif key == "usage":
                self._usage = value
            elif key == "credits_consumed":
                self._credits = value
            elif key == "id":
                if self._id is None:
                    self._id = str_or_none(value)
            elif key == "model":
                self._model = str_or_none(value) or self._model
            elif key == "error":
                raise payload_error(chunk, self.http_status)
            elif key not in TOP_KNOWN:
                # Chunk-level fields are usually repeated whole (citations …): last one wins.
                self._extra[key] = value

    def _add_plain(self, chunk: dict[str, Any]) -> bool:
        """``add`` for the usual chunk: known fields only (no error, nothing for ``extra``), at
        most one choice of index, delta and finish_reason, a delta of role, content and
        reasoning_content as strings. Each field is taken as the general loop takes it, by
        lookup instead of a walk through merges. False, with nothing taken, for any other
        shape: ``add`` then goes the general way."""
        choices = chunk.get("choices")
        if type(choices) is list and choices:
            if len(choices) != 1:
                return False
            choice = choices[0]
            if type(choice) is not dict or not choice.keys() <= PLAIN_CHOICE:
                return False
            delta = choice.get("delta")
            content = reasoning = None
            if delta is not None:
                if type(delta) is not dict or not delta.keys() <= PLAIN_DELTA:
                    return False
                content = delta.get("content")
                reasoning = delta.get("reasoning_content")
                if not ((content is None or type(content) is str)
                        and (reasoning is None or type(reasoning) is str)):
                    return False
            index = choice.get("index")
            if not isinstance(index, int):
                index = 0  # its position
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
            if reasoning is not None:
                state.thought_parts.append(reasoning)
            if content is not None:
                state.splitter.feed(content)
            finish_reason = choice.get("finish_reason")
            if finish_reason is not None:
                state.finish_reason = str_or_none(finish_reason)
        elif choices is not None and type(choices) is not list:
            return False  # kept in extra by the general way
        self.events += 1
        value = chunk.get("usage")
        if value is not None:
            self._usage = value
        value = chunk.get("credits_consumed")
        if value is not None:
            self._credits = value
        if self._id is None:
            self._id = str_or_none(chunk.get("id"))
        value = chunk.get("model")
        if type(value) is str:  # every chunk names it: no call for the usual string
            if value:
                self._model = value
        elif value is not None:
            self._model = str_or_none(value) or self._model
        return True

    def finish(self, saw_done: bool) -> Completion:
        """The answer so far. Without ``[DONE]`` it must at least carry finish_reason and usage."""
        primary = self._choices[min(self._choices)] if self._choices else None
        finish_reason = primary.finish_reason if primary else None
        if not saw_done and (finish_reason is None or not isinstance(self._usage, dict)):
            received = len("".join(primary.content_parts())) if primary else 0
            raise TransportError(
                f"stream ended before [DONE] (finish_reason {finish_reason or 'missing'}, "
                f"usage {'present' if isinstance(self._usage, dict) else 'missing'}, "
                f"{self.events} events, {received} characters): truncated"
            )
        extra = dict(self._extra)
        content = thoughts = ""
        if primary is not None:
            content, thoughts, message_rest, choice_rest = primary.result()
            put(extra, "message", message_rest)
            put(extra, "choice", choice_rest)
        if len(self._choices) > 1:
            extra["choices"] = [state.as_choice(index)
                                for index, state in sorted(self._choices.items())
                                if state is not primary]
        return stream_completion(content, thoughts, finish_reason, model=self._model,
                                 response_id=self._id, credits=self._credits, usage=self._usage,
                                 http_status=self.http_status, extra=extra)

    def _add_choices(self, choices: Any) -> None:
        if not isinstance(choices, list):
            self._extra["choices"] = choices
            return
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            index = choice.get("index")
            if not isinstance(index, int):
                index = position
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
            state.add(choice)


class _ChoiceState:
    """One choice of a stream being assembled."""

    __slots__ = ("splitter", "thought_parts", "finish_reason", "message_rest", "choice_rest",
                 "tool_calls")

    def __init__(self) -> None:
        self.splitter = ThoughtSplitter()
        self.thought_parts: list[str] = []
        self.finish_reason: str | None = None
        self.message_rest: dict[str, Any] = {}
        self.choice_rest: dict[str, Any] = {}
        self.tool_calls: dict[int, dict[str, Any]] = {}

    def add(self, choice: dict[str, Any]) -> None:
        for key, value in choice.items():
            if value is None:
                continue
            if key == "delta" or key == "message":
                if isinstance(value, dict):
                    self._add_delta(value)
            elif key == "finish_reason":
                self.finish_reason = str_or_none(value)
            elif key != "index":
                self.choice_rest[key] = _merge(self.choice_rest.get(key), value, key)

    def _add_delta(self, delta: dict[str, Any]) -> None:
        if len(delta) == 1:  # nearly every chunk: {"content": "next words"}
            content = delta.get("content")
            if type(content) is str:
                self.splitter.feed(content)
                return
        reasoning_content = delta.get("reasoning_content")
        if isinstance(reasoning_content, str):
            self.thought_parts.append(reasoning_content)
        else:
            reasoning = delta.get("reasoning")
            if isinstance(reasoning, str):
                self.thought_parts.append(reasoning)
        for key, value in delta.items():
            if value is None or key == "role":
                continue
            if key == "content":
                text, parts = content_text(value)
                self.splitter.feed(text)
                if parts is not None:
                    self.message_rest["content"] = _merge(
                        self.message_rest.get("content"), parts, key)
            elif key == "tool_calls" and isinstance(value, list):
                _merge_tool_calls(self.tool_calls, value)
            elif key == "reasoning_content" and isinstance(value, str):
                continue
            elif key == "reasoning" and isinstance(value, str) and (
                    reasoning_content is None or value == reasoning_content):
                continue  # already taken as thoughts
            else:
                self.message_rest[key] = _merge(self.message_rest.get(key), value, key)

    def content_parts(self) -> list[str]:
        return self.splitter.content_parts

    def result(self) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
        content, tag_thoughts = self.splitter.finish()
        thoughts = join_thoughts("".join(self.thought_parts), tag_thoughts)
        message_rest = dict(self.message_rest)
        if self.tool_calls:
            message_rest["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return content, thoughts, message_rest, dict(self.choice_rest)

    def as_choice(self, index: int) -> dict[str, Any]:
        content, thoughts, message_rest, choice_rest = self.result()
        choice: dict[str, Any] = {"index": index, "finish_reason": self.finish_reason,
                                  "content": content, "thoughts": thoughts}
        put(choice, "message", message_rest)
        choice.update(choice_rest)
        return choice


def _merge_tool_calls(calls: dict[int, dict[str, Any]], fragments: list[Any]) -> None:
    """Stream tool calls arrive as fragments keyed by ``index``; arguments come in pieces."""
    for position, fragment in enumerate(fragments):
        if not isinstance(fragment, dict):
            continue
        index = fragment.get("index")
        if not isinstance(index, int):
            index = position
        calls[index] = _merge(calls.get(index), fragment, "tool_call")


def _merge(old: Any, new: Any, key: str) -> Any:
    """Fold a delta value into what came before: lists extend, dicts merge, pieces concatenate."""
    if new is None:
        return old
    if old is None:
        return new
    if isinstance(old, list) and isinstance(new, list):
        return old + new
    if isinstance(old, dict) and isinstance(new, dict):
        merged = dict(old)
        for sub_key, value in new.items():
            merged[sub_key] = _merge(merged.get(sub_key), value, sub_key)
        return merged
    if isinstance(old, str) and isinstance(new, str) and key in _CONCAT_KEYS:
        return old + new
    return new


def _snippet(text: str, limit: int = 120) -> str:
    return repr(text[:limit] + ("…" if len(text) > limit else ""))
