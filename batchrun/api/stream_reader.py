"""Read a streamed answer off the wire: the body's bytes through the SSE decoder into the
chunk accumulator (``stream``), with the read timeout of every stream (``StallWatch``) and the
drain after ``[DONE]`` that keeps the connection pooled. ``client`` calls it; failures leave as
aiohttp's own errors (``WIRE_FAILURES``), which the client maps.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import anyio
from aiohttp.http_exceptions import HttpProcessingError

from batchrun.api.sse import SSEDecoder
from batchrun.api.stream import StreamAccumulator, decode_event
from batchrun.core.errors import TransportError
from batchrun.core.result import Completion

# How long to wait for the end of the body once [DONE] is in (see ``_drain``).
DRAIN_AFTER_DONE_S = 0.5

# Everything that means "no usable answer came over the wire".
WIRE_FAILURES: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,  # connection, payload, timeouts (ServerTimeoutError) …
    HttpProcessingError,
    TimeoutError,  # asyncio.TimeoutError is this on 3.11
    OSError,  # ConnectionResetError, ssl.SSLError …
    EOFError,
)


class StallWatch:
    """The read timeout of every stream of a client, once its headers are in, and the
    whole-request limit of every request: a stream that has read nothing for ``timeout``
    seconds is failed as aiohttp's own read timer fails it (``SocketTimeoutError``, so the
    same error and message); a request still unanswered ``request_timeout`` seconds after it
    began has its task cancelled (``fired``), as aiohttp's total timer cancels it, for the
    client to raise a ``TimeoutError``. Either at most ``tick`` late.

    aiohttp re-arms its read timer on every read from the socket, and on uvloop a re-arm
    (cancel plus a new timer) costs ~4 us: a stream in N parts paid it N + 1 times; its total
    timer cost a timer and a timer context (entered at every wait for the body) per request.
    Here a read costs a clock read and a dict store, a request two dict operations, and one
    timer serves all, only while any stream is read or any request is out.
    """

    __slots__ = ("timeout", "request_timeout", "tick", "last_read", "deadlines", "fired",
                 "_loop", "_handle")

    def __init__(self, timeout: float, loop: asyncio.AbstractEventLoop,
                 request_timeout: float | None = None) -> None:
        self.timeout = timeout
        self.request_timeout = request_timeout
        # 1 s late at most at the defaults (300-s reads, 900-s requests)
        self.tick = min(1.0, timeout / 8, (request_timeout or 8.0) / 8)
        self.last_read: dict[aiohttp.StreamReader, float] = {}  # stream -> loop time
        self.deadlines: dict[asyncio.Task[Any], float] = {}  # request's task -> loop time
        self.fired: set[asyncio.Task[Any]] = set()  # tasks cancelled at their deadline
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None

    def now(self) -> float:
        return self._loop.time()

    def watch(self, stream: aiohttp.StreamReader) -> None:
        self.last_read[stream] = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_later(self.tick, self._check)

    def begin(self, task: asyncio.Task[Any]) -> None:
        """A request of ``task`` begins: it is cancelled if not over in ``request_timeout``."""
        assert self.request_timeout is not None
        self.deadlines[task] = self._loop.time() + self.request_timeout
        if self._handle is None:
            self._handle = self._loop.call_later(self.tick, self._check)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.last_read.clear()
        self.deadlines.clear()

    def _check(self) -> None:
        now = self._loop.time()
        stalled_since = now - self.timeout
        for stream, last in list(self.last_read.items()):
            if last <= stalled_since:
                del self.last_read[stream]
                stream.set_exception(
                    aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
        if self.deadlines:
            for task, deadline in list(self.deadlines.items()):
                if deadline <= now:
                    del self.deadlines[task]
                    self.fired.add(task)
                    task.cancel()
        self._handle = (self._loop.call_later(self.tick, self._check)
                        if self.last_read or self.deadlines else None)


async def read_stream(response: aiohttp.ClientResponse, watch: StallWatch | None) -> Completion:
    """The completion of a streamed answer whose headers are in, its body read to the end (or
    to ``[DONE]`` and a short drain); the client's ``watch`` times the reads."""
    decoder = SSEDecoder()
    accumulator = StreamAccumulator(response.status)
    content = response.content
    assert watch is not None  # made with the session
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        # The body's reads are timed by the watch; aiohttp's timer (re-armed per socket
        # read) still timed the wait for the headers. Reset for the connection's next use.
        connection.protocol.read_timeout = None
    last_read = watch.last_read
    watch.watch(content)
    try:
        # readany() itself, not iter_any(): one awaitable less per read; b"" is the end.
        while data := await content.readany():
            last_read[content] = watch.now()
            # Events as bytes: orjson parses them without a decoded copy.
            if accumulator.feed_payloads(decoder.feed_bytes(data)):
                completion = accumulator.finish(saw_done=True)
                if not content.at_eof():
                    await _drain(content)
                return completion
        return _finish_stream(decoder, accumulator)
    finally:
        last_read.pop(content, None)


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read the few bytes after [DONE] (the chunked-body terminator) so that aiohttp sees a
    complete body and puts the connection back in the pool instead of closing it. Bounded:
    a server that keeps the stream open after [DONE] only costs us that connection."""
    with anyio.move_on_after(DRAIN_AFTER_DONE_S):
        try:
            while await content.readany():
                pass
        except WIRE_FAILURES:
            pass


def _finish_stream(decoder: SSEDecoder, accumulator: StreamAccumulator) -> Completion:
    """End of body without [DONE]: take what is left, then judge whether it is complete."""
    for event in decoder.flush():
        data = event.strip()
        if data == "[DONE]":
            return accumulator.finish(saw_done=True)
        if not data:
            continue
        try:
            chunk = decode_event(data)
        except TransportError as exc:
            raise TransportError(f"stream cut mid-event before [DONE] ({exc.message})") from None
        accumulator.add(chunk)
    return accumulator.finish(saw_done=False)


def parse_sse_bytes(raw: bytes, http_status: int) -> Completion:
    """The completion of an event stream read whole (one sent under a JSON content type)."""
    decoder = SSEDecoder()
    accumulator = StreamAccumulator(http_status)
    if accumulator.feed_payloads(decoder.feed_bytes(raw)):
        return accumulator.finish(saw_done=True)
    return _finish_stream(decoder, accumulator)
