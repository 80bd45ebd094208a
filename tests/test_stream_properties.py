"""Property tests of the whole stream path (SSE decoder + chunk accumulator), beyond the
decoder's own: any split of a valid chat-completion stream gives the same answer as the JSON
form, and a stream cut anywhere never passes for a complete answer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.api.response import parse_completion
from batchrun.api.stream_reader import StreamParser, parse_sse_bytes
from batchrun.api.stream_whole import whole_stream_completion
from batchrun.core.errors import TransportError
from batchrun.core.result import Completion

# No "<": a tag-shaped prefix is the thought splitter's business (tested in test_response).
_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="<"),
                max_size=40)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    pieces = draw(st.lists(_text, min_size=1, max_size=6))
    thought_pieces = draw(st.lists(_text.filter(str.strip), max_size=3))
    style = draw(st.sampled_from(["field", "tag"]))
    prompt, completion, reasoning = (draw(st.integers(0, 10**6)) for _ in range(3))
    return {
        "pieces": pieces,
        "thoughts": thought_pieces,
        "style": style,
        "finish": draw(st.sampled_from(["stop", "length", "tool_calls"])),
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion + reasoning,
                  "completion_tokens_details": {"reasoning_tokens": reasoning}},
        "credits": draw(st.floats(0, 1000, allow_nan=False)),
        "usage_on_last_chunk": draw(st.booleans()),
    }


def _content_text(answer: dict[str, Any]) -> str:
    text = "".join(answer["pieces"])
    if answer["style"] == "tag" and answer["thoughts"]:
        return "<thought>" + "".join(answer["thoughts"]) + "</thought>" + text
    return text


def json_body(answer: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": _content_text(answer)}
    if answer["style"] == "field" and answer["thoughts"]:
        message["reasoning_content"] = "".join(answer["thoughts"])
    return {"id": "chatcmpl-p", "object": "chat.completion", "model": "m-preview",
            "choices": [{"index": 0, "finish_reason": answer["finish"], "message": message}],
            "usage": answer["usage"], "credits_consumed": answer["credits"]}


def sse_stream(answer: dict[str, Any], eol: str, comments: bool) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None, **top: Any) -> str:
        body = {"id": "chatcmpl-p", "object": "chat.completion.chunk", "model": "m-preview",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **top}
        return "data: " + orjson.dumps(body).decode() + eol + eol

    events = [chunk({"role": "assistant", "content": ""})]
    if comments:
        events.append(": keep-alive" + eol + eol)
    if answer["style"] == "field":
        events += [chunk({"reasoning_content": piece}) for piece in answer["thoughts"]]
    text = _content_text(answer)
    # Cut the content text anywhere (inside a tag too), not only where the pieces were.
    size = max(1, len(text) // max(1, len(answer["pieces"])))
    parts = [text[i:i + size] for i in range(0, len(text), size)] or [""]
    events += [chunk({"content": part}) for part in parts[:-1]]
    if answer["usage_on_last_chunk"]:
        events.append(chunk({"content": parts[-1]}, answer["finish"], usage=answer["usage"],
                            credits_consumed=answer["credits"]))
    else:
        events.append(chunk({"content": parts[-1]}, answer["finish"]))
        usage_chunk = {"id": "chatcmpl-p", "object": "chat.completion.chunk", "choices": [],
                       "usage": answer["usage"], "credits_consumed": answer["credits"]}
        events.append("data: " + orjson.dumps(usage_chunk).decode() + eol + eol)
    events.append("data: [DONE]" + eol + eol)
    return "".join(events).encode()


def parse_chunks(chunks: list[bytes]) -> Completion:
    """What ``stream_reader.read_stream`` does with the bytes as they arrive."""
    parser = StreamParser(200)
    for data in chunks:
        completion = parser.feed(data)
        if completion is not None:
            return completion
    return parser.end()


def parse_chunks_as_text(chunks: list[bytes]) -> Completion:
    """The same through the text API (events decoded, then parsed one by one)."""
    parser = StreamParser(200)
    for data in chunks:
        for event in parser.decoder.feed(data):
            if parser.accumulator.feed_event(event):
                return parser.accumulator.finish(saw_done=True)
    return parser.end()


def summary(completion: Completion) -> tuple[Any, ...]:
    return (completion.content, completion.thoughts, completion.finish_reason,
            completion.prompt_tokens, completion.completion_tokens, completion.total_tokens,
            completion.reasoning_tokens, completion.credits_consumed, completion.response_id,
            completion.model)


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


@settings(max_examples=250, deadline=None)
@given(answers(), st.sampled_from(["\n", "\r\n", "\r"]), st.booleans(),
       st.lists(st.integers(0, 100_000), max_size=25))
def test_any_split_of_a_valid_stream_parses_like_the_json_answer(
    answer: dict[str, Any], eol: str, comments: bool, cuts: list[int]
) -> None:
    raw = sse_stream(answer, eol, comments)
    expected = summary(parse_completion(json_body(answer)))
    assert summary(parse_chunks([raw])) == expected
    assert summary(parse_chunks(split(raw, cuts))) == expected
    assert summary(parse_chunks_as_text(split(raw, cuts))) == expected
    content, thoughts = expected[0], expected[1]
    text = "".join(answer["pieces"])
    tagged = answer["style"] == "tag" and answer["thoughts"]
    assert content == (text.lstrip() if tagged else text)  # a thought block eats the gap
    assert thoughts.strip() == "".join(answer["thoughts"]).strip()


@settings(max_examples=250, deadline=None)
@given(answers(), st.sampled_from(["\n", "\r\n"]), st.integers(0, 100_000),
       st.lists(st.integers(0, 100_000), max_size=8))
def test_a_stream_cut_anywhere_is_an_error_or_the_whole_answer(
    answer: dict[str, Any], eol: str, cut_at: int, cuts: list[int]
) -> None:
    raw = sse_stream(answer, eol, comments=True)
    end = cut_at % len(raw)  # strictly shorter than the stream
    try:
        completion = parse_chunks(split(raw[:end], cuts))
    except TransportError:
        return  # retried by the runner: never recorded as an answer
    # Only the very end ([DONE] and blank lines) may be missing for it to count.
    assert summary(completion) == summary(parse_completion(json_body(answer)))
    assert completion.has_usage


def test_the_generator_covers_tag_and_field_thoughts() -> None:
    answer = {"pieces": ["Hel", "lo"], "thoughts": ["think"], "style": "tag", "finish": "stop",
              "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
              "credits": 0.5, "usage_on_last_chunk": False}
    completion = parse_chunks([sse_stream(answer, "\n", True)])
    assert (completion.content, completion.thoughts) == ("Hello", "think")
    with pytest.raises(TransportError):
        parse_chunks([sse_stream(answer, "\n", True)[:-40]])


def _outcome(parse: Any, chunks: list[bytes]) -> Any:
    try:
        completion = parse(chunks)
    except TransportError as exc:
        return exc.message
    return (summary(completion), completion.extra)


# Events of every kind the bytes path must take as the text path does: JSON with odd
# whitespace around it, bad UTF-8, garbage, blank events, [DONE] with spaces, an error.
_odd_event = st.sampled_from([
    b'{"choices": [{"index": 0, "delta": {"content": "a"}}]}',
    b'{"choices": [{"delta": {"reasoning_content": "r", "content": "b"}}]} \x0c',
    b'{"choices": [{"delta": {"content": "\xff\xfe"}}]}',
    b'{"choices": [{"delta": {"content": "\xc3\xa9"}, "finish_reason": "stop"}]}',
    b'{"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}',
    b'{"choices": [{"index": 1, "delta": {"content": "other"}}], "model": "m"}',
    b'{"id": "x", "choices": [{"delta": {"content": "c", "annotations": [1]}}]}',
    b"{truncated", b"[1, 2]", b'"text"', b"", b"   ", b" [DONE] ", b"[DONE]",
    b'{"error": {"message": "boom"}}',
    # Where msgspec and orjson could part: numbers beyond 64 bits or out of range, a later
    # null, a key given twice.
    b'{"choices": [], "usage": {"prompt_tokens": 18446744073709551617, "completion_tokens": 2}}',
    b'{"choices": [{"delta": {"content": "x"}}], "credits_consumed": 123456789012345678901234}',
    b'{"choices": [{"delta": {"content": "x"}}], "created": 1e400}',
    b'{"choices": [], "usage": null, "credits_consumed": null}',
    b'{"choices": [{"delta": {"content": "a", "content": "b"}}]}',
    b'{"choices": [{"delta": {"role": 1' + b"0" * 320 + b'}}]}',  # beyond a float
    b'{"choices": [], "usage": 1e400, "usage": {"prompt_tokens": 1}}',
    b'{"choices": [], "credits_consumed": "\x80", "credits_consumed": 2}',
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_odd_event, max_size=8), st.lists(st.integers(0, 10_000), max_size=6))
def test_bytes_and_text_paths_take_any_event_alike(events: list[bytes], cuts: list[int]) -> None:
    raw = b"".join(b"data: " + event + b"\n\n" for event in events)
    chunks = split(raw, cuts)
    assert _outcome(parse_chunks, chunks) == _outcome(parse_chunks_as_text, chunks)


@settings(max_examples=250, deadline=None)
@given(answers(), st.sampled_from(["\n", "\r\n", "\r"]), st.booleans())
def test_a_body_read_whole_gives_what_event_by_event_gives(
    answer: dict[str, Any], eol: str, comments: bool
) -> None:
    raw = sse_stream(answer, eol, comments)
    whole = whole_stream_completion(raw, 200)
    # The usual shape (lines ending in "\n") takes the one pass; the rest is left to the
    # event-by-event path.
    assert (whole is not None) == (eol == "\n")
    if whole is not None:
        assert whole == parse_chunks([raw])  # every field, extra included


@settings(max_examples=300, deadline=None)
@given(st.lists(_odd_event, max_size=8), st.booleans(), st.sampled_from([b"data: ", b"data:"]),
       st.sampled_from([b"", b": keep-alive\n\n", b"event: x\n\n"]))
def test_a_body_read_whole_is_the_general_answer_or_left_to_it(
    events: list[bytes], done: bool, field: bytes, between: bytes
) -> None:
    raw = between.join(field + event + b"\n\n" for event in events)
    raw += b"data: [DONE]\n\n" if done else b""
    whole = whole_stream_completion(raw, 200)
    if whole is not None:
        assert whole == parse_chunks([raw])


def test_a_body_read_whole_decodes_numbers_as_the_general_path_does() -> None:
    """The one pass decodes chunks with msgspec, the general path with orjson: usage and credits
    must come out the same (orjson makes an integer beyond 64 bits a float; msgspec would keep
    it exact), and what orjson refuses (a number out of range) must not pass here."""
    plain = b'data: {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]}'
    big = (b'data: {"choices": [], "usage": {"prompt_tokens": 18446744073709551617, '
           b'"completion_tokens": 2, "cached_tokens": 18446744073709551617, '
           b'"credits_consumed": 99999999999999999999999}}')
    later_null = b'data: {"choices": [], "usage": null, "credits_consumed": null}'
    raw = b"\n\n".join([plain, big, later_null, b"data: [DONE]"]) + b"\n\n"
    whole = whole_stream_completion(raw, 200)
    assert whole is not None
    assert whole == parse_chunks([raw])
    assert whole.prompt_tokens == 2**64  # 2**64 + 1 read as a float, as orjson reads it
    assert whole.credits_consumed == 1e23  # orjson's float, kept by a later null
    out_of_range = raw.replace(b'"index": 0', b'"index": 0, "created": 1e400', 1)
    assert whole_stream_completion(out_of_range, 200) is None
    with pytest.raises(TransportError):
        parse_sse_bytes(out_of_range, 200)


_HUGE = b"1" + b"0" * 320  # an integer beyond a float's range


@pytest.mark.parametrize("bad_event", [
    # An integer beyond a float's range: msgspec would keep it, orjson refuses it.
    b'{"choices": [{"index": 0, "delta": {"role": ' + _HUGE + b'}}]}',
    b'{"created": ' + _HUGE + b', "choices": [{"delta": {"content": "x"}}]}',
    b'{"choices": [{"index": ' + _HUGE + b', "index": 0, "delta": {}}]}',
    # Values msgspec skips unchecked, then replaced: by the same key again, by a later chunk.
    b'{"choices": [], "usage": 1e400, "usage": {"prompt_tokens": 1}}',
    b'{"choices": [], "credits_consumed": -1e400, "credits_consumed": null}',
    b'{"choices": [], "credits_consumed": 1e309}',
])
def test_a_bad_event_is_refused_by_the_one_pass_as_by_the_general_path(bad_event: bytes) -> None:
    """Each of these made the general path refuse the stream while msgspec's first one-pass
    parse took it (found by a differential fuzz of the two parses). Bad UTF-8 is no such case:
    the general path reads it as U+FFFD, and the one pass leaves it to that path."""
    plain = b'data: {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]}'
    later = b'data: {"choices": [], "usage": {"prompt_tokens": 3}, "credits_consumed": 1}'
    raw = b"\n\n".join([plain, b"data: " + bad_event, later, b"data: [DONE]"]) + b"\n\n"
    with pytest.raises(TransportError):
        parse_chunks([raw])
    assert whole_stream_completion(raw, 200) is None
    with pytest.raises(TransportError):
        parse_sse_bytes(raw, 200)


def test_the_one_pass_structs_take_the_plain_fields_and_no_other() -> None:
    """The typed chunk of the one pass and the general path's plain shape list the same fields:
    a field one of them learns the other must learn too."""
    from batchrun.api import stream_whole
    from batchrun.api.stream import PLAIN_CHOICE, PLAIN_CHUNK, PLAIN_DELTA

    assert set(stream_whole._Chunk.__struct_fields__) == PLAIN_CHUNK
    assert set(stream_whole._Choice.__struct_fields__) == PLAIN_CHOICE
    assert set(stream_whole._Delta.__struct_fields__) == PLAIN_DELTA


def test_a_body_read_whole_leaves_unusual_shapes_to_the_general_path() -> None:
    plain = b'data: {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]}'
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}'
    usual = plain + b"\n\n" + usage + b"\n\ndata: [DONE]\n\n"
    assert whole_stream_completion(usual, 200) == parse_chunks([usual])
    unusual = [
        usual[:-len(b"data: [DONE]\n\n")],  # no [DONE]
        usual.replace(b"\n\n", b"\r\n\r\n"),
        usual.replace(b"\n\n", b"\n", 1),  # two lines in one event
        b"\xef\xbb\xbf" + usual,
        usual.replace(b'"index": 0', b'"index": 1'),
        usual.replace(b'"content": "a"', b'"content": "a", "refusal": "no"'),
        usual.replace(b'"choices": []', b'"choices": [], "citations": ["u"]'),
        usual.replace(b'{"content": "a"}', b'{"content": 1}'),
        b'data: {"error": {"message": "boom"}}\n\n' + usual,
        usage + b"\n\ndata: [DONE]\n\n",  # no choice at all
        b"{}\n\n" + usual,  # a JSON body: judged whole by the general way (refused)
        b' \n{"error": {"message": "boom"}}\n\n' + usual,
    ]
    for raw in unusual:
        assert whole_stream_completion(raw, 200) is None, raw
    with pytest.raises(TransportError):
        parse_sse_bytes(b"{}\n\n" + usual, 200)  # as before the one-pass parse
    # Extra blank lines (before the first event, between two) dispatch nothing either way.
    for raw in (b"\n\n" + usual, usual.replace(b"\n\n", b"\n\n\n\n", 1)):
        assert whole_stream_completion(raw, 200) == parse_chunks([raw]) is not None
