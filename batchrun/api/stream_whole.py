"""A streamed answer read whole, the usual way it comes: one pass instead of event by event.

Pure. ``read_stream`` reads a stream when its body has ended (one read, ``stream_reader``), so
nearly every answer reaches the parser whole. Its usual shape — one-line ``data:`` events
each followed by a blank line, ``:`` comments, plain chunks of one choice with ``content``
and ``reasoning_content`` deltas, ``[DONE]`` last — is taken here with one split (its shape),
one regex pass (its data), each chunk decoded by msgspec into typed structs that check its
shape as they are built, and one loop over them (the event-by-event path, the SSE decoder into
the chunk accumulator, spent about as much in its own calls as in orjson; orjson's dicts with
their keys and types checked in Python cost ~1.4 times what msgspec's structs cost, in a run).
Anything else (a ``\\r``, a multi-line event, an error chunk, a tool call, a second choice,
an unknown field, no ``[DONE]``) returns None and goes that general way, so both give the
very same ``Completion`` (``tests/test_stream_properties.py`` holds them equal).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
import orjson

from batchrun.api.stream import stream_completion
from batchrun.api.thoughts import join_thoughts, split_thoughts
from batchrun.core.result import Completion

# The data of a line that is a ``data`` field ("data: x", "data:x", "data"), as the SSE
# decoder takes it: one optional space after the colon dropped.
_DATA_LINE = re.compile(rb"^data(?:: ?(.*)|$)", re.MULTILINE)
# A field the chunk did not have.
_NO_VALUE = msgspec.Raw()
# An integer msgspec takes as orjson does: msgspec keeps any integer exact, orjson makes one
# beyond 64 bits a float and refuses one beyond a float's range. Outside int64, the general
# path judges.
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

# The structs below take the plain shape (``stream.PLAIN_*``) with the types gateways send:
# any other field, or another type (a number where text is usual), refuses the chunk and the
# general path, which accepts more, takes the answer. Each field is typed, none is ``Any``, so
# every value is checked as orjson checks it (text, escapes, UTF-8, integers). ``gc=False``:
# decoded text and numbers can make no reference cycle, so the collector need not track them
# (in a run: 0.7% less CPU a request).


class _Delta(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None


class _Choice(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    index: _Int | None = None
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``usage`` and ``credits_consumed`` are skipped over, not checked (``Raw``): a chunk that
    has either is read again whole by orjson, as the general path reads it."""

    id: str | None = None
    object: str | None = None
    created: _Int | None = None
    model: str | None = None
    choices: list[_Choice] | None = None
    usage: msgspec.Raw = _NO_VALUE
    credits_consumed: msgspec.Raw = _NO_VALUE


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


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
        # Typed decoding checks each chunk's shape as it goes: an unknown field, a second
        # choice's worth of fields, a delta that is not text, an event that is no object.
        chunks = [_decode_chunk(payload) for payload in payloads]
    # msgspec's own errors (ValueErrors only from 0.21 on), bad UTF-8 (a UnicodeDecodeError up
    # to 0.21), nesting too deep.
    except (msgspec.MsgspecError, ValueError, RecursionError):
        return None  # the general way names the bad event, or takes the unusual shape
    content: list[str] = []
    reasoning: list[str] = []
    finish_reason: str | None = None
    usage: Any = None
    credits: Any = None
    response_id: str | None = None
    model: str | None = None
    choices_seen = False
    for payload, chunk in zip(payloads, chunks, strict=True):
        choices = chunk.choices
        if choices:
            if len(choices) != 1:
                return None
            choice = choices[0]
            if choice.index:  # None or 0: the first choice
                return None
            choices_seen = True
            delta = choice.delta
            if delta is not None:
                if delta.content is not None:
                    content.append(delta.content)
                if delta.reasoning_content is not None:
                    reasoning.append(delta.reasoning_content)
            if choice.finish_reason is not None:
                finish_reason = choice.finish_reason
        if chunk.usage or chunk.credits_consumed:
            # msgspec skipped these values unchecked (a number out of range, bad UTF-8, the
            # key given twice): orjson reads the chunk whole, as the general path does.
            try:
                fields = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return None
            value = fields.get("usage")
            if value is not None:  # a later ``null`` keeps the last usage
                usage = value
            value = fields.get("credits_consumed")
            if value is not None:
                credits = value
        if chunk.model:
            model = chunk.model
        if response_id is None:
            response_id = chunk.id
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
