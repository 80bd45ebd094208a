"""Request bodies whose media are read and encoded while they are sent, and dropped at once.

``build_request`` builds the JSON body with a marker where each local file's data URL goes,
opens and checks every file (confinement, type, size) and knows the exact encoded size before
reading a byte of media: the runner takes that many bytes from its byte budget. It returns
what it built; what the request may cost is ``cost.request_cost``'s question. Each attempt
then streams a ``StreamedBody``: the files are read in blocks and base64-encoded one block at
a time as the socket takes them, so a request in flight holds about one block, whatever the
size of its files, and nothing of it is left once it is sent.

The bytes sent are exactly ``encode_body(build_body(...))`` with the same files, so the
request sha256 is the same either way (it is computed on the way out).
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import secrets
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from batchrun.core.errors import MediaError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row
from batchrun.media.files import MediaInfo, MediaResolver, is_passthrough_url
from batchrun.media.meta import MediaMeta, probe_fd
from batchrun.request.body import build_body, encode_body

# Raw bytes read per block: a multiple of 3, so the blocks' base64 concatenates cleanly.
# Its base64 (1 MiB) is about what one request in flight holds in memory.
READ_BLOCK = 768 * 1024
_MARKER = "batchrun-media:"


def base64_size(nbytes: int) -> int:
    return 4 * math.ceil(nbytes / 3)


@dataclass
class _Pending:
    ref: str
    marker: str
    fd: int
    info: MediaInfo

    @property
    def prefix(self) -> bytes:
        return f"data:{self.info.mime};base64,".encode("ascii")


class _DeferringResolver(MediaResolver):
    """Checks and opens each local file now; hands back a marker instead of its bytes."""

    def __init__(self, base: MediaResolver) -> None:
        # One per row: the base's root is already real, so no realpath() per row here.
        self.root = base.root
        self.max_file_bytes = base.max_file_bytes
        self.token = ""  # drawn on the first local file: most rows have none
        self.pending: list[_Pending] = []

    def to_url(self, ref: str) -> str:
        if is_passthrough_url(ref):
            return ref
        fd, info = self.open_checked(ref)
        if not self.token:
            self.token = secrets.token_hex(8)
        marker = f"{_MARKER}{self.token}:{len(self.pending)}"
        self.pending.append(_Pending(ref, marker, fd, info))
        return marker

    def close(self) -> None:
        for item in self.pending:
            os.close(item.fd)
        self.pending.clear()


class StreamedBody:
    """One attempt's body: pieces produced as they are sent (iterate once)."""

    def __init__(self, prepared: PreparedRequest, *, limiter: anyio.CapacityLimiter | None = None
                 ) -> None:
        self.size = prepared.size
        self.error: MediaError | None = None  # a file that changed or failed mid-send
        self._prepared = prepared
        self._limiter = limiter
        self._digest = hashlib.sha256()
        self._produced = 0

    @property
    def sha256(self) -> str | None:
        """sha256 of the body once every byte of it was produced, else None."""
        return self._digest.hexdigest() if self._produced == self.size else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pieces = self._prepared.pieces()
        inline = not self._prepared.media  # JSON only: no file to wait for
        try:
            while True:
                # File reads and base64 run in a worker thread: the event loop keeps serving
                # the other requests' sockets meanwhile.
                piece = next(pieces, None) if inline else await anyio.to_thread.run_sync(
                    next, pieces, None, limiter=self._limiter)
                if piece is None:
                    return
                self._digest.update(piece)
                self._produced += len(piece)
                yield piece
        except MediaError as error:
            self.error = error
            raise
        finally:
            pieces.close()


