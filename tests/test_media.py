"""Media: magic-byte sniffing, data URLs, and confinement to the media root."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun.core.errors import MediaError, RowError
from batchrun.media.files import MediaInfo, MediaResolver, kind_of, sniff_mime

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(brands)).to_bytes(4, "big") + b"ftyp" + brands + b"\x00" * 16


@pytest.mark.parametrize(
    ("head", "name", "mime"),
    [
        (PNG, "a.bin", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "a", "image/jpeg"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "a", "image/webp"),
        (b"GIF89a\x01\x00", "a", "image/gif"),
        (b"GIF87a\x01\x00", "a", "image/gif"),
        (b"%PDF-1.7\n%\xe2\xe3", "a", "application/pdf"),
        (b"\x00\x00junk before the header %PDF-1.4", "a", "application/pdf"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "a", "audio/mp3"),
        (b"\xff\xfb\x90\x64\x00", "a", "audio/mp3"),  # MPEG-1 layer III frame sync
        (b"\xff\xf3\x84\x64\x00", "a", "audio/mp3"),  # MPEG-2 layer III
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "a", "audio/aac"),  # ADTS
        (b"RIFF\x24\x08\x00\x00WAVEfmt ", "a", "audio/wav"),
        (b"fLaC\x00\x00\x00\x22", "a", "audio/flac"),
        (b"OggS\x00\x02\x00\x00", "a", "audio/ogg"),
        (b"FORM\x00\x00\x00\x00AIFFCOMM", "a", "audio/aiff"),
        (ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "a", "audio/mp4"),
        (ftyp(b"mp42", b"mp42", b"M4A "), "a", "audio/mp4"),  # generic brand, M4A compatible
        (ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "a", "video/mp4"),
        (ftyp(b"mp42", b"mp42", b"isom"), "a.m4a", "audio/mp4"),  # audio by its name
        (ftyp(b"qt  ", b"qt  "), "a", "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "a", "video/webm"),
    ],
)
def test_sniff_by_magic(head: bytes, name: str, mime: str) -> None:
    assert sniff_mime(head, name) == mime


@pytest.mark.parametrize(
    ("head", "name", "mime"),
    [
        (b"\x00" * 32, "song.mp3", "audio/mp3"),  # padded MP3: magic can miss, name decides
        (b"\x00\x00\x00\x08wide", "clip.MOV", "video/quicktime"),
        (b"\x00\x00\x00\x08free", "clip.mp4", "video/mp4"),
        (b"not a png at all", "fake.png", None),  # strong magic missing: refuse, do not guess
        (b"hello", "notes.txt", None),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", "a.mkv", None),
        (b"", "empty", None),
        (PNG, "photo.jpg", "image/png"),  # magic wins over the name
    ],
)
def test_sniff_extension_fallback(head: bytes, name: str, mime: str | None) -> None:
    assert sniff_mime(head, name) == mime


def test_kind_of() -> None:
    assert [kind_of(m) for m in ("image/png", "application/pdf", "audio/wav", "video/mp4")] == [
        "image", "pdf", "audio", "video"]
    with pytest.raises(ValueError):
        kind_of("text/plain")


# ------------------------------------------------------------------ resolver


@pytest.fixture
def root(tmp_path: Path) -> Path:
    media_root = tmp_path / "root"
    (media_root / "img").mkdir(parents=True)
    (media_root / "img" / "a.png").write_bytes(PNG)
    (media_root / "doc.pdf").write_bytes(b"%PDF-1.4\n" + b"x" * 100)
    (tmp_path / "outside.png").write_bytes(PNG)
    return media_root


def test_to_url_makes_a_data_url(root: Path) -> None:
    resolver = MediaResolver(root)
    url = resolver.to_url("img/a.png")
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix):]) == PNG
    assert resolver.to_url("img/../doc.pdf").startswith("data:application/pdf;base64,")


def test_inspect(root: Path) -> None:
    info = MediaResolver(root).inspect("doc.pdf")
    assert info == MediaInfo(path=(root / "doc.pdf").resolve(), mime="application/pdf",
                             size=109, kind="pdf")


@pytest.mark.parametrize(
    "url", ["https://example.com/a.jpg", "http://x/y", "HTTPS://X/Y", "data:image/png;base64,AA=="]
)
def test_urls_pass_through(root: Path, url: str) -> None:
    resolver = MediaResolver(root)
    assert resolver.to_url(url) == url
    assert resolver.inspect(url) is None


def test_root_given_through_a_symlink(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "root-link"
    link.symlink_to(root)
    assert MediaResolver(link).to_url("img/a.png").startswith("data:image/png;base64,")


def test_absolute_path_inside_the_root_is_read_like_a_relative_one(root: Path) -> None:
    # Finding 10: absolute media paths were refused even inside --media-root.
    resolver = MediaResolver(root)
    absolute = str(root / "img" / "a.png")
    assert resolver.to_url(absolute) == resolver.to_url("img/a.png")
    info = resolver.inspect(absolute)
    assert info is not None and info.path == (root / "img" / "a.png").resolve()
    # Named through a symlink to the root, it is still inside.
    link = root.parent / "root-link"
    link.symlink_to(root)
    assert resolver.to_url(str(link / "doc.pdf")).startswith("data:application/pdf;base64,")


def test_symlink_inside_the_root_is_fine(root: Path) -> None:
    (root / "alias.png").symlink_to(root / "img" / "a.png")
    info = MediaResolver(root).inspect("alias.png")
    assert info is not None and info.path == (root / "img" / "a.png").resolve()


# Proof that a confined file is never opened: the interpreter's audit hook sees every open().
_OPENED: list[str] = []
_WATCHING: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _WATCHING and event == "open" and args and isinstance(args[0], str | bytes | Path):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def opened_files() -> Iterator[list[str]]:
    _OPENED.clear()
    _WATCHING.append(True)
    yield _OPENED
    _WATCHING.clear()


def test_audit_hook_sees_opens(root: Path, opened_files: list[str]) -> None:
    MediaResolver(root).to_url("img/a.png")
    assert any(path.endswith("a.png") for path in opened_files)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("../outside.png", "resolves outside the media root"),
        ("img/../../outside.png", "resolves outside the media root"),
        ("escape.png", "resolves outside the media root"),  # symlink to ../outside.png
        ("escape-dir/outside.png", "resolves outside the media root"),  # symlinked folder
        ("ABSOLUTE", "is outside the media root"),
        ("ABSOLUTE-VIA-LINK", "is outside the media root"),  # /root/escape.png → ../outside
        ("file:///etc/passwd", "file:// URLs are not supported"),
        ("gs://bucket/a.png", "gs:// URLs are not supported"),
        ("a\x00.png", "NUL byte"),
        ("", "media reference is empty"),
    ],
)
def test_confinement(root: Path, ref: str, message: str, opened_files: list[str]) -> None:
    outside = root.parent / "outside.png"
    (root / "escape.png").symlink_to(outside)
    (root / "escape-dir").symlink_to(root.parent)
    if ref == "ABSOLUTE":
        ref = str(outside)
    if ref == "ABSOLUTE-VIA-LINK":
        ref = str(root / "escape.png")
    resolver = MediaResolver(root)
    returned: list[str] = []
    with pytest.raises(MediaError) as info:
        returned.append(resolver.to_url(ref))
    with pytest.raises(MediaError):
        resolver.inspect(ref)
    assert message in info.value.message
    if ref:
        assert repr(ref) in info.value.message  # names the file as the row wrote it
    assert returned == []
    assert not any(Path(path).name == "outside.png" for path in opened_files)
    assert isinstance(info.value, RowError)


@pytest.mark.parametrize(
    ("make", "ref", "message"),
    [
        (None, "missing.png", "not found under"),
        ("empty", "e.png", "is empty"),
        ("dir", "img", "is a directory"),
        ("big", "big.png", "is 2,048 bytes, over the 1,024-byte limit"),
        ("text", "notes.txt", "unsupported file type"),
        ("fake", "fake.png", "unsupported file type"),
        ("fifo", "pipe.mp3", "is not a regular file"),
    ],
)
def test_unusable_files(root: Path, make: str | None, ref: str, message: str) -> None:
    if make == "empty":
        (root / ref).write_bytes(b"")
    elif make == "big":
        (root / ref).write_bytes(PNG + b"\x00" * (2048 - len(PNG)))
    elif make == "text":
        (root / ref).write_text("hello")
    elif make == "fake":
        (root / ref).write_text("not really a png")
    elif make == "fifo":
        os.mkfifo(root / ref)  # opening it would block: it must be refused before that
    resolver = MediaResolver(root, max_file_bytes=1024)
    with pytest.raises(MediaError) as info:
        resolver.to_url(ref)
    assert message in info.value.message and repr(ref) in info.value.message
    with pytest.raises(MediaError):
        resolver.inspect(ref)


def test_file_at_the_size_limit_is_accepted(root: Path) -> None:
    (root / "edge.png").write_bytes(PNG + b"\x00" * (1024 - len(PNG)))
    assert MediaResolver(root, max_file_bytes=1024).inspect("edge.png") is not None
