"""Token and credit estimates for rows before anything is sent (pure; no file is opened).

Text: Gemini's "about 4 characters per token" for Latin script; CJK and other scripts cost
more per character (a character never costs more than its UTF-8 bytes). Media: the
per-image / per-page / per-second rules of API-NOTES, one table per model family, applied to
the file's metadata (pages, seconds, pixels: ``media_meta``) when the caller read it, else to
documented defaults. These are estimates: the exact counts only exist after the call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchrun.media_meta import MediaMeta
from batchrun.pricing import Price

# Characters per token by script, for text that has not been calibrated.
CHARS_PER_TOKEN_LATIN = 4.0
TOKENS_PER_CJK_CHAR = 1.0
CHARS_PER_TOKEN_OTHER = 2.0
MESSAGE_OVERHEAD_TOKENS = 4

# Gemini 3 at default media resolution (API-NOTES).
IMAGE_TOKENS = 1120
PDF_PAGE_TOKENS = 560
AUDIO_TOKENS_PER_S = 25
VIDEO_FRAME_TOKENS = 70  # one frame per second, plus the audio track
DEFAULT_PDF_PAGES = 5
DEFAULT_MEDIA_SECONDS = 60.0

# Output band around the job's expected_output_tokens when nothing was calibrated.
OUTPUT_LOW_FACTOR = 0.5
OUTPUT_HIGH_FACTOR = 2.0

_EXTENSION_KIND = {
    **dict.fromkeys(("png", "jpg", "jpeg", "webp", "gif", "heic", "heif", "bmp"), "image"),
    "pdf": "pdf",
    **dict.fromkeys(("mp3", "wav", "flac", "ogg", "m4a", "aac", "opus"), "audio"),
    **dict.fromkeys(("mp4", "mov", "webm", "mkv", "avi", "mpeg", "mpg"), "video"),
}
KINDS = ("text", "image", "pdf", "audio", "video")


def _is_cjk(code_point: int) -> bool:
    return (
        0x3040 <= code_point <= 0x30FF  # kana
        or 0x3400 <= code_point <= 0x4DBF
        or 0x4E00 <= code_point <= 0x9FFF
        or 0xAC00 <= code_point <= 0xD7AF  # hangul
        or 0xF900 <= code_point <= 0xFAFF
        or 0x20000 <= code_point <= 0x2FA1F
    )


def text_tokens(text: str) -> int:
    """Estimated tokens of ``text`` by script."""
    if text.isascii():
        return math.ceil(len(text) / CHARS_PER_TOKEN_LATIN)
    latin = cjk = other = 0
    for char in text:
        code_point = ord(char)
        if code_point < 0x250:
            latin += 1
        elif _is_cjk(code_point):
            cjk += 1
        else:
            other += 1
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


@dataclass(frozen=True)
class MediaRules:
    """How one model family counts media tokens (API-NOTES)."""

    image_tokens: int  # per image, or per tile when ``image_tile_px`` is set
    pdf_page_tokens: int
    audio_tokens_per_s: float
    video_frame_tokens: int  # one frame per second, plus the audio track
    image_tile_px: int | None = None  # Gemini 2.x: 768 px tiles; ≤ half a tile is one unit


GEMINI_3_RULES = MediaRules(IMAGE_TOKENS, PDF_PAGE_TOKENS, AUDIO_TOKENS_PER_S, VIDEO_FRAME_TOKENS)
GEMINI_2_RULES = MediaRules(258, 258, 32, 258, image_tile_px=768)


def rules_for(model: str) -> MediaRules:
    """Gemini 1.x/2.x tile images and count 32 audio tokens/s; 3.x and unknown models: 3.x."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(("gemini-1", "gemini-2")):
        return GEMINI_2_RULES
    return GEMINI_3_RULES


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


