"""Parse chat-completion answers (one JSON body, or a stream of chunks) into ``Completion``.

Pure: dicts and strings in, a ``Completion`` or a ``BatchrunError`` out. Fields this module does
not model are kept in ``Completion.extra`` (never dropped), laid out the same way for both forms:

- unknown top-level fields under their own names (grounding metadata, system_fingerprint …);
- ``"message"``: the first choice's other message fields (``annotations``, ``tool_calls`` …);
- ``"choice"``: the first choice's other fields (``logprobs`` …);
- ``"usage"``: usage fields other than the four token counts;
- ``"choices"``: any further choices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from batchrun.core.errors import BatchrunError, TransportError, error_from_payload
from batchrun.core.result import Completion

# Thought blocks some gateways put at the very start of ``content`` instead of a field.
_THOUGHT_TAGS = {"<thought>": "</thought>", "<think>": "</think>"}
_TOP_KNOWN = frozenset({"id", "object", "created", "model", "choices", "usage",
                        "credits_consumed", "error"})
_CHOICE_KNOWN = frozenset({"index", "finish_reason", "message", "delta"})
_MESSAGE_KNOWN = frozenset({"role", "content", "reasoning_content", "reasoning"})
_USAGE_KNOWN = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_DETAILS_KNOWN = frozenset({"reasoning_tokens"})
# String fields that arrive in pieces inside stream deltas.
_CONCAT_KEYS = frozenset({"arguments", "refusal", "reasoning"})
# The usual stream chunk, choice and delta: nothing in them needs the general merge.
_PLAIN_CHUNK = frozenset({"id", "object", "created", "model", "choices", "usage",
                          "credits_consumed"})
_PLAIN_CHOICE = frozenset({"index", "delta", "finish_reason"})
_PLAIN_DELTA = frozenset({"role", "content", "reasoning_content"})

_LOOKING, _IN_THOUGHT, _CONTENT = 0, 1, 2


def payload_error(obj: Mapping[str, Any], http_status: int | None) -> BatchrunError:
    """The error for an ``{"error": …}`` object found in a 2xx body or in a stream event.

    A numeric ``code`` (some gateways send ``"code": 429``) stands for the status. Otherwise a
    2xx status says nothing about the failure, so the class comes from the code alone and an
    unknown code becomes a retryable ``TransportError`` rather than a row error.
    """
    status = http_status
    raw = obj.get("error")
    code = raw.get("code") if isinstance(raw, Mapping) else None
    numeric = _status_from_code(code)
    if numeric is not None:
        status = numeric
    elif status is not None and 200 <= status < 300:
        status = None
    return error_from_payload(status, obj)


def decode_event(data: str) -> dict[str, Any]:
    """One SSE ``data`` payload as a JSON object; anything else is a malformed answer."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise TransportError(f"stream event is not JSON: {_snippet(data)}") from None
    if not isinstance(obj, dict):
        raise TransportError(f"stream event is not a JSON object: {_snippet(data)}")
    return obj