@dataclass(slots=True)
class PreparedRequest:
    """A body whose local media are open and checked but not yet read."""

    row_id: str
    skeleton: bytes  # the JSON body with a marker string where each file's data URL goes
    media: list[_Pending]
    size: int  # exact length of the encoded body
    metas: dict[str, MediaMeta] = field(default_factory=dict)  # by marker (see build_request)
    messages: Sequence[Any] = ()  # the body's chat messages (markers where local files go)
    text_only: bool = False  # a prompt row without media: its body names no file
    # What the body asks, for the sender: the model (priced and checked against its window)
    # and whether the answer comes as SSE (the row's setting, else the job's).
    model: str = ""
    sse: bool = True
    _skeleton_sha: str | None = field(default=None, repr=False)

    def pieces(self) -> Generator[bytes, None, None]:
        """The body in pieces: JSON between the files, and each file as base64 blocks."""
        rest = self.skeleton
        produced = 0
        for item in self.media:
            quoted = f'"{item.marker}"'.encode("ascii")
            head, found, rest = rest.partition(quoted)
            if not found:  # cannot happen: the marker was put there by build_body
                raise MediaError(f"media {item.ref!r}: internal error placing its data")
            piece = head + b'"' + item.prefix
            produced += len(piece)
            yield piece
            for block in _encoded_blocks(item):
                produced += len(block)
                yield block
            rest = b'"' + rest
        produced += len(rest)
        if produced != self.size:  # cannot happen: every file's size was checked as read
            raise MediaError(f"row {self.row_id!r}: media changed while being read; try again")
        yield rest

    def skeleton_sha256(self) -> str:
        """sha256 of a body without local media (its skeleton is the whole body)."""
        if self._skeleton_sha is None:
            self._skeleton_sha = hashlib.sha256(self.skeleton).hexdigest()
        return self._skeleton_sha

    def sha256(self) -> str:
        """The sha256 of the whole body, read and encoded block by block (never held whole)."""
        digest = hashlib.sha256()
        for piece in self.pieces():
            digest.update(piece)
        return digest.hexdigest()

    def encode(self) -> bytes:
        """The whole body at once (tests, and callers that want the bytes)."""
        return b"".join(self.pieces())

    def stream(self, limiter: anyio.CapacityLimiter | None = None) -> StreamedBody:
        """A fresh body for one attempt (files are read again for each)."""
        return StreamedBody(self, limiter=limiter)

    def close(self) -> None:
        for item in self.media:
            os.close(item.fd)
        self.media.clear()

    def check_size(self, max_request_bytes: int) -> None:
        """MediaError when the encoded body would be over ``max_request_bytes``."""
        if self.size <= max_request_bytes:
            return
        files = ", ".join(f"{item.ref!r} ({item.info.size:,} bytes)" for item in self.media)
        raise MediaError(
            f"row {self.row_id!r}: the request would be {self.size:,} bytes with its media "
            f"base64-encoded, over the {max_request_bytes:,}-byte per-request limit "
            f"(max_request_bytes){'; files: ' + files if files else ''}"
        )


def _encoded_blocks(item: _Pending) -> Iterator[bytes]:
    """base64 of a file, block by block; MediaError if it is not the size it was checked at."""
    expected = item.info.size
    offset = 0
    try:
        while offset < expected:
            block = os.pread(item.fd, min(READ_BLOCK, expected - offset), offset)
            if not block:
                break
            offset += len(block)
            yield base64.b64encode(block)
        grew = offset == expected and os.pread(item.fd, 1, offset)
    except OSError as exc:
        raise MediaError(f"media {item.ref!r} cannot be read: {exc.strerror or exc}") from None
    if offset != expected or grew:
        raise MediaError(f"media {item.ref!r} changed size while being sent; try again")


def build_request(
    row: Row,
    job: JobSpec,
    resolver: MediaResolver | None,
    *,
    probe: bool = False,
) -> PreparedRequest:
    """Build the body of ``row`` with its local media checked and open but unread.

    MediaError (a RowError) when a file cannot be sent: outside the root, missing, of an
    unsupported type, oversize. ``probe`` reads each file's metadata (pages, seconds, pixels)
    for the token estimate. The caller checks the size (``check_size``) once it decided the
    row is worth it, and closes the request (its files) when done with it.
    """
    # A prompt without media names no file: no resolver to make for it (most rows).
    text_only = not row.media and row.messages is None and row.body is None
    deferring = (_DeferringResolver(resolver) if resolver is not None and not text_only
                 else None)
    try:
        body = build_body(row, job, deferring)
        skeleton = encode_body(body)
        pending = deferring.pending if deferring is not None else []
        size = len(skeleton)
        metas: dict[str, MediaMeta] = {}
        for item in pending:
            size += len(item.prefix) + base64_size(item.info.size) - len(item.marker)
            info = item.info
            metas[item.marker] = (
                probe_fd(item.fd, info.mime, info.kind, info.size) if probe
                else MediaMeta(kind=info.kind, mime=info.mime, size=info.size)
            )
    except BaseException:
        if deferring is not None:
            deferring.close()
        raise
    return PreparedRequest(
        row_id=row.id, skeleton=skeleton, media=list(pending), size=size, metas=metas,
        messages=body.get("messages") or (), text_only=text_only,
        model=str(body.get("model") or job.model), sse=body.get("stream") is not False,
    )
