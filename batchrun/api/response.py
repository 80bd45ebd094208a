"""Parse a chat-completion answer (one JSON body) into ``Completion``, and the helpers the
stream (``stream.StreamAccumulator``) shares with it.

Pure: dicts and strings in, a ``Completion`` or a ``BatchrunError`` out. Fields this module (or
``stream``) does not model are kept in ``Completion.extra`` (never dropped), laid out the same
way for both forms:

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

from batchrun.api.thoughts import field_thoughts, join_thoughts, split_thoughts
from batchrun.core.errors import (
    BatchrunError,
    TransportError,
    describe_body,
    error_from_payload,
)
from batchrun.core.result import Completion

# Top-level fields of an answer or a chunk that are modelled (everything else goes to extra).
TOP_KNOWN = frozenset({"id", "object", "created", "model", "choices", "usage",
                       "credits_consumed", "error"})
_CHOICE_KNOWN = frozenset({"index", "finish_reason", "message", "delta"})
_MESSAGE_KNOWN = frozenset({"role", "content", "reasoning_content", "reasoning"})
_USAGE_KNOWN = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_DETAILS_KNOWN = frozenset({"reasoning_tokens"})


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


def parse_json_body(raw: bytes, http_status: int) -> Completion:
    """The completion of a JSON answer's bytes; a body that is not JSON is a malformed answer
    (``TransportError``, naming what came instead)."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TransportError(f"HTTP {http_status} answer is {describe_body(raw)}") from None
    return parse_completion(payload, http_status)


def parse_completion(obj: Any, http_status: int = 200) -> Completion:
    """Parse a non-streamed ``chat.completion`` body (already JSON-decoded)."""
    if not isinstance(obj, dict):
        raise TransportError(f"answer is a JSON {type(obj).__name__}, not an object")
    if obj.get("error"):
        raise payload_error(obj, http_status)
    extra = _rest(obj, TOP_KNOWN)
    text = ""
    thoughts_field = ""
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
            finish_reason = str_or_none(primary.get("finish_reason"))
            put(extra, "choice", _rest(primary, _CHOICE_KNOWN))
            message = primary.get("message")
            if isinstance(message, dict):
                message_rest = _rest(message, _MESSAGE_KNOWN)
                text, parts = content_text(message.get("content"))
                if parts is not None:
                    message_rest["content"] = parts
                thoughts_field = field_thoughts(message, message_rest)
                put(extra, "message", message_rest)
            elif message is not None:
                extra["message"] = message
    elif choices is not None and choices != []:
        extra["choices"] = choices
    content, tag_thoughts = split_thoughts(text)
    completion = Completion(
        content=content,
        thoughts=join_thoughts(thoughts_field, tag_thoughts),
        finish_reason=finish_reason,
        model=str_or_none(obj.get("model")),
        response_id=str_or_none(obj.get("id")),
        credits_consumed=_credits(obj),
        http_status=http_status,
        extra=extra,
    )
    apply_usage(completion, obj.get("usage"))
    audited_reasoning(completion)
    return completion


def content_text(content: Any) -> tuple[str, list[Any] | None]:
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


def apply_usage(completion: Completion, usage: Any) -> None:
    """The token counts of ``usage`` onto ``completion``; its other fields into ``extra``."""
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
    put(completion.extra, "usage", rest)


def audited_reasoning(completion: Completion) -> None:
    """Reasoning tokens from the answer's audit records when ``usage`` carried none.

    The gateway's billing note says reasoning tokens "are recorded for audit only in the
    response, in output.usage.reasoning_tokens, and in pricing_detail": an answer that counts
    them only there still gets its ``reasoning_tokens``. Both objects stay in ``extra``.
    """
    if completion.reasoning_tokens is not None or not completion.extra:
        return
    output = completion.extra.get("output")
    usage = output.get("usage") if isinstance(output, dict) else None
    for record in (usage, output, completion.extra.get("pricing_detail")):
        if isinstance(record, dict):
            count = _int(record.get("reasoning_tokens"))
            if count is not None:
                completion.reasoning_tokens = count
                return


def _credits(obj: Mapping[str, Any]) -> float | None:
    value = obj.get("credits_consumed")
    if value is None and isinstance(obj.get("usage"), dict):
        value = obj["usage"].get("credits_consumed")
    return float_or_none(value)


def _primary_index(choices: list[Any]) -> int:
    for position, choice in enumerate(choices):
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return position
    return 0


def _rest(obj: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    if obj.keys() <= known:
        return {}  # the usual answer: nothing beyond the known fields (one check in C)
    return {k: v for k, v in obj.items() if k not in known and v is not None}


def put(target: dict[str, Any], key: str, value: dict[str, Any]) -> None:
    """``target[key] = value`` unless ``value`` is empty."""
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


def float_or_none(value: Any) -> float | None:
    """A finite number as a float; None for anything else (a bool, a word, NaN)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def str_or_none(value: Any) -> str | None:
    """None stays None, anything else becomes a string."""
    if value is None or type(value) is str:
        return value
    return value if isinstance(value, str) else str(value)
