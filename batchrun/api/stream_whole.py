"""A streamed answer read whole, the usual way it comes: one pass instead of event by event.

Pure. ``read_stream`` reads a stream when its body has ended (one read, ``stream_reader``), so
nearly every answer reaches the parser whole. Its usual shape — one-line ``data:`` events
each followed by a blank line, ``:`` comments, plain chunks of one choice with ``content``
and ``reasoning_content`` deltas, ``[DONE]`` last — is taken here with one split (its shape),
one regex pass (its data), one list of parsed chunks and one loop without a method call per
chunk (the event-by-event path, the SSE decoder into the chunk accumulator, spent about as
much in its own calls as in orjson).
Anything else (a ``\\r``, a multi-line event, an error chunk, a tool call, a second choice,
an unknown field, no ``[DONE]``) returns None and goes that general way, so both give the
very same ``Completion`` (``tests/test_stream_properties.py`` holds them equal).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from batchrun.api.response import str_or_none
from batchrun.api.stream import PLAIN_CHOICE, PLAIN_CHUNK, PLAIN_DELTA, stream_completion
from batchrun.api.thoughts import join_thoughts, split_thoughts
from batchrun.core.result import Completion

# The data of a line that is a ``data`` field ("data: x", "data:x", "data"), as the SSE
# decoder takes it: one optional space after the colon dropped.
_DATA_LINE = re.compile(rb"^data(?:: ?(.*)|$)", re.MULTILINE)


def whole_stream_completion(raw: bytes, http_status: int) -> Completion | None:
    """The completion of a whole event-stream body of the usual shape, else None."""
    first = raw[:1]
    if first.isspace():
        first = raw.lstrip()[:1]
    if first == b"{":
        return None  # a JSON body, whatever follows: the general way judges it whole
    payloads = _one_line_events(raw)
    if payloads is None or len(payloads) < 2 or payloads[-1] != b"[DONE]":
        return None
    del payloads[-1]
    try:
        chunks = [orjson.loads(payload) if payload[:1] == b"{" else None
                  for payload in payloads]
    except orjson.JSONDecodeError:
        return None  # the general way names the bad event
    content: list[str] = []
    reasoning: list[str] = []
    finish_reason: str | None = None
    usage: Any = None
    credits: Any = None
    response_id: str | None = None
    model: str | None = None
    choices_seen = False
    for chunk in chunks:
        if chunk.__class__ is not dict or not PLAIN_CHUNK.issuperset(chunk):
            return None
        choices = chunk.get("choices")
        if choices:
            if choices.__class__ is not list or len(choices) != 1:
                return None
            choice = choices[0]
            if (choice.__class__ is not dict or not PLAIN_CHOICE.issuperset(choice)
                    or choice.get("index") not in (0, None)):
                return None
            choices_seen = True
            delta = choice.get("delta")
            if delta is not None:
                if delta.__class__ is not dict or not PLAIN_DELTA.issuperset(delta):
                    return None
                text = delta.get("content")
                if text is not None:
                    if text.__class__ is not str:
                        return None
                    content.append(text)
                text = delta.get("reasoning_content")
                if text is not None:
                    if text.__class__ is not str:
                        return None
                    reasoning.append(text)
            value = choice.get("finish_reason")
            if value is not None:
                finish_reason = value if value.__class__ is str else str_or_none(value)
        elif choices is not None and choices.__class__ is not list:
            return None
        value = chunk.get("usage")
        if value is not None:
            usage = value
        value = chunk.get("credits_consumed")
        if value is not None:
            credits = value
        value = chunk.get("model")
        if value.__class__ is str:
            if value:
                model = value
        elif value is not None:
            model = str_or_none(value) or model
        if response_id is None:
            response_id = str_or_none(chunk.get("id"))
    if not choices_seen:
        return None
    text, tag_thoughts = split_thoughts("".join(content))
    return stream_completion(text, join_thoughts("".join(reasoning), tag_thoughts),
                             finish_reason, model=model, response_id=response_id,
                             credits=credits, usage=usage, http_status=http_status, extra={})


def _one_line_events(raw: bytes) -> list[bytes] | None:
    """The data of each event when every event is one line and a blank line ends it (no
    ``\\r``, no byte-order mark, nothing after the last blank line), else None.

    Every line break must come in a pair or more: a line followed straight by another is an
    event of several lines. Split at each break, the body is then its event lines at even
    places and nothing but empty lines at odd ones, an odd count in all (the last line,
    after the final break, is empty too). Newlines in even runs pass (extra blank lines
    dispatch nothing, here as in the SSE decoder); odd runs of three or more are left to the
    decoder too, which costs nothing but a rare slower parse. One split and one look at the
    odd places cost less than counting the breaks and the pairs (two passes, the second one
    of a two-byte pattern).
    """
    lines = raw.split(b"\n")
    if (len(lines) % 2 == 0 or lines[-1] or any(lines[1::2]) or b"\r" in raw
            or raw[:3] == b"\xef\xbb\xbf"):
        return None
    return _DATA_LINE.findall(raw)
