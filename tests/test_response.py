"""parse_completion and StreamAccumulator: dicts in, Completion (or the right error) out."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.api.response import parse_completion
from batchrun.api.stream import StreamAccumulator, decode_event
from batchrun.api.thoughts import ThoughtSplitter as _ThoughtSplitter
from batchrun.api.thoughts import split_thoughts
from batchrun.core import errors

# The example answer in the gateway's API reference (https://api.aivideoapi.ai).
REFERENCE_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-20260417001546375193862M1p62g7j",
    "object": "chat.completion",
    "created": 1776356269,
    "model": "gemini-3.1-pro-preview",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Tomorrow (April 17, 2026) Shanghai…"},
        }
    ],
    "usage": {
        "prompt_tokens": 194,
        "completion_tokens": 229,
        "total_tokens": 880,
        "completion_tokens_details": {"reasoning_tokens": 457, "audio_tokens": 0,
                                      "text_tokens": 0},
    },
    "credits_consumed": 0.25,
}


def with_message(**message: Any) -> dict[str, Any]:
    body = copy.deepcopy(REFERENCE_RESPONSE)
    body["choices"][0]["message"] = {"role": "assistant", **message}
    return body


# ---------------------------------------------------------------- non-streamed answers


def test_reference_example() -> None:
    completion = parse_completion(REFERENCE_RESPONSE)
    assert completion.content == "Tomorrow (April 17, 2026) Shanghai…"
    assert completion.thoughts == ""
    assert completion.finish_reason == "stop"
    assert completion.model == "gemini-3.1-pro-preview"
    assert completion.response_id == "chatcmpl-20260417001546375193862M1p62g7j"
    assert (completion.prompt_tokens, completion.completion_tokens) == (194, 229)
    assert (completion.reasoning_tokens, completion.total_tokens) == (457, 880)
    assert completion.credits_consumed == 0.25
    assert completion.http_status == 200
    assert completion.has_usage
    # Usage detail fields we do not model are kept, the envelope (object, created) is not.
    assert completion.extra == {
        "usage": {"completion_tokens_details": {"audio_tokens": 0, "text_tokens": 0}}
    }


# The reference's billing note: reasoning tokens "are recorded for audit only in the response,
# in output.usage.reasoning_tokens, and in pricing_detail".
AUDIT_RECORDS: list[dict[str, Any]] = [
    {"output": {"usage": {"reasoning_tokens": 457}}},
    {"pricing_detail": {"input_tokens": 194, "output_tokens": 229, "reasoning_tokens": 457}},
    {"output": {"usage": {}}, "pricing_detail": {"reasoning_tokens": "457"}},
]


@pytest.mark.parametrize("records", AUDIT_RECORDS)
def test_reasoning_tokens_from_the_audit_records_when_usage_has_none(
    records: dict[str, Any],
) -> None:
    body = copy.deepcopy(REFERENCE_RESPONSE)
    del body["usage"]["completion_tokens_details"]
    body.update(copy.deepcopy(records))
    completion = parse_completion(body)
    assert completion.reasoning_tokens == 457
    assert all(completion.extra[key] == value for key, value in records.items())  # kept
    # usage's own count wins over the audit records
    body["usage"]["completion_tokens_details"] = {"reasoning_tokens": 5}
    assert parse_completion(body).reasoning_tokens == 5


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_thoughts_from_a_message_field(field: str) -> None:
    completion = parse_completion(with_message(content="42", **{field: "Let me think."}))
    assert (completion.content, completion.thoughts) == ("42", "Let me think.")
    assert "message" not in completion.extra


def test_both_reasoning_fields_keep_the_other_in_extra() -> None:
    completion = parse_completion(with_message(content="42", reasoning_content="a",
                                               reasoning="b"))
    assert completion.thoughts == "a"
    assert completion.extra["message"] == {"reasoning": "b"}


@pytest.mark.parametrize(
    ("content", "expected_content", "expected_thoughts"),
    [
        ("<thought>Hmm.</thought>Answer", "Answer", "Hmm."),
        ("<thought>\nHmm.\n</thought>\n\nAnswer", "Answer", "Hmm."),
        ("  <thought>Hmm.</thought>Answer", "Answer", "Hmm."),
        ("<think>Hmm.</think>Answer", "Answer", "Hmm."),
        ("<thought>a</thought><thought>b</thought>Answer", "Answer", "a\nb"),
        ("<thought>cut off by max_tokens", "", "cut off by max_tokens"),
        ("Answer <thought>not leading</thought>", "Answer <thought>not leading</thought>", ""),
        ("  plain with leading spaces", "  plain with leading spaces", ""),
        ("<thoughtful>", "<thoughtful>", ""),
        ("<th", "<th", ""),
        ("", "", ""),
    ],
)
def test_thought_tags_in_content(content: str, expected_content: str,
                                 expected_thoughts: str) -> None:
    completion = parse_completion(with_message(content=content))
    assert (completion.content, completion.thoughts) == (expected_content, expected_thoughts)


def test_field_and_tag_thoughts_both_kept() -> None:
    completion = parse_completion(with_message(content="<thought>t</thought>A",
                                               reasoning_content="f"))
    assert (completion.content, completion.thoughts) == ("A", "f\nt")


def test_everything_else_goes_to_extra() -> None:
    annotations = [{"type": "url_citation", "url_citation": {"url": "https://x", "title": "X"}}]
    tool_calls = [{"id": "call_1", "type": "function",
                   "function": {"name": "googleSearch", "arguments": "{}"}}]
    body = with_message(content="A", annotations=annotations, tool_calls=tool_calls,
                        refusal=None, mystery={"k": 1})
    body["choices"][0]["logprobs"] = {"content": []}
    body["choices"].append({"index": 1, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "B"}})
    body["grounding_metadata"] = {"search_queries": ["shanghai weather"]}
    body["system_fingerprint"] = "fp_1"
    completion = parse_completion(body)
    assert completion.content == "A"
    assert completion.extra["message"] == {"annotations": annotations,
                                           "tool_calls": tool_calls, "mystery": {"k": 1}}
    assert completion.extra["choice"] == {"logprobs": {"content": []}}
    assert completion.extra["choices"] == [body["choices"][1]]
    assert completion.extra["grounding_metadata"] == {"search_queries": ["shanghai weather"]}
    assert completion.extra["system_fingerprint"] == "fp_1"
    orjson.dumps(completion.extra)  # the store writes it as JSON


def test_content_as_list_of_parts() -> None:
    completion = parse_completion(with_message(content=[{"type": "text", "text": "a"},
                                                        {"type": "text", "text": "b"}]))
    assert completion.content == "ab"
    assert "message" not in completion.extra
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    completion = parse_completion(with_message(content=[{"type": "text", "text": "a"}, image]))
    assert completion.content == "a"
    assert completion.extra["message"]["content"][1] == image


def test_tool_call_answer_with_null_content() -> None:
    body = with_message(content=None, tool_calls=[{"id": "c"}])
    body["choices"][0]["finish_reason"] = "tool_calls"
    completion = parse_completion(body)
    assert completion.content == ""
    assert completion.finish_reason == "tool_calls"
    assert completion.extra["message"]["tool_calls"] == [{"id": "c"}]


def test_missing_usage_and_credits() -> None:
    body = copy.deepcopy(REFERENCE_RESPONSE)
    del body["usage"], body["credits_consumed"]
    completion = parse_completion(body)
    assert not completion.has_usage
    assert completion.credits_consumed is None
    assert completion.reasoning_tokens is None


def test_odd_usage_values() -> None:
    body = copy.deepcopy(REFERENCE_RESPONSE)
    body["usage"] = {"prompt_tokens": "12", "completion_tokens": 3.0, "total_tokens": None,
                     "reasoning_tokens": 5, "credits_consumed": "0.5"}
    del body["credits_consumed"]
    completion = parse_completion(body)
    assert (completion.prompt_tokens, completion.completion_tokens) == (12, 3)
    assert completion.total_tokens is None
    assert completion.reasoning_tokens == 5
    assert completion.credits_consumed == 0.5
    assert "usage" not in completion.extra


def test_no_choices() -> None:
    body = copy.deepcopy(REFERENCE_RESPONSE)
    body["choices"] = []
    completion = parse_completion(body)
    assert completion.content == "" and completion.finish_reason is None


def test_http_status_is_recorded() -> None:
    assert parse_completion(REFERENCE_RESPONSE, http_status=201).http_status == 201


@pytest.mark.parametrize("obj", [[], "text", 3, None])
def test_non_object_body_is_a_transport_error(obj: Any) -> None:
    with pytest.raises(errors.TransportError):
        parse_completion(obj)


@pytest.mark.parametrize(
    ("error", "cls", "code", "status"),
    [
        ({"code": "insufficient_credits", "message": "low", "type": "billing_error"},
         errors.InsufficientCreditsError, "insufficient_credits", 402),
        ({"code": "upstream_error", "message": "x"}, errors.UpstreamError, "upstream_error", 503),
        ({"code": "rate_limit_exceeded", "message": "x"}, errors.RateLimitedError,
         "rate_limit_exceeded", 429),
        ({"code": 429, "message": "slow down"}, errors.RateLimitedError, "429", 429),
        ({"code": "503", "message": "x"}, errors.UpstreamError, "503", 503),
        ({"message": "something broke"}, errors.TransportError, "transport_error", None),
        ("plain string error", errors.TransportError, "transport_error", None),
    ],
)
def test_error_object_in_a_200_body(error: Any, cls: type[errors.BatchrunError], code: str,
                                    status: int | None) -> None:
    with pytest.raises(cls) as caught:
        parse_completion({"error": error})
    assert type(caught.value) is cls
    assert caught.value.code == code
    assert caught.value.http_status == status


def test_null_error_field_is_not_an_error() -> None:
    body = copy.deepcopy(REFERENCE_RESPONSE)
    body["error"] = None
    assert parse_completion(body).content


# ---------------------------------------------------------------- streams


def chunk(content: str | None = None, *, finish: str | None = None, reasoning: str | None = None,
          usage: dict[str, Any] | None = None, credits: float | None = None,
          **delta: Any) -> dict[str, Any]:
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    body: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": "gemini-3.1-pro-preview",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    if credits is not None:
        body["credits_consumed"] = credits
    return body


USAGE = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 35,
         "completion_tokens_details": {"reasoning_tokens": 5}}


def run_stream(chunks: list[dict[str, Any]], saw_done: bool = True):  # type: ignore[no-untyped-def]
    accumulator = StreamAccumulator()
    for item in chunks:
        accumulator.add(item)
    return accumulator.finish(saw_done)


def test_stream_concatenates_content_and_thoughts() -> None:
    completion = run_stream([
        chunk("", role="assistant"),
        chunk(reasoning="Thinking "), chunk(reasoning="hard."),
        chunk("Hel"), chunk("lo"), chunk("!", finish="stop", usage=USAGE, credits=0.02),
    ])
    assert (completion.content, completion.thoughts) == ("Hello!", "Thinking hard.")
    assert completion.finish_reason == "stop"
    assert (completion.prompt_tokens, completion.completion_tokens) == (10, 20)
    assert (completion.reasoning_tokens, completion.total_tokens) == (5, 35)
    assert completion.credits_consumed == 0.02
    assert completion.model == "gemini-3.1-pro-preview"
    assert completion.response_id == "chatcmpl-1"
    assert completion.extra == {}


def test_usage_on_an_extra_chunk_without_choices() -> None:
    usage_chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                   "usage": USAGE, "credits_consumed": 0.03}
    completion = run_stream([chunk("Hi"), chunk(finish="stop"), usage_chunk])
    assert completion.content == "Hi"
    assert completion.has_usage and completion.credits_consumed == 0.03


def test_last_non_null_usage_and_credits_win() -> None:
    early = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
    completion = run_stream([
        chunk("a", usage=early, credits=0.001),
        {**chunk("b"), "usage": None, "credits_consumed": None},
        chunk(finish="stop", usage=USAGE, credits=0.02),
        {**chunk(), "choices": [], "usage": None},
    ])
    assert completion.completion_tokens == 20 and completion.credits_consumed == 0.02


@pytest.mark.parametrize("records", AUDIT_RECORDS)
def test_a_stream_takes_reasoning_tokens_from_the_audit_records_too(
    records: dict[str, Any],
) -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 35}
    last = {**chunk(finish="stop", usage=usage), **copy.deepcopy(records)}
    completion = run_stream([chunk("Hi"), last])
    assert completion.reasoning_tokens == 457 and completion.content == "Hi"
    assert all(completion.extra[key] == value for key, value in records.items())


def test_reasoning_field_named_reasoning() -> None:
    first = chunk()
    first["choices"][0]["delta"] = {"reasoning": "r"}
    completion = run_stream([first, chunk("c", finish="stop")])
    assert (completion.content, completion.thoughts) == ("c", "r")
    assert completion.extra == {}


def test_thought_tags_spanning_chunks() -> None:
    pieces = ["<tho", "ught>I am ", "thinking</th", "ought>", "\n\nThe ", "answer"]
    completion = run_stream([chunk(p) for p in pieces] + [chunk(finish="stop", usage=USAGE)])
    assert (completion.content, completion.thoughts) == ("The answer", "I am thinking")


_fragment = st.sampled_from(["<thought>", "</thought>", "<think>", "</think>", "<", ">", "/",
                             "t", "ho", "ught", " ", "\n", "answer", "é", "🎉"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_fragment, max_size=12), st.lists(st.integers(0, 200), max_size=8))
def test_stream_and_body_split_thoughts_the_same(fragments: list[str], cuts: list[int]) -> None:
    content = "".join(fragments)
    whole = parse_completion(with_message(content=content))
    points = sorted({cut % (len(content) + 1) for cut in cuts})
    pieces = [content[a:b] for a, b in zip([0, *points], [*points, len(content)], strict=True)]
    streamed = run_stream([chunk(p) for p in pieces] + [chunk(finish="stop")])
    assert (streamed.content, streamed.thoughts) == (whole.content, whole.thoughts)
    # Nothing is lost: every character is in the content, the thoughts or a tag.
    assert len(whole.content) + len(whole.thoughts) <= len(content)


def test_tool_call_fragments_are_merged() -> None:
    completion = run_stream([
        chunk(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "googleSearch", "arguments": ""}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"q":'}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '"x"}'}}]),
        chunk(finish="tool_calls", usage=USAGE),
    ])
    assert completion.finish_reason == "tool_calls"
    assert completion.extra["message"]["tool_calls"] == [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "googleSearch", "arguments": '{"q":"x"}'}}
    ]


def test_annotations_and_unknown_fields_are_kept() -> None:
    first = chunk("A", annotations=[{"url": "https://a"}])
    first["choices"][0]["logprobs"] = {"content": [{"token": "A"}]}
    last = chunk(finish="stop", annotations=[{"url": "https://b"}], usage=USAGE)
    last["choices"][0]["logprobs"] = {"content": [{"token": "."}]}
    last["grounding_metadata"] = {"queries": ["q"]}
    last["system_fingerprint"] = "fp"
    completion = run_stream([first, last])
    assert completion.extra["message"] == {"annotations": [{"url": "https://a"},
                                                           {"url": "https://b"}]}
    assert completion.extra["choice"] == {"logprobs": {"content": [{"token": "A"},
                                                                   {"token": "."}]}}
    assert completion.extra["grounding_metadata"] == {"queries": ["q"]}
    assert completion.extra["system_fingerprint"] == "fp"


def test_other_choices_are_kept() -> None:
    second = chunk("B", finish="stop")
    second["choices"][0]["index"] = 1
    completion = run_stream([chunk("A", finish="stop", usage=USAGE), second])
    assert completion.content == "A"
    assert completion.extra["choices"] == [{"index": 1, "finish_reason": "stop",
                                            "content": "B", "thoughts": ""}]


def test_error_event_raises_whatever_the_status() -> None:
    accumulator = StreamAccumulator(http_status=200)
    accumulator.add(chunk("partial"))
    with pytest.raises(errors.UpstreamError) as caught:
        accumulator.add({"error": {"code": "upstream_error", "message": "provider failed",
                                   "type": "upstream_error"}})
    assert caught.value.code == "upstream_error"
    assert caught.value.http_status == 503


def test_error_event_with_unknown_code_is_retryable() -> None:
    with pytest.raises(errors.RetryableError):
        StreamAccumulator().add({"error": {"message": "boom", "code": "weird"}})


def test_stream_without_done_or_finish_is_truncated() -> None:
    with pytest.raises(errors.TransportError, match=r"stream ended before \[DONE\]"):
        run_stream([chunk("Hel"), chunk("lo")], saw_done=False)
    with pytest.raises(errors.TransportError, match=r"stream ended before \[DONE\]"):
        run_stream([], saw_done=False)


def test_stream_without_done_with_finish_but_no_usage_is_truncated() -> None:
    # The usage chunk comes after finish_reason; losing it is an interrupted stream.
    with pytest.raises(errors.TransportError):
        run_stream([chunk("Hi", finish="stop")], saw_done=False)


def test_stream_without_done_but_complete_is_accepted() -> None:
    completion = run_stream([chunk("Hi", finish="stop", usage=USAGE)], saw_done=False)
    assert completion.content == "Hi" and completion.has_usage


def test_stream_with_done_but_no_usage() -> None:
    completion = run_stream([chunk("Hi", finish="stop")], saw_done=True)
    assert completion.content == "Hi"
    assert not completion.has_usage
    assert completion.credits_consumed is None


def test_feed_event_handles_done_keepalives_and_garbage() -> None:
    accumulator = StreamAccumulator()
    assert accumulator.feed_event(orjson.dumps(chunk("x")).decode()) is False
    assert accumulator.feed_event("") is False
    assert accumulator.feed_event("[DONE]") is True
    with pytest.raises(errors.TransportError, match="not JSON"):
        accumulator.feed_event("{truncated")
    with pytest.raises(errors.TransportError, match="not a JSON object"):
        accumulator.feed_event("[1, 2]")
    with pytest.raises(errors.TransportError):
        decode_event('"just a string"')
    with pytest.raises(errors.TransportError):
        accumulator.add([])  # type: ignore[arg-type]


def test_stream_matches_body_for_the_same_answer() -> None:
    body = with_message(content="<thought>plan</thought>Done.", annotations=[{"u": 1}])
    whole = parse_completion(body)
    streamed = run_stream([
        chunk("<thought>pl"), chunk("an</thought>Do", annotations=[{"u": 1}]),
        chunk("ne.", finish="stop", usage=REFERENCE_RESPONSE["usage"], credits=0.25),
    ])
    for name in ("content", "thoughts", "finish_reason", "prompt_tokens", "completion_tokens",
                 "reasoning_tokens", "total_tokens", "credits_consumed", "extra"):
        assert getattr(streamed, name) == getattr(whole, name), name


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_fragment, st.text(max_size=4)), max_size=10))
def test_the_whole_text_shortcut_splits_as_the_splitter_does(fragments: list[str]) -> None:
    # split_thoughts skips the splitter when the text cannot start with a tag: same result.
    text = "".join(fragments)
    splitter = _ThoughtSplitter()
    splitter.feed(text)
    assert split_thoughts(text) == splitter.finish()


class _GeneralOnly(StreamAccumulator):
    """The accumulator without its shortcut for the usual chunk: the reference for it."""

    def _add_plain(self, chunk: dict[str, Any]) -> bool:
        return False


_text = st.one_of(st.text(max_size=6), st.sampled_from(["<thought>", "</thought>", " "]))
_odd = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.lists(_text, max_size=2),
                 st.dictionaries(st.sampled_from(["text", "type"]), _text, max_size=2))


@st.composite
def _shaped(draw: st.DrawFn, usual: dict[str, st.SearchStrategy[Any]],
            unusual: list[str]) -> dict[str, Any]:
    """Each usual key there or not (with a usual value, or now and then an odd one); now and
    then a key of another kind."""
    item: dict[str, Any] = {}
    for key, value in usual.items():
        if draw(st.booleans()):
            item[key] = draw(_odd) if draw(st.integers(0, 5)) == 0 else draw(value)
    if unusual and draw(st.integers(0, 5)) == 0:
        item[draw(st.sampled_from(unusual))] = draw(st.one_of(_text, _odd))
    return item


_delta = _shaped({"role": st.just("assistant"), "content": _text, "reasoning_content": _text},
                 ["reasoning", "tool_calls", "annotations"])
_choice = _shaped({"index": st.sampled_from([0, 0, 1]), "delta": _delta,
                   "finish_reason": st.sampled_from(["stop", "length"])},
                  ["message", "logprobs"])
_chunk = _shaped({"id": _text, "object": st.just("chat.completion.chunk"), "model": _text,
                  "choices": st.one_of(st.lists(_choice, min_size=1, max_size=1),
                                       st.lists(_choice, max_size=2)),
                  "usage": st.fixed_dictionaries({"prompt_tokens": st.integers(0, 9),
                                                  "completion_tokens": st.integers(0, 9)}),
                  "credits_consumed": st.floats(0, 1)},
                 ["error", "system_fingerprint"])


def _outcome(accumulator: StreamAccumulator, chunks: list[dict[str, Any]],
             saw_done: bool) -> Any:
    try:
        for item in chunks:
            accumulator.add(item)
        completion = accumulator.finish(saw_done)
    except errors.BatchrunError as exc:
        return (type(exc), exc.message)
    return (completion, accumulator.events)


@settings(max_examples=1000, deadline=None)
@given(st.lists(_chunk, max_size=6), st.booleans())
def test_the_usual_chunk_shortcut_takes_every_chunk_as_the_general_way(
    chunks: list[dict[str, Any]], saw_done: bool
) -> None:
    # Any chunk shape, usual or not: the shortcut takes what it knows and hands the rest on,
    # so the answer (content, thoughts, usage, extra …) and any error are the same.
    assert _outcome(StreamAccumulator(), copy.deepcopy(chunks), saw_done) == _outcome(
        _GeneralOnly(), copy.deepcopy(chunks), saw_done)


def test_the_shortcut_is_taken_for_the_usual_chunks() -> None:
    accumulator = StreamAccumulator()
    for item in [chunk("", role="assistant"), chunk(reasoning="t"), chunk("a"),
                 chunk("b", finish="stop"), {"id": "x", "choices": [], "usage": USAGE}]:
        assert accumulator._add_plain(item)
    assert not accumulator._add_plain(chunk("a", annotations=[1]))
    assert not accumulator._add_plain({"choices": [chunk("a")["choices"][0]] * 2})