@dataclass(frozen=True)
class RowEstimate:
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
    for message in messages:
        tokens += MESSAGE_OVERHEAD_TOKENS
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            tokens += text_tokens(content)
            continue
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                tokens += text_tokens(str(part.get("text", "")))
            elif part.get("type") == "image_url":
                url_obj = part.get("image_url")
                url = url_obj.get("url", "") if isinstance(url_obj, dict) else str(url_obj)
                meta = media.get(url) if media else None
                if meta is not None:
                    part_kind, part_tokens = meta.kind, meta_tokens(meta, rules)
                else:
                    part_kind = media_kind(url)
                    part_tokens = media_tokens(part_kind, rules=rules)
                tokens += part_tokens
                if part_tokens > kind_tokens:
                    kind, kind_tokens = part_kind, part_tokens
    return RowEstimate(prompt_tokens=tokens, kind=kind)


@dataclass
class Band:
    low: float = 0.0
    expected: float = 0.0
    high: float = 0.0

    def as_dict(self, digits: int | None = None) -> dict[str, float]:
        values = {"low": self.low, "expected": self.expected, "high": self.high}
        if digits is None:
            return values
        return {k: round(v, digits) for k, v in values.items()}


@dataclass
class KindTotals:
    rows: int = 0
    prompt_tokens: int = 0
    credits: float = 0.0


@dataclass
class RunEstimate:
    """Totals over a manifest: what ``estimate --json`` prints."""

    rows: int = 0
    rows_unsendable: int = 0
    unsendable_examples: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: Band = field(default_factory=Band)
    credits: Band = field(default_factory=Band)
    usd: Band = field(default_factory=Band)
    by_kind: dict[str, KindTotals] = field(default_factory=dict)

    def add_row(self, estimate: RowEstimate, expected_output: int, price: Price) -> None:
        self.rows += 1
        self.prompt_tokens += estimate.prompt_tokens
        low = expected_output * OUTPUT_LOW_FACTOR
        high = expected_output * OUTPUT_HIGH_FACTOR
        self.output_tokens.low += low
        self.output_tokens.expected += expected_output
        self.output_tokens.high += high
        row_credits = price.credits(estimate.prompt_tokens, expected_output)
        self.credits.low += price.credits(estimate.prompt_tokens, int(low))
        self.credits.expected += row_credits
        self.credits.high += price.credits(estimate.prompt_tokens, int(high))
        totals = self.by_kind.setdefault(estimate.kind, KindTotals())
        totals.rows += 1
        totals.prompt_tokens += estimate.prompt_tokens
        totals.credits += row_credits

    def add_unsendable(self, reason: str, max_examples: int = 20) -> None:
        self.rows += 1
        self.rows_unsendable += 1
        if len(self.unsendable_examples) < max_examples:
            self.unsendable_examples.append(reason)

    def finish(self, price: Price) -> RunEstimate:
        self.usd = Band(
            low=price.usd(self.credits.low),
            expected=price.usd(self.credits.expected),
            high=price.usd(self.credits.high),
        )
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "rows_unsendable": self.rows_unsendable,
            "unsendable_examples": self.unsendable_examples,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": {k: int(v) for k, v in self.output_tokens.as_dict().items()},
            "credits": self.credits.as_dict(6),
            "usd": self.usd.as_dict(6),
            "by_kind": {
                kind: {
                    "rows": totals.rows,
                    "tokens": totals.prompt_tokens,
                    "credits": round(totals.credits, 6),
                }
                for kind, totals in self.by_kind.items()
            },
            "note": "estimates: exact token counts exist only after each call",
        }


def row_estimate(
    messages: Iterable[Any] | None,
    prompt: str | None,
    system: str | None,
    media: Iterable[str],
    metas: Mapping[str, MediaMeta] | None = None,
    rules: MediaRules = GEMINI_3_RULES,
) -> RowEstimate:
    """Estimate a manifest row from its parts and the metadata the caller read (if any)."""
    if messages is not None:
        return messages_estimate(messages, metas, rules)
    built: list[dict[str, Any]] = []
    if system:
        built.append({"role": "system", "content": system})
    parts: list[dict[str, Any]] = [{"type": "text", "text": prompt or ""}]
    parts += [{"type": "image_url", "image_url": {"url": ref}} for ref in media]
    built.append({"role": "user", "content": parts})
    return messages_estimate(built, metas, rules)
