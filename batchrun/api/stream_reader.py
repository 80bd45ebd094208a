"""Read a streamed answer off the wire: the body's bytes through the SSE decoder into the
chunk accumulator (``stream``), with the read timeout of every stream (``StallWatch``).
``client`` calls it; failures leave as aiohttp's own errors (``WIRE_FAILURES``), which the
client maps.

Nothing here shows an answer before it is complete, so the body is read when it has ended,
not part by part: a wake of the row's task per part (4+ parts over the latency) cost 5-9%
of a streamed row's CPU (``bench/throughput.py --old``, 200 ms x 512, 4 parts, two paired
measurements: 0.743 -> 0.674 and 0.740 -> 0.697 CPU-s per 1,000 rows between first send
and last answer; ``bench/RESULTS.md``). The watch still sees every
stream's bytes grow, so a stall is a stall as before, and it wakes a reader early when bytes
wait (below).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from batchrun.api.response import parse_json_body
from batchrun.api.sse import SSEDecoder
from batchrun.api.stream import StreamAccumulator, decode_event
from batchrun.api.stream_whole import whole_stream_completion
from batchrun.core.errors import TransportError
from batchrun.core.result import Completion

# Everything that means "no usable answer came over the wire".
WIRE_FAILURES: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,  # connection, payload, timeouts (ServerTimeoutError) …
    HttpProcessingError,
    TimeoutError,  # asyncio.TimeoutError is this on 3.11
    OSError,  # ConnectionResetError, ssl.SSLError …
    EOFError,
)


# Unread bytes of one stream that make the watch wake its reader before the body ends, so
# that aiohttp's flow control (it stops reading the socket at twice ``READ_BUFSIZE``
# buffered) never holds a long answer up.
WAKE_AT_BYTES = 2**18
# The session's read buffer: a stream pauses at twice this much unread.
READ_BUFSIZE = 2**20


class _Reading:
    """One stream being read: what the watch knows of it."""

    __slots__ = ("task", "seen", "changed_at", "consumed", "waiting", "woken")

    def __init__(self, task: asyncio.Task[Any], seen: int, now: float) -> None:
        self.task = task
        self.seen = seen  # the stream's byte count at the last look
        self.changed_at = now  # when that count last grew (loop time)
        self.consumed = 0  # bytes the reader has taken
        self.waiting = False  # the reader waits for the end of the body
        self.woken = False  # the watch cancelled that wait to have the bytes read now


class StallWatch:
    """The read timeout of every request of a client and the whole-request limit: a body
    whose byte count has not grown for ``timeout`` seconds is failed as aiohttp's own read
    timer fails it (``SocketTimeoutError``, so the same error and message); a request whose
    headers have not come ``timeout`` seconds after it began (``headers_due``) has its task
    cancelled (``stalled``), and one still unanswered ``request_timeout`` seconds after it
    began (``deadlines``) too (``fired``), as aiohttp's timers would end them, for the client
    to raise the same errors. Each at most two ``tick`` late.

    A stream's reader waits for the end of the body and reads it whole (``read_stream``):
    one wake of its task per answer instead of one per part. The watch wakes a reader
    sooner (``woken``: its wait is cancelled) when its stream has unread bytes but fell
    quiet for a tick (a server that keeps the connection after ``[DONE]``) or holds
    ``WAKE_AT_BYTES`` unread.

    aiohttp re-arms its read timer on every read from the socket, and on uvloop a re-arm
    costs ~4 us: a request paid it at least three times (armed when sent, re-armed by the
    headers, dropped by the body); its total timer cost a timer and a timer context per
    request. Here a request costs a few dict operations, and one timer serves all, only
    while any body is read or any request is out. (A body with local media keeps aiohttp's
    read timer: its wait for the headers starts when the upload ends, which only aiohttp
    sees.)
    """

    __slots__ = ("timeout", "request_timeout", "tick", "reading", "deadlines", "fired",
                 "headers_due", "stalled", "_loop", "_handle")

    def __init__(self, timeout: float, loop: asyncio.AbstractEventLoop,
                 request_timeout: float | None = None) -> None:
        self.timeout = timeout
        self.request_timeout = request_timeout
        # 1 s late at most at the defaults (300-s reads, 900-s requests)
        self.tick = min(1.0, timeout / 8, (request_timeout or 8.0) / 8)
        self.reading: dict[aiohttp.StreamReader, _Reading] = {}
        self.deadlines: dict[asyncio.Task[Any], float] = {}  # request's task -> loop time
        self.fired: set[asyncio.Task[Any]] = set()  # tasks cancelled at their deadline
        self.headers_due: dict[asyncio.Task[Any], float] = {}  # request's task -> loop time
        self.stalled: set[asyncio.Task[Any]] = set()  # tasks cancelled: no headers in time
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, stream: aiohttp.StreamReader, task: asyncio.Task[Any]) -> _Reading:
        """``task`` reads ``stream`` from now on, until ``forget``."""
        reading = self.reading[stream] = _Reading(task, stream.total_bytes, self._loop.time())
        if self._handle is None:
            self._handle = self._loop.call_later(self.tick, self._check)
        return reading

    def forget(self, stream: aiohttp.StreamReader) -> None:
        self.reading.pop(stream, None)

    def begin(self, task: asyncio.Task[Any], *, headers: bool) -> None:
        """A request of ``task`` begins: it is cancelled if not over in ``request_timeout``,
        and with ``headers`` if its headers are not in within ``timeout`` (``headers_in``)."""
        now = self._loop.time()
        if self.request_timeout is not None:
            self.deadlines[task] = now + self.request_timeout
        if headers:
            self.headers_due[task] = now + self.timeout
        if self._handle is None:
            self._handle = self._loop.call_later(self.tick, self._check)

    def headers_in(self, task: asyncio.Task[Any]) -> None:
        self.headers_due.pop(task, None)

    def end(self, task: asyncio.Task[Any]) -> None:
        """The request of ``task`` is over (answered, failed or cancelled): forget its limits;
        a cancel the watch made that the task did not see (the answer came first) is taken
        back."""
        self.deadlines.pop(task, None)
        self.headers_due.pop(task, None)
        for cancelled in (self.fired, self.stalled):
            if task in cancelled:
                cancelled.discard(task)
                task.uncancel()

    def timed_out(self, task: asyncio.Task[Any], cancelling: int) -> BaseException | None:
        """The error to raise for ``task``'s cancellation when the watch made it, and nobody
        else cancelled it too (``cancelling``: its count when the request began); else None,
        for the cancellation to go on."""
        for cancelled, error in ((self.stalled, _read_timeout), (self.fired, TimeoutError)):
            if task in cancelled:
                cancelled.discard(task)
                if task.uncancel() <= cancelling:
                    return error()
        return None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.reading.clear()
        self.deadlines.clear()
        self.headers_due.clear()

    def _check(self) -> None:
        now = self._loop.time()
        stalled_since = now - self.timeout
        for stream, reading in list(self.reading.items()):
            total = stream.total_bytes
            if total != reading.seen:
                reading.seen = total
                reading.changed_at = now
                if total - reading.consumed >= WAKE_AT_BYTES:
                    _wake(reading)
            elif reading.changed_at <= stalled_since:
                del self.reading[stream]
                stream.set_exception(_read_timeout())
            elif total > reading.consumed:
                _wake(reading)  # quiet, with bytes to read: [DONE] may be among them
        for due, cancelled in ((self.headers_due, self.stalled), (self.deadlines, self.fired)):
            if due:
                for task, deadline in list(due.items()):
                    if deadline <= now:
                        del due[task]
                        if task not in self.stalled and task not in self.fired:
                            cancelled.add(task)
                            task.cancel()
        self._handle = (self._loop.call_later(self.tick, self._check)
                        if self.reading or self.deadlines or self.headers_due else None)


def _read_timeout() -> aiohttp.SocketTimeoutError:
    # aiohttp's own words for its read timer, so the message is the same either way.
    return aiohttp.SocketTimeoutError("Timeout on reading data from socket")


def _wake(reading: _Reading) -> None:
    if reading.waiting and not reading.woken:
        reading.woken = True
        reading.task.cancel()


async def read_stream(response: aiohttp.ClientResponse, watch: StallWatch,
                      reading: _Reading | None = None) -> Completion:
    """The completion of a streamed answer whose headers are in, its body read to the end (or
    to ``[DONE]`` when the server keeps the connection after it); the client's ``watch``
    times it (``reading``, when the client has it watched already) and wakes the read when
    bytes wait."""
    parser: StreamParser | None = None  # made only for a body that comes in several reads
    content = response.content
    if reading is None:
        connection = response.connection
        if connection is not None and connection.protocol is not None:
            # The body is timed by the watch; aiohttp's timer (re-armed per socket read)
            # timed the wait for the headers (a body with media).
            connection.protocol.read_timeout = None
        task = asyncio.current_task()
        assert task is not None
        reading = watch.watch(content, task)
    try:
        while True:
            if not content.is_eof() and content.exception() is None:
                await _wait_for_body(content, reading)
            data = content.read_nowait()  # all that is buffered; raises the stream's error
            if not reading.consumed and content.is_eof():
                return parse_sse_bytes(data, response.status)  # whole in one read, as usual
            reading.consumed += len(data)
            if parser is None:
                parser = StreamParser(response.status)
            if data and (completion := parser.feed(data)) is not None:
                return completion
            if content.is_eof():
                return parser.end()
    finally:
        watch.forget(content)


async def _wait_for_body(content: aiohttp.StreamReader, reading: _Reading) -> None:
    """Until the body ends, fails, or the watch wakes us to read what is there."""
    task = reading.task
    cancelling = task.cancelling()
    reading.waiting = True
    try:
        await content.wait_eof()
    except asyncio.CancelledError:
        if not reading.woken:
            raise
        reading.woken = False
        if task.uncancel() > cancelling:
            raise  # cancelled by somebody else as well
    finally:
        reading.waiting = False


class StreamParser:
    """A streamed body, in as many reads as it comes, into one ``Completion`` (pure): the SSE
    decoder and the chunk accumulator, as ``read_stream`` and ``parse_sse_bytes`` use them.

    A body that opens with ``{`` is no event stream, whatever its label said (a JSON answer to
    a streamed request, sent as ``text/plain`` or even ``text/event-stream``): it is kept
    whole and read as the JSON answer at its end, not taken for a stream cut before its first
    event and sent again (and paid again)."""

    __slots__ = ("decoder", "accumulator", "_opened", "_json_body")

    def __init__(self, http_status: int = 200) -> None:
        self.decoder = SSEDecoder()
        self.accumulator = StreamAccumulator(http_status)
        self._opened = False  # a byte other than white space has come
        self._json_body: list[bytes] | None = None

    def feed(self, data: bytes) -> Completion | None:
        """The next bytes of the body; the answer once they bring ``[DONE]`` (what follows it
        is left), else None."""
        if not self._opened:
            head = data.lstrip()
            if not head:
                return None  # white space before anything: nothing an event stream needs
            self._opened = True
            if head[:1] == b"{":
                self._json_body = [head]
                return None
        elif self._json_body is not None:
            self._json_body.append(data)
            return None
        # Events as bytes: orjson parses them without a decoded copy.
        if self.accumulator.feed_payloads(self.decoder.feed_bytes(data)):
            return self.accumulator.finish(saw_done=True)
        return None

    def end(self) -> Completion:
        """End of body without [DONE]: take what is left, then judge whether it is complete."""
        if self._json_body is not None:
            return parse_json_body(b"".join(self._json_body), self.accumulator.http_status)
        accumulator = self.accumulator
        for event in self.decoder.flush():
            data = event.strip()
            if data == "[DONE]":
                return accumulator.finish(saw_done=True)
            if not data:
                continue
            try:
                chunk = decode_event(data)
            except TransportError as exc:
                raise TransportError(
                    f"stream cut mid-event before [DONE] ({exc.message})") from None
            accumulator.add(chunk)
        return accumulator.finish(saw_done=False)


def parse_sse_bytes(raw: bytes, http_status: int) -> Completion:
    """The completion of an event stream read whole: in one pass when it has the usual shape
    (``stream_whole``), else event by event."""
    completion = whole_stream_completion(raw, http_status)
    if completion is not None:
        return completion
    parser = StreamParser(http_status)
    completion = parser.feed(raw)
    return completion if completion is not None else parser.end()
