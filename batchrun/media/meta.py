"""What a cost estimate needs to know of a media file: pixels, PDF pages, audio/video seconds.

Read from headers with well-kept pure-Python libraries, each imported only when a file of its
kind turns up: ``imagesize`` (image dimensions from the header), ``pypdf`` (page tree),
``mutagen`` (durations of MP3, WAV, FLAC, OGG, AIFF, AAC, M4A/MP4/MOV). A file they cannot
read gets ``None`` fields, never an exception: metadata only sharpens an estimate, and the
API, not this module, decides whether a file is acceptable.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

# Byte rates for media whose duration no header gives (WebM, raw streams): a 128 kbit/s audio
# file and a 2 Mbit/s video. Guesses, as the emulator's are.
AUDIO_BYTES_PER_S = 16_000
VIDEO_BYTES_PER_S = 250_000


@dataclass(frozen=True)
class MediaMeta:
    """Facts of one media file for the estimate; ``None`` where unknown."""

    kind: str  # image | pdf | audio | video
    mime: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    pages: int | None = None
    seconds: float | None = None

    @property
    def pixels(self) -> int | None:
        if self.width is None or self.height is None:
            return None
        return self.width * self.height

    def seconds_or_guess(self) -> float | None:
        """Header duration, else one guessed from the size at a typical byte rate."""
        if self.seconds is not None:
            return self.seconds
        if self.size is None or self.kind not in ("audio", "video"):
            return None
        rate = AUDIO_BYTES_PER_S if self.kind == "audio" else VIDEO_BYTES_PER_S
        return self.size / rate


def probe(stream: IO[bytes], mime: str, kind: str, size: int | None = None) -> MediaMeta:
    """Metadata of the file open in ``stream`` (read from its start; position not restored)."""
    meta: dict[str, Any] = {}
    try:
        if kind == "image":
            meta = _image(stream)
        elif kind == "pdf":
            meta = _pdf(stream)
        elif kind in ("audio", "video"):
            meta = _duration(stream, mime)
    except Exception:  # noqa: BLE001 - a library choking on a file means "unknown", not a crash
        meta = {}
    return MediaMeta(kind=kind, mime=mime, size=size, **meta)


def probe_fd(fd: int, mime: str, kind: str, size: int) -> MediaMeta:
    """``probe`` over an open descriptor, which stays open (the caller owns it)."""
    with os.fdopen(os.dup(fd), "rb") as stream:
        return probe(stream, mime, kind, size)


def _image(stream: IO[bytes]) -> dict[str, Any]:
    import imagesize

    stream.seek(0)
    width, height = imagesize.get(stream)
    return {"width": width, "height": height} if width > 0 and height > 0 else {}


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """pypdf logs every oddity of a damaged file; an estimate has no use for that."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _pdf(stream: IO[bytes]) -> dict[str, Any]:
    from pypdf import PdfReader

    stream.seek(0)
    with _quiet("pypdf"):
        reader = PdfReader(stream, strict=False)
        pages = len(reader.pages)
    return {"pages": pages} if pages > 0 else {}


def _duration(stream: IO[bytes], mime: str) -> dict[str, Any]:
    reader = _duration_reader(mime)
    if reader is None:
        return {}
    stream.seek(0)
    info = getattr(reader(stream), "info", None)
    seconds = getattr(info, "length", None)
    if seconds is None or not seconds > 0:
        return {}
    return {"seconds": float(seconds)}


def _duration_reader(mime: str) -> Any:
    """The mutagen class for a MIME type (``mutagen.File`` sniffs OGG's codecs itself)."""
    if mime in ("audio/mp3", "audio/mpeg"):
        from mutagen.mp3 import MP3

        return MP3
    if mime in ("audio/wav", "audio/x-wav", "audio/wave"):
        from mutagen.wave import WAVE

        return WAVE
    if mime in ("audio/flac", "audio/x-flac"):
        from mutagen.flac import FLAC

        return FLAC
    if mime in ("audio/aiff", "audio/x-aiff"):
        from mutagen.aiff import AIFF

        return AIFF
    if mime == "audio/aac":
        from mutagen.aac import AAC

        return AAC
    if mime in ("audio/mp4", "audio/m4a", "video/mp4", "video/quicktime", "video/mov",
                "video/3gpp"):
        from mutagen.mp4 import MP4

        return MP4
    if mime == "audio/ogg":
        import mutagen

        return mutagen.File
    return None