def parse_completion(obj: Any, http_status: int = 200) -> Completion:
    """Parse a non-streamed ``chat.completion`` body (already JSON-decoded)."""
    if not isinstance(obj, dict):
        raise TransportError(f"answer is a JSON {type(obj).__name__}, not an object")
    if obj.get("error"):
        raise payload_error(obj, http_status)
    extra = _rest(obj, _TOP_KNOWN)
    content_text = ""
    field_thoughts = ""
    finish_reason = None
    choices = obj.get("choices")
    if isinstance(choices, list) and choices:
        if len(choices) == 1:  # the usual answer: no other choice to keep
            primary = choices[0]
        else:
            primary_at = _primary_index(choices)
            primary = choices[primary_at]
            extra["choices"] = [c for i, c in enumerate(choices) if i != primary_at]
        if isinstance(primary, dict):
            finish_reason = _str_or_none(primary.get("finish_reason"))
            _put(extra, "choice", _rest(primary, _CHOICE_KNOWN))
            message = primary.get("message")
            if isinstance(message, dict):
                message_rest = _rest(message, _MESSAGE_KNOWN)
                content_text, parts = _content_text(message.get("content"))
                if parts is not None:
                    message_rest["content"] = parts
                field_thoughts = _field_thoughts(message, message_rest)
                _put(extra, "message", message_rest)
            elif message is not None:
                extra["message"] = message
    elif choices is not None and choices != []:
        extra["choices"] = choices
    content, tag_thoughts = split_thoughts(content_text)
    completion = Completion(
        content=content,
        thoughts=_join_thoughts(field_thoughts, tag_thoughts),
        finish_reason=finish_reason,
        model=_str_or_none(obj.get("model")),
        response_id=_str_or_none(obj.get("id")),
        credits_consumed=_credits(obj),
        http_status=http_status,
        extra=extra,
    )
    _apply_usage(completion, obj.get("usage"))
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
            elif not (chunk.keys() <= _PLAIN_CHUNK and self._add_plain(chunk)):
                self.add(chunk)
        return False

    def add(self, chunk: dict[str, Any]) -> None:
        """Take one decoded chunk; an ``error`` object in it is raised at once."""
        if type(chunk) is dict and chunk.keys() <= _PLAIN_CHUNK and self._add_plain(chunk):
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
                    self._id = _str_or_none(value)
            elif key == "model":
                self._model = _str_or_none(value) or self._model
            elif key == "error":
                raise payload_error(chunk, self.http_status)
            elif key not in _TOP_KNOWN:
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
            if type(choice) is not dict or not choice.keys() <= _PLAIN_CHOICE:
                return False
            delta = choice.get("delta")
            content = reasoning = None
            if delta is not None:
                if type(delta) is not dict or not delta.keys() <= _PLAIN_DELTA:
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
                state.finish_reason = _str_or_none(finish_reason)
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
            self._id = _str_or_none(chunk.get("id"))
        value = chunk.get("model")
        if type(value) is str:  # every chunk names it: no call for the usual string
            if value:
                self._model = value
        elif value is not None:
            self._model = _str_or_none(value) or self._model
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
            _put(extra, "message", message_rest)
            _put(extra, "choice", choice_rest)
        if len(self._choices) > 1:
            extra["choices"] = [state.as_choice(index)
                                for index, state in sorted(self._choices.items())
                                if state is not primary]
        credits = self._credits
        if credits is None and isinstance(self._usage, dict):
            credits = self._usage.get("credits_consumed")
        completion = Completion(
            content=content,
            thoughts=thoughts,
            finish_reason=finish_reason,
            model=self._model,
            response_id=self._id,
            credits_consumed=_float(credits),
            http_status=self.http_status,
            extra=extra,
        )
        _apply_usage(completion, self._usage)
        return completion

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
        self.splitter = _ThoughtSplitter()
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
                self.finish_reason = _str_or_none(value)
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
                text, parts = _content_text(value)
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
        thoughts = _join_thoughts("".join(self.thought_parts), tag_thoughts)
        message_rest = dict(self.message_rest)
        if self.tool_calls:
            message_rest["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return content, thoughts, message_rest, dict(self.choice_rest)

    def as_choice(self, index: int) -> dict[str, Any]:
        content, thoughts, message_rest, choice_rest = self.result()
        choice: dict[str, Any] = {"index": index, "finish_reason": self.finish_reason,
                                  "content": content, "thoughts": thoughts}
        _put(choice, "message", message_rest)
        choice.update(choice_rest)
        return choice


class _ThoughtSplitter:
    """Moves ``<thought>…</thought>`` blocks at the start of content into thoughts.

    Fed piece by piece (tags may be cut anywhere between chunks) or all at once: both give the
    same result. Only leading blocks count; a tag later in the answer is content.
    """

    __slots__ = ("content_parts", "thought_parts", "_state", "_pending", "_close", "_after")

    def __init__(self) -> None:
        self.content_parts: list[str] = []
        self.thought_parts: list[str] = []
        self._state = _LOOKING
        self._pending = ""
        self._close = ""
        self._after = False  # a thought block was closed: trim whitespace before the answer

    def feed(self, text: str) -> None:
        if self._state == _CONTENT:
            if text:
                self.content_parts.append(text)
            return
        self._pending += text
        while True:
            if self._state == _IN_THOUGHT:
                end = self._pending.find(self._close)
                if end < 0:
                    keep = _partial_suffix(self._pending, self._close)
                    cut = len(self._pending) - keep
                    if cut:
                        self.thought_parts.append(self._pending[:cut])
                        self._pending = self._pending[cut:]
                    return
                self.thought_parts.append(self._pending[:end])
                self._pending = self._pending[end + len(self._close):]
                self._state = _LOOKING
                self._after = True
                continue
            stripped = self._pending.lstrip()
            if not stripped:
                return
            for tag, close in _THOUGHT_TAGS.items():
                if stripped.startswith(tag):
                    if self.thought_parts:
                        self.thought_parts.append("\n")
                    self._state = _IN_THOUGHT
                    self._close = close
                    self._pending = stripped[len(tag):]
                    break
            else:
                if any(tag.startswith(stripped) for tag in _THOUGHT_TAGS):
                    return  # could still become a tag: wait for more
                self.content_parts.append(stripped if self._after else self._pending)
                self._pending = ""
                self._state = _CONTENT
                return

    def finish(self) -> tuple[str, str]:
        """(content, thoughts) once the text is complete; an unclosed block is all thought."""
        if self._pending:
            if self._state == _IN_THOUGHT:
                self.thought_parts.append(self._pending)
            else:
                self.content_parts.append(
                    self._pending.lstrip() if self._after else self._pending)
            self._pending = ""
        self._state = _CONTENT
        return "".join(self.content_parts), "".join(self.thought_parts).strip()


def split_thoughts(text: str) -> tuple[str, str]:
    """(content, thoughts) of a whole answer text: leading thought blocks moved out."""
    if not text.lstrip().startswith("<"):
        return text, ""  # what nearly every answer is: no tag to look for (same result)
    splitter = _ThoughtSplitter()
    splitter.feed(text)
    return splitter.finish()


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


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


def _content_text(content: Any) -> tuple[str, list[Any] | None]:
    """Text of ``content``; a list of parts also returns the parts when some are not text."""
    if content is None:
        return "", None
    if isinstance(content, str):
        return content, None
    if isinstance(content, list):
        texts: list[str] = []
        other = False
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str) and \
                    part.get("type", "text") == "text":
                texts.append(part["text"])
            else:
                other = True
        return "".join(texts), (content if other else None)
    return "", [content]


