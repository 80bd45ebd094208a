"""Local media files → MIME type and ``data:`` URL, never reading outside the media root.

Every media type the gateway accepts (image, PDF, audio, video) travels in an ``image_url``
part (its API reference, https://api.aivideoapi.ai), so a local file becomes
``data:<mime>;base64,...``; http(s) and data URLs pass through untouched. A file is read only
after its real path (symlinks resolved) is known to lie under the root, and only if it is a
regular, non-empty file within the size limit.
"""

from __future__ import annotations

import base64
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from batchrun.core.errors import MediaError
from batchrun.media.meta import MediaMeta, probe_fd

# Gemini takes inline data up to 100 MB per request (raised from 20 MB in 2026) and PDFs up
# to 50 MB; the gateway's own limits are not published. 50 MB per file keeps one file with its
# base64 (×4/3 → 66.7 MB) well inside one request. Change them per job if the gateway differs.
DEFAULT_MAX_FILE_BYTES = 50_000_000
DEFAULT_MAX_REQUEST_BYTES = 100_000_000
HEAD_BYTES = 4096

# Names follow the Gemini docs where they differ from IANA (audio/mp3, audio/wav).
EXTENSION_MIME: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".pdf": "application/pdf",
    ".mp3": "audio/mp3",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
}
# Formats whose signature may legitimately be missing at offset 0 (MP3 without ID3 after
# padding, raw AAC, QuickTime files whose first atom is not ftyp). For the others a file that
# fails its magic check is broken or misnamed, and saying so beats a 400 from the API.
_EXTENSION_FALLBACK = frozenset({".mp3", ".aac", ".m4a", ".mp4", ".m4v", ".mov"})

_FTYP_MIME: dict[bytes, str] = {
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"qt  ": "video/quicktime",
    b"isom": "video/mp4",
    b"iso2": "video/mp4",
    b"iso4": "video/mp4",
    b"iso5": "video/mp4",
    b"iso6": "video/mp4",
    b"mp41": "video/mp4",
    b"mp42": "video/mp4",
    b"avc1": "video/mp4",
    b"M4V ": "video/mp4",
    b"MSNV": "video/mp4",
    b"dash": "video/mp4",
}
_GENERIC_BRANDS = frozenset({b"isom", b"iso2", b"mp41", b"mp42"})
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
SUPPORTED = "PNG, JPEG, WebP, GIF, PDF, MP3, WAV, FLAC, OGG, AAC, AIFF, M4A, MP4, MOV, WebM"


@dataclass(frozen=True)
class MediaInfo:
    """What we know of a local media file before reading all of it."""

    path: Path  # the real path, symlinks resolved
    mime: str
    size: int
    kind: str  # image | pdf | audio | video


def media_root_for(manifest: Path, media_root: str | Path | None) -> Path:
    """``--media-root`` / the job's ``media_root`` if given, else the manifest's folder."""
    return Path(media_root) if media_root else manifest.resolve().parent


def is_passthrough_url(ref: str) -> bool:
    """http(s) and data URLs go to the API as they are."""
    lowered = ref[:8].lower()
    return lowered.startswith(("http://", "https://", "data:"))


def kind_of(mime: str) -> str:
    """image | pdf | audio | video for a supported MIME type."""
    if mime == "application/pdf":
        return "pdf"
    major = mime.split("/", 1)[0]
    if major in ("image", "audio", "video"):
        return major
    raise ValueError(f"not a media MIME type: {mime}")


def sniff_mime(head: bytes, name: str) -> str | None:
    """MIME type from the first bytes of a file; the extension only where magic can miss."""
    mime = _mime_from_magic(head)
    if mime is not None:
        if mime == "video/mp4" and Path(name).suffix.lower() in (".m4a", ".aac"):
            return "audio/mp4"  # an audio-only MP4 under a generic brand
        return mime
    suffix = Path(name).suffix.lower()
    if suffix in _EXTENSION_FALLBACK:
        return EXTENSION_MIME[suffix]
    return None


