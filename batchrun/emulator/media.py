"""Media in ``image_url`` parts as the emulator counts them: Gemini 3-like tokens (pure).

Rules (Gemini 3 at the default media resolution, Google's media resolution page:
https://ai.google.dev/gemini-api/docs/media-resolution): image 1120; PDF 560 per page; audio
25 tokens/s; video 70 per frame at 1 frame/s plus its audio track at 25 tokens/s. Pages and
durations are read like a real model would: by the readers batchrun's estimate uses
(``batchrun.media.meta``: pypdf, mutagen), then by the header parsers below, then guessed
from the size. An http(s) URL cannot be fetched by the emulator, so it counts as one image,
whatever it points at.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct

# AUDIO/VIDEO_BYTES_PER_S: the byte rates guessed for media whose duration no header gives.
from batchrun.media.meta import AUDIO_BYTES_PER_S, VIDEO_BYTES_PER_S, probe

IMAGE_TOKENS = 1120
PDF_PAGE_TOKENS = 560
AUDIO_TOKENS_PER_S = 25
VIDEO_FRAME_TOKENS = 70  # one frame per second

# The formats Gemini documents for inline data, plus the aliases Python's ``mimetypes`` gives,
# plus what batchrun's sniffer names that Gemini's lists leave out: GIF (OpenAI-compatible
# gateways take it as OpenAI's vision API does; assumed) and M4A as audio/mp4 (Vertex lists
# audio/mp4 and audio/m4a).
IMAGE_MIMES = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif", "image/gif"}
)
PDF_MIMES = frozenset({"application/pdf"})
AUDIO_MIMES = frozenset(
    {
        "audio/wav", "audio/x-wav", "audio/wave", "audio/mp3", "audio/mpeg", "audio/aiff",
        "audio/x-aiff", "audio/aac", "audio/ogg", "audio/flac", "audio/x-flac", "audio/mp4",
        "audio/m4a",
    }
)
VIDEO_MIMES = frozenset(
    {
        "video/mp4", "video/mpeg", "video/mpg", "video/mov", "video/quicktime", "video/avi",
        "video/x-msvideo", "video/x-flv", "video/webm", "video/wmv", "video/x-ms-wmv",
        "video/3gpp",
    }
)
SUPPORTED_MIMES = IMAGE_MIMES | PDF_MIMES | AUDIO_MIMES | VIDEO_MIMES
WAV_MIMES = frozenset({"audio/wav", "audio/x-wav", "audio/wave"})
MP4_LIKE_MIMES = frozenset({"video/mp4", "video/mov", "video/quicktime", "video/3gpp"})

# A page object, not the /Pages tree node: `/Type /Page` not followed by a name character.
_PDF_PAGE_RE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9_])")
_PDF_COUNT_RE = re.compile(rb"/Count\s+(\d+)")


class MediaRejected(ValueError):
    """A media URL the API would refuse with 400 invalid_request; the message says why."""


def kind_of(mime: str) -> str:
    """``image`` | ``pdf`` | ``audio`` | ``video`` for a supported MIME type."""
    if mime in IMAGE_MIMES:
        return "image"
    if mime in PDF_MIMES:
        return "pdf"
    if mime in AUDIO_MIMES:
        return "audio"
    if mime in VIDEO_MIMES:
        return "video"
    raise MediaRejected(
        f"unsupported media type {mime!r}; supported: images (png, jpeg, webp, heic, heif), "
        "application/pdf, audio/* (wav, mp3, aiff, aac, ogg, flac) and video/* (mp4, mpeg, mov, "
        "avi, flv, webm, wmv, 3gpp)"
    )


def decode_data_url(url: str) -> tuple[str, bytes]:
    """``data:<mime>[;param]*;base64,<data>`` → (mime, decoded bytes); strict base64."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise MediaRejected("data URL has no ',' between its header and its data")
    params = header[5:].split(";")
    mime = params[0].strip().lower()
    if not mime:
        raise MediaRejected("data URL has no MIME type")
    if params[-1].strip().lower() != "base64":
        raise MediaRejected("data URL must be base64-encoded (data:<mime>;base64,...)")
    kind_of(mime)  # refuse unsupported types before decoding megabytes
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaRejected("data URL holds invalid base64 data") from None
    if not data:
        raise MediaRejected("data URL holds no data")
    return mime, data


def media_tokens(mime: str, data: bytes) -> int:
    """Input tokens of one decoded media item."""
    kind = kind_of(mime)
    if kind == "image":
        return IMAGE_TOKENS
    meta = probe(io.BytesIO(data), mime, kind, len(data))
    if kind == "pdf":
        return PDF_PAGE_TOKENS * (meta.pages or pdf_pages(data))
    if kind == "audio":
        seconds = meta.seconds
        if seconds is None and mime in WAV_MIMES:
            seconds = wav_seconds(data)
        if seconds is None:
            seconds = len(data) / AUDIO_BYTES_PER_S
        return max(1, math.ceil(seconds * AUDIO_TOKENS_PER_S))
    seconds = meta.seconds
    if seconds is None and mime in MP4_LIKE_MIMES:
        seconds = mp4_seconds(data)
    if seconds is None:
        seconds = len(data) / VIDEO_BYTES_PER_S
    frames = max(1, math.ceil(seconds))
    return frames * VIDEO_FRAME_TOKENS + max(1, math.ceil(seconds * AUDIO_TOKENS_PER_S))


def pdf_pages(data: bytes) -> int:
    """Page objects in a PDF; falls back to the page tree's /Count, then to one page.

    Pages inside compressed object streams (PDF 1.5+) are invisible to a byte scan, hence
    the fallbacks.
    """
    pages = len(_PDF_PAGE_RE.findall(data))
    if pages:
        return pages
    # The root /Pages node holds the largest /Count (outline counts are smaller or negative).
    counts = [int(count) for count in _PDF_COUNT_RE.findall(data)]
    return max([1, *counts])


def wav_seconds(data: bytes) -> float | None:
    """Duration from a RIFF/WAVE header (fmt byte rate, data size); None if unreadable."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, byte_rate, data_size = 12, 0, None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if chunk_id == b"fmt " and pos + 16 <= len(data):
            (byte_rate,) = struct.unpack_from("<I", data, pos + 16)
        elif chunk_id == b"data":
            # A streamed WAV may say 0 or 0xFFFFFFFF: trust the bytes actually present.
            data_size = min(size, len(data) - pos - 8)
            break
        pos += 8 + size + (size & 1)
    if not byte_rate or data_size is None:
        return None
    return data_size / byte_rate


def mp4_seconds(data: bytes) -> float | None:
    """Duration from the ISO-BMFF ``mvhd`` box (MP4/MOV); None if absent or odd."""
    at = data.find(b"mvhd")
    if at < 0 or at + 4 >= len(data):
        return None
    try:
        if data[at + 4] == 1:
            timescale, duration = struct.unpack_from(">IQ", data, at + 24)
        else:
            timescale, duration = struct.unpack_from(">II", data, at + 16)
    except struct.error:
        return None
    if not timescale:
        return None
    return duration / timescale
