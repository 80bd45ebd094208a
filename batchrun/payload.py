"""Request bodies whose media are encoded just before sending and dropped right after.

``prepare_request`` builds the JSON body with a marker where each local file's data URL goes,
opens and checks every file (confinement, type, size) and knows the exact encoded size before
reading a byte of media: the runner takes that many bytes from its budget, then ``encode``
reads the files in blocks and base64-encodes them into a list of chunks (no joined copy), and
the chunks are streamed to the socket in slices. ``Payload.release`` drops them.

The bytes sent are exactly ``encode_body(build_body(...))`` with the same files, so the
request sha256 is the same either way.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

from batchrun.errors import MediaError
from batchrun.estimate import GEMINI_3_RULES, MediaRules, RowEstimate, messages_estimate
from batchrun.job import JobSpec
from batchrun.manifest import Row
from batchrun.media import MediaInfo, MediaResolver, is_passthrough_url
from batchrun.media_meta import MediaMeta, probe_fd
from batchrun.request import build_body, encode_body

# Raw bytes read per block: a multiple of 3, so the blocks' base64 concatenates cleanly.
READ_BLOCK = 3 * 1024 * 1024
# Bytes handed to the socket at once: the transport copies at most this much per connection.
SEND_SLICE = 512 * 1024
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
        super().__init__(base.root, max_file_bytes=base.max_file_bytes)
        self.token = secrets.token_hex(8)
        self.pending: list[_Pending] = []

    def to_url(self, ref: str) -> str:
        if is_passthrough_url(ref):
            return ref
        fd, info = self.open_checked(ref)
        marker = f"{_MARKER}{self.token}:{len(self.pending)}"
        self.pending.append(_Pending(ref, marker, fd, info))
        return marker

    def close(self) -> None:
        for item in self.pending:
            os.close(item.fd)
        self.pending.clear()


@dataclass
class Payload:
    """An encoded body as chunks; iterate it to send, ``release`` it right after."""

    size: int
    sha256: str
    chunks: list[bytes] = field(repr=False)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            view = memoryview(chunk)
            for start in range(0, len(view), SEND_SLICE):
                # memoryview slices: no copy; aiohttp and the socket take any buffer.
                yield cast(bytes, view[start : start + SEND_SLICE])

    def joined(self) -> bytes:
        """The whole body as one bytes object (tests, small bodies)."""
        return b"".join(self.chunks)

    def release(self) -> None:
        self.chunks.clear()


@dataclass
class PreparedRequest:
    """A body whose local media are open and checked but not yet read."""

    row_id: str
    skeleton: bytes  # the JSON body with a marker string where each file's data URL goes
    media: list[_Pending]
    size: int  # exact length of the encoded body
    estimate: RowEstimate
    metas: dict[str, MediaMeta] = field(default_factory=dict)

    @property
    def media_bytes(self) -> int:
        return sum(item.info.size for item in self.media)

    def encode(self) -> Payload:
        """Read every file and build the body's chunks (blocking: run it in a worker thread)."""
        digest = hashlib.sha256()
        chunks: list[bytes] = []

        def add(chunk: bytes) -> None:
            if chunk:
                digest.update(chunk)
                chunks.append(chunk)

        rest = self.skeleton
        for item in self.media:
            quoted = f'"{item.marker}"'.encode("ascii")
            head, found, rest = rest.partition(quoted)
            if not found:  # cannot happen: the marker was put there by build_body
                raise MediaError(f"media {item.ref!r}: internal error placing its data")
            add(head + b'"' + item.prefix)
            _encode_file(item, add)
            rest = b'"' + rest
        add(rest)
        size = sum(len(chunk) for chunk in chunks)
        if size != self.size:
            raise MediaError(f"row {self.row_id!r}: media changed while being read; try again")
        return Payload(size=size, sha256=digest.hexdigest(), chunks=chunks)

    def close(self) -> None:
        for item in self.media:
            os.close(item.fd)
        self.media.clear()


def _encode_file(item: _Pending, add: Callable[[bytes], None]) -> None:
    expected = item.info.size
    offset = 0
    try:
        while offset < expected:
            block = os.pread(item.fd, min(READ_BLOCK, expected - offset), offset)
            if not block:
                break
            offset += len(block)
            add(base64.b64encode(block))
            del block
    except OSError as exc:
        raise MediaError(f"media {item.ref!r} cannot be read: {exc.strerror or exc}") from None
    if offset != expected or os.pread(item.fd, 1, offset):
        raise MediaError(f"media {item.ref!r} changed size while being read; try again")


def prepare_request(
    row: Row,
    job: JobSpec,
    resolver: MediaResolver | None,
    *,
    probe: bool = False,
    rules: MediaRules = GEMINI_3_RULES,
) -> PreparedRequest:
    """Build the body of ``row`` with its local media checked and open but unread.

    RowError (MediaError included) when the row cannot be sent: a bad or oversize file, or a
    body over ``job.max_request_bytes`` once encoded. ``probe`` reads each file's metadata
    (pages, seconds, pixels) for the token estimate.
    """
    deferring = _DeferringResolver(resolver) if resolver is not None else None
    try:
        body = build_body(row, job, deferring)
        skeleton = encode_body(body)
        pending = deferring.pending if deferring is not None else []
        size = len(skeleton) + sum(
            len(item.prefix) + base64_size(item.info.size) - len(item.marker) for item in pending
        )
        if size > job.max_request_bytes:
            files = ", ".join(f"{item.ref!r} ({item.info.size:,} bytes)" for item in pending)
            raise MediaError(
                f"row {row.id!r}: the request would be {size:,} bytes with its media "
                f"base64-encoded, over the {job.max_request_bytes:,}-byte per-request limit "
                f"(max_request_bytes){'; files: ' + files if files else ''}"
            )
        metas: dict[str, MediaMeta] = {}
        for item in pending:
            info = item.info
            metas[item.marker] = (
                probe_fd(item.fd, info.mime, info.kind, info.size) if probe
                else MediaMeta(kind=info.kind, mime=info.mime, size=info.size)
            )
        estimate = messages_estimate(body.get("messages") or (), metas, rules)
    except BaseException:
        if deferring is not None:
            deferring.close()
        raise
    return PreparedRequest(
        row_id=row.id, skeleton=skeleton, media=list(pending), size=size, estimate=estimate,
        metas=metas,
    )