def _mime_from_magic(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.find(b"%PDF-", 0, 1024) != -1:
        return "application/pdf"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head.startswith(b"ID3"):
        return "audio/mp3"
    if head[4:8] == b"ftyp":
        return _ftyp_mime(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else None
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0b11
        version = (head[1] >> 3) & 0b11
        if layer == 0b00 and head[1] & 0xF6 == 0xF0:
            return "audio/aac"  # ADTS header: sync, layer 00
        if layer != 0b00 and version != 0b01:
            return "audio/mp3"  # MPEG audio frame sync
    return None


def _ftyp_mime(head: bytes) -> str | None:
    major = head[8:12]
    if major in _GENERIC_BRANDS:
        # Generic brands carry the real one among the compatible brands.
        box_size = int.from_bytes(head[0:4], "big")
        compatible = head[16 : min(box_size, len(head))]
        brands = {compatible[i : i + 4] for i in range(0, len(compatible) - 3, 4)}
        if b"M4A " in brands and not brands & {b"M4V ", b"avc1"}:
            return "audio/mp4"
    return _FTYP_MIME.get(major)


class MediaResolver:
    """Turns media references of rows into URLs, confined to ``root``."""

    def __init__(self, root: Path, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
        self.root = Path(os.path.realpath(root))
        self.max_file_bytes = max_file_bytes

    def resolve_path(self, ref: str) -> Path:
        """The real path of a local reference; MediaError if it could leave the root."""
        if not ref:
            raise MediaError("media reference is empty")
        if "\x00" in ref:
            raise MediaError(f"media {ref!r}: path contains a NUL byte")
        scheme = _URL_SCHEME.match(ref)
        if scheme:
            raise MediaError(
                f"media {ref!r}: {scheme.group(1)}:// URLs are not supported; "
                "use http(s), data: or a path under the media root"
            )
        # An absolute path is judged like a relative one: by where its real path lies (join
        # keeps an absolute ``ref`` as it is), so a file under the root is read whichever way
        # the manifest names it, and nothing outside is ever opened.
        real = Path(os.path.realpath(os.path.join(self.root, ref)))
        if not real.is_relative_to(self.root):
            if os.path.isabs(ref):
                raise MediaError(
                    f"media {ref!r} is outside the media root {self.root}; an absolute path "
                    "must lie under it (set --media-root, or the job's media_root, to a folder "
                    "that holds the files)"
                )
            raise MediaError(
                f"media {ref!r} resolves outside the media root {self.root} "
                "(.. and symlinks may not leave it)"
            )
        return real

    def open_checked(self, ref: str) -> tuple[int, MediaInfo]:
        """Open a confined, sniffed, size-checked local file; the caller closes the descriptor."""
        return self._open(ref)

    def describe(self, ref: str) -> MediaMeta | None:
        """Metadata for estimates (pixels, pages, seconds); ``None`` for URLs. MediaError if
        the file is unusable (outside the root, missing, oversize, unsupported)."""
        if is_passthrough_url(ref):
            return None
        fd, info = self._open(ref)
        try:
            return probe_fd(fd, info.mime, info.kind, info.size)
        finally:
            os.close(fd)

    def inspect(self, ref: str) -> MediaInfo | None:
        """Type and size of a local file; ``None`` for URLs, which are passed through."""
        if is_passthrough_url(ref):
            return None
        fd, info = self._open(ref)
        os.close(fd)
        return info

    def to_url(self, ref: str) -> str:
        """http(s) and data URLs unchanged; a local file → ``data:<mime>;base64,...``."""
        if is_passthrough_url(ref):
            return ref
        fd, info = self._open(ref)
        try:
            data = _read_at_most(fd, info.size + 1)
        except OSError as exc:
            raise MediaError(f"media {ref!r} cannot be read: {exc.strerror or exc}") from None
        finally:
            os.close(fd)
        if len(data) != info.size:
            raise MediaError(f"media {ref!r} changed size while being read; try again")
        return f"data:{info.mime};base64,{base64.b64encode(data).decode('ascii')}"

    def _open(self, ref: str) -> tuple[int, MediaInfo]:
        """Open a checked file and sniff it; the caller closes the descriptor."""
        real = self.resolve_path(ref)
        try:
            before = os.stat(real)
        except FileNotFoundError:
            raise MediaError(f"media {ref!r} not found under {self.root}") from None
        except OSError as exc:
            raise MediaError(f"media {ref!r} cannot be read: {exc.strerror or exc}") from None
        if stat.S_ISDIR(before.st_mode):
            raise MediaError(f"media {ref!r} is a directory, not a file")
        if not stat.S_ISREG(before.st_mode):
            raise MediaError(f"media {ref!r} is not a regular file")
        self._check_size(ref, before.st_size)
        # O_NOFOLLOW: the checked real path must not turn into a symlink before we open it;
        # O_NONBLOCK: nor into a FIFO that would hang the open.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(real, flags | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise MediaError(f"media {ref!r} cannot be read: {exc.strerror or exc}") from None
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):
                raise MediaError(f"media {ref!r} is not a regular file")
            self._check_size(ref, opened.st_size)
            head = os.pread(fd, HEAD_BYTES, 0)
            mime = sniff_mime(head, real.name)
            if mime is None:
                raise MediaError(f"media {ref!r}: unsupported file type (supported: {SUPPORTED})")
        except OSError as exc:
            os.close(fd)
            raise MediaError(f"media {ref!r} cannot be read: {exc.strerror or exc}") from None
        except MediaError:
            os.close(fd)
            raise
        return fd, MediaInfo(path=real, mime=mime, size=opened.st_size, kind=kind_of(mime))

    def _check_size(self, ref: str, size: int) -> None:
        if size == 0:
            raise MediaError(f"media {ref!r} is empty")
        if size > self.max_file_bytes:
            raise MediaError(
                f"media {ref!r} is {size:,} bytes, over the {self.max_file_bytes:,}-byte limit"
            )


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