def _field_thoughts(message: dict[str, Any], rest: dict[str, Any]) -> str:
    reasoning_content = message.get("reasoning_content")
    reasoning = message.get("reasoning")
    if isinstance(reasoning_content, str):
        if reasoning is not None and reasoning != reasoning_content:
            rest["reasoning"] = reasoning
        return reasoning_content
    if reasoning_content is not None:
        rest["reasoning_content"] = reasoning_content
    if isinstance(reasoning, str):
        return reasoning
    if reasoning is not None:
        rest["reasoning"] = reasoning
    return ""


def _join_thoughts(field: str, tagged: str) -> str:
    if field and tagged:
        return f"{field}\n{tagged}"
    return field or tagged


def _apply_usage(completion: Completion, usage: Any) -> None:
    if not isinstance(usage, dict):
        if usage is not None:
            completion.extra["usage"] = usage
        return
    completion.prompt_tokens = _int(usage.get("prompt_tokens"))
    completion.completion_tokens = _int(usage.get("completion_tokens"))
    completion.total_tokens = _int(usage.get("total_tokens"))
    rest = _rest(usage, _USAGE_KNOWN)
    details = usage.get("completion_tokens_details")
    reasoning = None
    if isinstance(details, dict):
        reasoning = _int(details.get("reasoning_tokens"))
        details_rest = _rest(details, _DETAILS_KNOWN)
        if details_rest:
            rest["completion_tokens_details"] = details_rest
        else:
            rest.pop("completion_tokens_details", None)
    if reasoning is None:
        reasoning = _int(usage.get("reasoning_tokens"))
        if reasoning is not None:
            rest.pop("reasoning_tokens", None)
    completion.reasoning_tokens = reasoning
    rest.pop("credits_consumed", None)
    _put(completion.extra, "usage", rest)


def _credits(obj: Mapping[str, Any]) -> float | None:
    value = obj.get("credits_consumed")
    if value is None and isinstance(obj.get("usage"), dict):
        value = obj["usage"].get("credits_consumed")
    return _float(value)


def _primary_index(choices: list[Any]) -> int:
    for position, choice in enumerate(choices):
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return position
    return 0


def _rest(obj: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    if obj.keys() <= known:
        return {}  # the usual answer: nothing beyond the known fields (one check in C)
    return {k: v for k, v in obj.items() if k not in known and v is not None}


def _put(target: dict[str, Any], key: str, value: dict[str, Any]) -> None:
    if value:
        target[key] = value


def _status_from_code(code: Any) -> int | None:
    if isinstance(code, bool):
        return None
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    if isinstance(code, int) and 400 <= code <= 599:
        return code
    return None


def _int(value: Any) -> int | None:
    if type(value) is int:  # nearly always (a bool is not: its type is bool)
        return value
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _str_or_none(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    return value if isinstance(value, str) else str(value)


def _snippet(text: str, limit: int = 120) -> str:
    return repr(text[:limit] + ("…" if len(text) > limit else ""))
