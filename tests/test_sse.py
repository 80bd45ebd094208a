"""SSEDecoder: bytes in, data payloads out, however the bytes are cut."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.api.sse import SSEDecoder


def decode_all(chunks: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    events: list[str] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def test_simple_events_and_done() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    assert decode_all([stream]) == ['{"a":1}', '{"b":2}', "[DONE]"]


def test_events_come_out_as_soon_as_complete() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\n") == ["one"]
    assert decoder.feed(b"data: two\n\ndata: thr") == ["two"]
    assert decoder.feed(b"ee\n\n") == ["three"]
    assert decoder.flush() == []


def test_multiline_data_joined_with_newline() -> None:
    assert decode_all([b"data: first\ndata: second\ndata:third\n\n"]) == ["first\nsecond\nthird"]


def test_comments_and_other_fields_are_ignored() -> None:
    stream = (b": keep-alive\n\nevent: message\nid: 7\nretry: 100\n: note\ndata: x\n\n"
              b"event: ping\n\n")
    assert decode_all([stream]) == ["x"]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(eol: bytes) -> None:
    stream = eol.join([b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert decode_all([stream]) == ["a\nb", "c"]


def test_crlf_split_between_feeds_is_one_line_end() -> None:
    # "\r" then "\n" in the next read must not count as an extra blank line.
    assert decode_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]) == ["a\nb"]


def test_utf8_character_split_between_feeds() -> None:
    raw = "data: héllo — 世界 🎉\n\n".encode()
    cut = raw.index("世".encode()) + 1  # inside the 3-byte character
    assert decode_all([raw[:cut], raw[cut:]]) == ["héllo — 世界 🎉"]
    assert decode_all([bytes([b]) for b in raw]) == ["héllo — 世界 🎉"]


def test_only_one_leading_space_is_removed() -> None:
    assert decode_all([b"data:  two spaces\n\n"]) == [" two spaces"]


def test_empty_data_and_bare_field_name() -> None:
    assert decode_all([b"data:\n\ndata\ndata\n\n"]) == ["", "\n"]


def test_colon_inside_value_is_kept() -> None:
    assert decode_all([b'data: {"u":"http://x"}\n\n']) == ['{"u":"http://x"}']


def test_bom_is_stripped_even_when_split() -> None:
    raw = b"\xef\xbb\xbfdata: x\n\n"
    assert decode_all([raw]) == ["x"]
    assert decode_all([raw[:1], raw[1:2], raw[2:]]) == ["x"]


def test_flush_hands_on_an_unterminated_last_event() -> None:
    assert decode_all([b"data: a\n\ndata: [DONE]"]) == ["a", "[DONE]"]
    assert decode_all([b"data: a\n\ndata: {\"cut"]) == ["a", '{"cut']
    assert decode_all([b"data: a\n\n: trailing comment"]) == ["a"]


def test_flush_after_trailing_cr() -> None:
    assert decode_all([b"data: a\r"]) == ["a"]


def test_empty_feeds_are_harmless() -> None:
    assert decode_all([b"", b"data: a\n", b"", b"\n", b""]) == ["a"]


# A valid stream built from events, with comments, other fields and any line endings.
_value = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
    max_size=30,
)
_eol = st.sampled_from(["\n", "\r\n", "\r"])
_event = st.lists(_value, min_size=1, max_size=4)
_noise = st.sampled_from(["", ": keep-alive", "event: message", "id: 42", "retry: 5"])


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    events = draw(st.lists(_event, max_size=8))
    lines: list[str] = []
    for data_lines in events:
        noise = draw(_noise)
        if noise:
            lines.append(noise)
        lines.extend("data: " + value for value in data_lines)
        lines.append("")
    text = ""
    previous_eol = ""
    for line in lines:
        eol = draw(_eol)
        if previous_eol == "\r" and line == "" and eol == "\n":
            eol = "\r\n"  # "\r" + "\n" would read as one line end, not a blank line
        text += line + eol
        previous_eol = eol
    expected = ["\n".join(data_lines) for data_lines in events]
    return text.encode(), expected


@settings(max_examples=300, deadline=None)
@given(streams(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_any_split_gives_the_same_events(
    stream: tuple[bytes, list[str]], cuts: list[int]
) -> None:
    raw, expected = stream
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    chunks = [raw[start:end] for start, end in zip([0, *points], [*points, len(raw)],
                                                   strict=True)]
    assert decode_all([raw]) == expected
    assert decode_all(chunks) == expected


@settings(max_examples=100, deadline=None)
@given(streams())
def test_byte_by_byte_gives_the_same_events(stream: tuple[bytes, list[str]]) -> None:
    raw, expected = stream
    assert decode_all([raw[i:i + 1] for i in range(len(raw))]) == expected


def reference_events(raw: bytes) -> list[str]:
    """The event-stream rules applied to a whole body at once, with no state to get wrong:
    what the decoder must give however the body is cut (the unterminated last line counts,
    as ``flush`` hands it on)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    events: list[str] = []
    data: list[bytes] = []
    for line in [*re.split(rb"\r\n|\r|\n", raw), b""]:
        if not line:
            if data:
                events.append(b"\n".join(data).decode("utf-8", "replace"))
                data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line == b"data":
            data.append(b"")
    return events


# Byte soup from the pieces that matter: line ends of every kind, blank lines, data lines
# with and without their space, comments, other fields, a BOM, a cut UTF-8 character.
_piece = st.sampled_from([b"data: ", b"data:", b"data", b": c", b"event: e", b"x", b" ",
                          b'{"a":1}', b"\n", b"\n", b"\n\n", b"\r", b"\r\n",
                          "é".encode(), "é".encode()[:1], b"\xef\xbb\xbf"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_piece, max_size=40), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_bytes_any_split_decode_as_the_rules_say(pieces: list[bytes],
                                                     cuts: list[int]) -> None:
    # Reads of whole one-line events take the decoder's shortcut, anything else its line by
    # line way, and a stream may go from one to the other at any read: all by the same rules.
    raw = b"".join(pieces)
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    chunks = [raw[start:end] for start, end in zip([0, *points], [*points, len(raw)],
                                                   strict=True)]
    expected = reference_events(raw)
    assert decode_all([raw]) == expected
    assert decode_all(chunks) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(_piece, max_size=40), st.lists(st.integers(0, 10_000), max_size=12))
def test_bytes_and_text_feeds_agree(pieces: list[bytes], cuts: list[int]) -> None:
    raw = b"".join(pieces)
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    chunks = [raw[start:end] for start, end in zip([0, *points], [*points, len(raw)],
                                                   strict=True)]
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed_bytes(chunk)]
    events.extend(decoder.flush_bytes())
    assert [event.decode("utf-8", "replace") for event in events] == decode_all(chunks)
