"""Estimated prompt tokens of chat messages and manifest rows (pure; no file is opened).

Text: Gemini's "about 4 characters per token" for Latin script; CJK and other scripts cost
more per character (a character never costs more than its UTF-8 bytes). Media: the model's
``MediaRules`` from the catalog, applied to the file's metadata (pages, seconds, pixels:
``media.meta``) when the caller read it, else to documented defaults. These are estimates:
the exact counts only exist after the call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from batchrun.cost.catalog import GEMINI_3_RULES, MediaRules
from batchrun.media.meta import MediaMeta

# Characters per token by script, for text that has not been calibrated.
CHARS_PER_TOKEN_LATIN = 4.0
TOKENS_PER_CJK_CHAR = 1.0
CHARS_PER_TOKEN_OTHER = 2.0
MESSAGE_OVERHEAD_TOKENS = 4
DEFAULT_PDF_PAGES = 5
DEFAULT_MEDIA_SECONDS = 60.0
_EXTENSION_KIND = {
    **dict.fromkeys(("png", "jpg", "jpeg", "webp", "gif", "heic", "heif", "bmp"), "image"),
    "pdf": "pdf",
    **dict.fromkeys(("mp3", "wav", "flac", "ogg", "m4a", "aac", "opus"), "audio"),
    **dict.fromkeys(("mp4", "mov", "webm", "mkv", "avi", "mpeg", "mpg"), "video"),
}


# Kana, CJK ideographs (with extension A and the supplementary planes), Hangul, compatibility
# ideographs: about one token per character.
_CJK_RUNS = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
    "\U00020000-\U0002fa1f]+"
)
_NON_LATIN_RUNS = re.compile("[^\u0000-\u024f]+")  # beyond Latin Extended-B


def _run_length(pattern: re.Pattern[str], text: str) -> int:
    return sum(map(len, pattern.findall(text)))


def text_tokens(text: str) -> int:
    """Estimated tokens of ``text`` by script (the regexes count in C: 1M rows in seconds)."""
    if text.isascii():
        return math.ceil(len(text) / CHARS_PER_TOKEN_LATIN)
    non_latin = _run_length(_NON_LATIN_RUNS, text)
    cjk = _run_length(_CJK_RUNS, text)
    latin = len(text) - non_latin
    other = non_latin - cjk
    return math.ceil(
        latin / CHARS_PER_TOKEN_LATIN + cjk * TOKENS_PER_CJK_CHAR + other / CHARS_PER_TOKEN_OTHER
    )


def media_kind(ref: str) -> str:
    """image | pdf | audio | video from a data URL's MIME type or a path's extension."""
    if ref.startswith("data:"):
        mime = ref[5:].split(";", 1)[0].split(",", 1)[0].lower()
        if mime == "application/pdf":
            return "pdf"
        top = mime.split("/", 1)[0]
        return top if top in ("image", "audio", "video") else "image"
    name = ref.split("?", 1)[0].rsplit("/", 1)[-1].lower()
    extension = name.rsplit(".", 1)[-1] if "." in name else ""
    return _EXTENSION_KIND.get(extension, "image")


def media_tokens(
    kind: str,
    *,
    pages: int | None = None,
    seconds: float | None = None,
    width: int | None = None,
    height: int | None = None,
    rules: MediaRules = GEMINI_3_RULES,
) -> int:
    """Tokens for one media part; unknown pages/seconds use documented defaults."""
    if kind == "pdf":
        return rules.pdf_page_tokens * (pages or DEFAULT_PDF_PAGES)
    if kind == "audio":
        return math.ceil(rules.audio_tokens_per_s * (seconds or DEFAULT_MEDIA_SECONDS))
    if kind == "video":
        duration = seconds or DEFAULT_MEDIA_SECONDS
        frames = max(1, math.ceil(duration))
        return frames * rules.video_frame_tokens + math.ceil(
            duration * rules.audio_tokens_per_s)
    tile = rules.image_tile_px
    if tile is None or width is None or height is None:
        return rules.image_tokens
    if width <= tile // 2 and height <= tile // 2:
        return rules.image_tokens
    return math.ceil(width / tile) * math.ceil(height / tile) * rules.image_tokens


def meta_tokens(meta: MediaMeta, rules: MediaRules = GEMINI_3_RULES) -> int:
    """Tokens for a media file whose metadata was read."""
    return media_tokens(
        meta.kind,
        pages=meta.pages,
        seconds=meta.seconds_or_guess(),
        width=meta.width,
        height=meta.height,
        rules=rules,
    )


class RowEstimate(NamedTuple):
    """One row's estimated prompt tokens (a tuple: a million of them are made per 1M rows)."""

    prompt_tokens: int
    kind: str  # the costliest media kind of the row, or "text"


