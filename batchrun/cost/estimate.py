"""Token and credit estimates for rows before anything is sent (pure; no file is opened).

Text: Gemini's "about 4 characters per token" for Latin script; CJK and other scripts cost
more per character (a character never costs more than its UTF-8 bytes). Media: the
per-image / per-page / per-second rules of API-NOTES, one table per model family, applied to
the file's metadata (pages, seconds, pixels: ``media_meta``) when the caller read it, else to
documented defaults. These are estimates: the exact counts only exist after the call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from batchrun.cost.catalog import Price
from batchrun.media.meta import MediaMeta

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
UNSENDABLE_LISTED = 100  # rows listed by name; all are counted


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
PART_MEDIA = "image_url"  # every media type travels as an image_url part (the seed)


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


@dataclass
class Band:
    """A low / expected / high triple (a total over rows, not one row)."""

    low: float = 0.0
    expected: float = 0.0
    high: float = 0.0

    def as_dict(self, digits: int | None = None) -> dict[str, float]:
        values = {"low": self.low, "expected": self.expected, "high": self.high}
        if digits is None:
            return values
        return {k: round(v, digits) for k, v in values.items()}

    def plus(self, other: Band) -> Band:
        return Band(self.low + other.low, self.expected + other.expected, self.high + other.high)

    def map(self, convert: Callable[[float], float]) -> Band:
        """The same band in other units (credits → USD)."""
        return Band(convert(self.low), convert(self.expected), convert(self.high))

    @classmethod
    def exact(cls, value: float) -> Band:
        return cls(value, value, value)


@dataclass
class KindTally:
    rows: int = 0
    prompt_tokens: int = 0


@dataclass(frozen=True)
class Unsendable:
    """A manifest row that cannot be sent as written, and why."""

    id: str
    line: int
    reason: str


@dataclass
class Tally:
    """What one pass over the rows gathers: rows and estimated prompt tokens by kind, and the
    rows that cannot be sent. No prices and no output assumption yet: those come after."""

    by_kind: dict[str, KindTally] = field(default_factory=dict)
    rows_unsendable: int = 0
    unsendable: list[Unsendable] = field(default_factory=list)
    max_listed: int = UNSENDABLE_LISTED

    def add(self, estimate: RowEstimate) -> None:
        totals = self.by_kind.get(estimate.kind)
        if totals is None:
            totals = self.by_kind[estimate.kind] = KindTally()
        totals.rows += 1
        totals.prompt_tokens += estimate.prompt_tokens

    def add_unsendable(self, row_id: str, line: int, reason: str) -> None:
        self.rows_unsendable += 1
        if len(self.unsendable) < self.max_listed:
            self.unsendable.append(Unsendable(row_id, line, reason))

    def minus(self, other: Tally) -> Tally:
        """This tally without the sendable rows of ``other`` (e.g. a sample already sent)."""
        left = Tally(rows_unsendable=self.rows_unsendable, unsendable=list(self.unsendable))
        for kind, totals in self.by_kind.items():
            taken = other.by_kind.get(kind, KindTally())
            left.by_kind[kind] = KindTally(
                max(0, totals.rows - taken.rows), max(0, totals.prompt_tokens - taken.prompt_tokens)
            )
        return left

    @property
    def rows_sendable(self) -> int:
        return sum(totals.rows for totals in self.by_kind.values())

    @property
    def rows(self) -> int:
        return self.rows_sendable + self.rows_unsendable

    @property
    def prompt_tokens(self) -> int:
        return sum(totals.prompt_tokens for totals in self.by_kind.values())


@dataclass
class KindEstimate:
    rows: int = 0
    prompt_tokens: int = 0
    output_tokens: float = 0.0  # expected
    credits: float = 0.0  # expected


@dataclass
class RunEstimate:
    """Totals over a manifest: what ``estimate --json`` prints (DESIGN's contract)."""

    rows: int = 0
    rows_unsendable: int = 0
    unsendable: list[Unsendable] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: Band = field(default_factory=Band)
    credits: Band = field(default_factory=Band)
    usd: Band = field(default_factory=Band)
    by_kind: dict[str, KindEstimate] = field(default_factory=dict)
    basis: str = ""  # how output (and prompt) tokens were arrived at

    @property
    def rows_sendable(self) -> int:
        return self.rows - self.rows_unsendable

    def plus(self, other: RunEstimate) -> RunEstimate:
        """The sum of two disjoint parts of a run (e.g. rows already paid + rows to send)."""
        by_kind: dict[str, KindEstimate] = {}
        for part in (self.by_kind, other.by_kind):
            for kind, totals in part.items():
                into = by_kind.setdefault(kind, KindEstimate())
                into.rows += totals.rows
                into.prompt_tokens += totals.prompt_tokens
                into.output_tokens += totals.output_tokens
                into.credits += totals.credits
        return RunEstimate(
            rows=self.rows + other.rows,
            rows_unsendable=self.rows_unsendable + other.rows_unsendable,
            unsendable=(self.unsendable + other.unsendable)[:UNSENDABLE_LISTED],
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            output_tokens=self.output_tokens.plus(other.output_tokens),
            credits=self.credits.plus(other.credits),
            usd=self.usd.plus(other.usd),
            by_kind=by_kind,
            basis="; ".join(part for part in (self.basis, other.basis) if part),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "rows_unsendable": self.rows_unsendable,
            "unsendable": [
                {"id": row.id, "line": row.line, "reason": row.reason} for row in self.unsendable
            ],
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": {k: round(v) for k, v in self.output_tokens.as_dict().items()},
            "credits": self.credits.as_dict(6),
            "usd": self.usd.as_dict(6),
            "by_kind": {
                kind: {
                    "rows": totals.rows,
                    "tokens": totals.prompt_tokens,
                    "output_tokens": round(totals.output_tokens),
                    "credits": round(totals.credits, 6),
                }
                for kind in KINDS
                for totals in (self.by_kind.get(kind, KindEstimate()),)
            },
            "basis": self.basis,
            "note": "estimates: exact token counts exist only after each call",
        }


def assumed_estimate(tally: Tally, expected_output: int, price: Price) -> RunEstimate:
    """The uncalibrated estimate: every sendable row answers ``expected_output`` tokens, within
    a band of ×OUTPUT_LOW_FACTOR to ×OUTPUT_HIGH_FACTOR; prompt tokens as estimated."""
    rows = tally.rows_sendable
    prompt = tally.prompt_tokens
    output = Band(
        rows * expected_output * OUTPUT_LOW_FACTOR,
        float(rows * expected_output),
        rows * expected_output * OUTPUT_HIGH_FACTOR,
    )
    credits = Band(
        price.credits(prompt, output.low),
        price.credits(prompt, output.expected),
        price.credits(prompt, output.high),
    )
    by_kind = {
        kind: KindEstimate(
            rows=totals.rows,
            prompt_tokens=totals.prompt_tokens,
            output_tokens=float(totals.rows * expected_output),
            credits=price.credits(totals.prompt_tokens, totals.rows * expected_output),
        )
        for kind, totals in tally.by_kind.items()
    }
    return RunEstimate(
        rows=tally.rows,
        rows_unsendable=tally.rows_unsendable,
        unsendable=list(tally.unsendable),
        prompt_tokens=prompt,
        output_tokens=output,
        credits=credits,
        usd=credits.map(price.usd),
        by_kind=by_kind,
        basis=(
            f"assumed output: {expected_output:,} tokens per row (expected_output_tokens), "
            f"band x{OUTPUT_LOW_FACTOR:g} to x{OUTPUT_HIGH_FACTOR:g}"
        ),
    )


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


def estimate_lines(
    estimate: RunEstimate, *, rows_total: int | None = None, label: str = "rows to send"
) -> list[str]:
    """The estimate for people (stderr): rows, tokens, credits and USD bands, kinds, and the
    rows that cannot be sent with their reasons."""
    total = estimate.rows if rows_total is None else rows_total
    output, credits, usd = estimate.output_tokens, estimate.credits, estimate.usd
    lines = [
        f"  {label} {estimate.rows_sendable:,} of {total:,} · unsendable "
        f"{estimate.rows_unsendable:,}",
        f"  prompt tokens ≈ {estimate.prompt_tokens:,} · output tokens ≈ "
        f"{round(output.expected):,} ({round(output.low):,}–{round(output.high):,})",
        f"  credits ≈ {credits.expected:,.4f} ({credits.low:,.4f}–{credits.high:,.4f}) · "
        f"USD ≈ ${usd.expected:,.4f} (${usd.low:,.4f}–${usd.high:,.4f})",
    ]
    kinds = [
        f"{kind} {totals.rows:,} rows / {totals.prompt_tokens:,} tok / {totals.credits:,.4f} cr"
        for kind in KINDS
        if (totals := estimate.by_kind.get(kind)) is not None and totals.rows
    ]
    if len(kinds) > 1:
        lines.append("  by kind: " + " · ".join(kinds))
    shown = estimate.unsendable[:10]
    for row in shown:
        lines.append(f"  unsendable: {row.reason}")
    if estimate.rows_unsendable > len(shown):
        lines.append(
            f"  … and {estimate.rows_unsendable - len(shown):,} more unsendable rows "
            f"(--json lists the first {UNSENDABLE_LISTED})"
        )
    if estimate.basis:
        lines.append(f"  basis: {estimate.basis}")
    lines.append("  (an estimate: exact token counts exist only after each call)")
    return lines