def messages_estimate(
    messages: Iterable[Any],
    media: Mapping[str, MediaMeta] | None = None,
    rules: MediaRules = GEMINI_3_RULES,
) -> RowEstimate:
    """Estimate prompt tokens of OpenAI chat messages (text parts and image_url parts).

    ``media`` maps a part's URL or path to its metadata where the caller read it.
    """
    tokens = 0
    kind = "text"
    kind_tokens = 0
    for part_type, value in message_parts(messages):
        if part_type == PART_MESSAGE:
            tokens += MESSAGE_OVERHEAD_TOKENS
        elif part_type == PART_TEXT:
            tokens += text_tokens(value)
        else:
            part_kind, part_tokens = media_part_tokens(value, media, rules)
            tokens += part_tokens
            if part_tokens > kind_tokens:
                kind, kind_tokens = part_kind, part_tokens
    return RowEstimate(prompt_tokens=tokens, kind=kind)
PART_MESSAGE = "message"  # one per message: its overhead
PART_TEXT = "text"
# Every media type travels as an image_url part (the gateway's API reference).
PART_MEDIA = "image_url"


def message_parts(messages: Iterable[Any]) -> Iterator[tuple[str, str]]:
    """Walk chat messages as (PART_MESSAGE, "") per message, then (PART_TEXT, text) and
    (PART_MEDIA, url) per part; anything else in them is skipped."""
    for message in messages:
        yield PART_MESSAGE, ""
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield PART_TEXT, content
            continue
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                yield PART_TEXT, str(part.get("text", ""))
            elif part.get("type") == "image_url":
                url_obj = part.get("image_url")
                yield PART_MEDIA, url_obj.get("url", "") if isinstance(url_obj, dict) else str(
                    url_obj)


def media_part_tokens(
    url: str, media: Mapping[str, MediaMeta] | None, rules: MediaRules
) -> tuple[str, int]:
    """(kind, tokens) of one media part: from its metadata when read, else by its name."""
    meta = media.get(url) if media else None
    if meta is not None:
        return meta.kind, meta_tokens(meta, rules)
    kind = media_kind(url)
    return kind, media_tokens(kind, rules=rules)


def row_estimate(
    messages: Iterable[Any] | None,
    prompt: str | None,
    system: str | None,
    media: Iterable[str],
    metas: Mapping[str, MediaMeta] | None = None,
    rules: MediaRules = GEMINI_3_RULES,
) -> RowEstimate:
    """Estimate a manifest row from its parts and the metadata the caller read (if any).

    ``system`` goes first, as the request builder puts it: before a prompt, or before
    messages that carry no system (or developer) message of their own.
    """
    if messages is not None:
        messages = list(messages)
        estimate = messages_estimate(messages, metas, rules)
        if system and not any(
            isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages
        ):
            tokens = estimate.prompt_tokens + MESSAGE_OVERHEAD_TOKENS + text_tokens(system)
            return RowEstimate(tokens, estimate.kind)
        return estimate
    media = tuple(media)
    if not media:  # the common text row, without building messages (1M rows: seconds count)
        tokens = MESSAGE_OVERHEAD_TOKENS + text_tokens(prompt or "")
        if system:
            tokens += MESSAGE_OVERHEAD_TOKENS + text_tokens(system)
        return RowEstimate(prompt_tokens=tokens, kind="text")
    built: list[dict[str, Any]] = []
    if system:
        built.append({"role": "system", "content": system})
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt or ""}]
    parts += [{"type": "image_url", "image_url": {"url": ref}} for ref in media]
    built.append({"role": "user", "content": parts})
    return messages_estimate(built, metas, rules)
