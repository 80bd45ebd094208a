"""The one module that speaks HTTP: POST a chat completion, read JSON or SSE, map failures.

aiohttp directly: one ``ClientSession`` and one ``TCPConnector`` (``limit=max_connections``)
serve every request of a run. httpx's model layer on top of the same aiohttp transport cost
2.7-3x the CPU per request of bare aiohttp (``bench/http_stack.py``, ``bench/RESULTS.md``), more
than all of batchrun's own per-row work, so the project speaks aiohttp only.

Every failure leaves as a ``BatchrunError``: API errors by the API's error table (the gateway's
API reference, https://api.aivideoapi.ai), everything on the wire (timeouts, resets, cut bodies,
garbage) as ``TransportError``. The API key never appears in a message: error bodies are
scrubbed and transport errors are re-raised without their cause. Reading a streamed body is
``stream_reader``'s part.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import aiohttp
import certifi
import orjson

from batchrun import __version__
from batchrun.api.response import parse_json_body
from batchrun.api.retry_after import parse_retry_after, rate_limit_of
from batchrun.api.sse import SSEDecoder
from batchrun.api.stream_reader import (
    READ_BUFSIZE,
    WIRE_FAILURES,
    StallWatch,
    parse_sse_bytes,
    read_stream,
)
from batchrun.core.errors import (
    BatchrunError,
    RateLimitedError,
    TransportError,
    describe_body,
    error_from_response,
)
from batchrun.core.result import Completion

USER_AGENT = f"batchrun/{__version__}"
# How an event stream's first line may open: a field the SSE standard names, or a comment.
_SSE_OPENINGS = (b"data:", b":", b"event:", b"id:", b"retry:", b"data\n", b"data\r")
_AIOHTTP_MESSAGE = re.compile(r"message='([^']*)'")


def mask_key(text: str, key: str) -> str:
    """``text`` with every occurrence of ``key`` replaced by ``sk-…<last 4>``."""
    if not key or key not in text:
        return text
    return text.replace(key, _masked(key))


def _masked(key: str) -> str:
    # Short (test) keys would be mostly revealed by their last four characters.
    return f"sk-…{key[-4:]}" if len(key) >= 12 else "sk-…"


class SizedBody(Protocol):
    """A request body of known size that can be iterated once, in chunks."""

    size: int

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class ClientSettings:
    """How to reach the API. ``endpoint`` has no trailing slash, e.g. ``…/v1``."""

    endpoint: str
    api_key: str = field(repr=False)
    max_connections: int = 64
    connect_timeout_s: float = 30.0
    read_timeout_s: float = 300.0  # per read: a stream that stalls this long is dropped
    max_retry_after_s: float = 60.0
    # The whole request, first byte sent to last byte read: a stream that trickles forever
    # (a keep-alive now and then, never [DONE]) is dropped after this. None: no limit.
    request_timeout_s: float | None = None


class ApiClient:
    """Sends chat completions; use ``async with ApiClient(settings) as client``."""

    def __init__(self, settings: ClientSettings) -> None:
        if settings.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.settings = settings
        endpoint = settings.endpoint.rstrip("/")
        self._chat_url = f"{endpoint}/chat/completions"
        self._credits_url = f"{endpoint}/credits"
        self._key = settings.api_key
        self._key_bytes = settings.api_key.encode() if settings.api_key else b""
        self._session: aiohttp.ClientSession | None = None
        self._requests_out = 0  # completions begun and not over (the pool holds max_connections)
        self._stall_watch: StallWatch | None = None
        self._closed = False
        # The session sends these with every request; a stream only changes Accept (headers
        # merged per request cost more than the whole of some rows' own work).
        self._session_headers = {"Authorization": f"Bearer {settings.api_key}",
                                 "User-Agent": USER_AGENT, "Content-Type": "application/json",
                                 "Accept": "application/json"}
        self._stream_headers = {"Accept": "text/event-stream"}
        # Waiting for a free pooled connection is the runner's concurrency at work (the pool
        # is as large as it): only a stalled connect or read, or an answer that takes longer
        # than request_timeout_s overall, is a fault. A completion's read timeout and overall
        # limit are the stall watch's (one timer for all requests, not aiohttp's timers,
        # re-armed per read, per request). aiohttp's read timer stays where the wait for the
        # headers starts later than the request: a body with local media (when its upload
        # ends) and a request that may wait for a pooled connection (when it is sent); other
        # requests keep aiohttp's total timer as well.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=None,
                                              sock_connect=settings.connect_timeout_s,
                                              sock_read=None)
        self._timeout_read_by_aiohttp = aiohttp.ClientTimeout(total=None, connect=None,
                                                     sock_connect=settings.connect_timeout_s,
                                                     sock_read=settings.read_timeout_s)
        self._timeout_total = aiohttp.ClientTimeout(total=settings.request_timeout_s,
                                                    connect=None,
                                                    sock_connect=settings.connect_timeout_s,
                                                    sock_read=settings.read_timeout_s)

    def __repr__(self) -> str:
        return (f"ApiClient(endpoint={self.settings.endpoint!r}, "
                f"max_connections={self.settings.max_connections})")

    def _open(self) -> aiohttp.ClientSession:
        """Built on first use, inside the running event loop, as aiohttp wants."""
        if self._closed:
            raise RuntimeError("the client is closed")
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections,
            limit_per_host=0,  # the total limit is the one that matters: one host
            # certifi's roots, the same on every platform (not whatever the OS has).
            ssl=ssl.create_default_context(cafile=certifi.where())
            if self._chat_url.startswith("https:") else True,
            # Idle connections are dropped before common server keep-alives (15 s+) expire,
            # so a POST rarely lands on a socket the server has just closed.
            keepalive_timeout=15.0,
        )
        self._stall_watch = StallWatch(self.settings.read_timeout_s, asyncio.get_running_loop(),
                                       self.settings.request_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers=self._session_headers,
            cookie_jar=aiohttp.DummyCookieJar(),  # an API has no use for cookies
            trust_env=False,  # no proxies from the environment
            raise_for_status=False,
            # A stream is read whole at its end (``read_stream``): room for a long answer.
            read_bufsize=READ_BUFSIZE,
        )
        return self._session

    @property
    def pool_limit(self) -> int:
        """Connections the pool may open at once (the connector's limit once it exists)."""
        if self._session is not None and self._session.connector is not None:
            return self._session.connector.limit
        return self.settings.max_connections

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool; safe to call twice."""
        self._closed = True
        session, self._session = self._session, None
        if self._stall_watch is not None:
            self._stall_watch.close()
        if session is not None:
            await session.close()

    async def complete(self, body: bytes | SizedBody, *, stream: bool) -> Completion:
        """POST one already-encoded request body; return its completion or raise its error.

        A ``SizedBody`` is streamed in its chunks with a Content-Length (never chunked
        transfer encoding), so a large body is never copied whole into the socket's buffer.
        The whole exchange is bounded by ``request_timeout_s`` (a trickling stream retries).
        """
        session = self._session or self._open()
        watch = self._stall_watch
        assert watch is not None  # made with the session
        headers = self._stream_headers if stream else None
        timeout = self._timeout  # the session's: the watch times the reads
        # More requests out than pooled connections (a row back from its backoff while its
        # stand-in sends): this one may wait for a connection, which is no stall.
        watched = self._requests_out < self.settings.max_connections
        if not isinstance(body, bytes):
            watched = False
            headers = {**(headers or {}), "Content-Length": str(body.size)}
        if not watched:
            timeout = self._timeout_read_by_aiohttp
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        watch.begin(task, headers=watched)
        self._requests_out += 1
        what = "request failed"
        try:
            try:
                # Redirects are not followed: a POST bounced elsewhere means a wrong endpoint.
                response = await session.post(
                    self._chat_url, data=body, allow_redirects=False, headers=headers,
                    timeout=timeout,
                )
            except WIRE_FAILURES as exc:
                raise self._wire_error(exc, what) from None
            watch.headers_in(task)
            what = "reading the answer failed"
            content = response.content
            reading = watch.watch(content, task) if watched else None
            try:
                if not 200 <= response.status < 300:
                    raise await self._api_error(response)
                content_type = response.headers.get("Content-Type", "")
                if "html" in content_type:  # a captive portal, a proxy's page: not the API
                    raw = await response.read()
                    raise TransportError(
                        f"HTTP {response.status} answer is {describe_body(raw)}")
                if "event-stream" in content_type or (stream and "json" not in content_type):
                    completion = await read_stream(response, watch, reading)
                else:
                    completion = await self._read_json(response)
                completion.rate_limit = rate_limit_of(response.headers)
                return completion
            except WIRE_FAILURES as exc:
                raise self._wire_error(exc, what) from None
            except BatchrunError as exc:
                raise self._scrubbed(exc) from None
            except RecursionError:
                # Nested deeper than Python walks (orjson reads 1,024 levels, printing a value
                # in an error or a field recurses): a malformed answer, not a crash of the run.
                raise TransportError(
                    f"HTTP {response.status} answer is nested too deeply to read") from None
            finally:
                if reading is not None:
                    watch.forget(content)
                # Back to the pool when the body was read to its end; closed otherwise.
                response.release()
        except asyncio.CancelledError:
            # Cancelled by the watch (and by nobody else): no headers within the read timeout,
            # or no answer within the overall limit, as aiohttp's timers have them.
            timed_out = watch.timed_out(task, cancelling)
            if timed_out is not None:
                raise self._wire_error(timed_out, what) from None
            raise
        finally:
            self._requests_out -= 1
            watch.end(task)

    async def get_credits(self) -> float | None:
        """The balance from ``GET {endpoint}/credits``; None when unknown or unlimited.

        401/402/403 raise their error (the key cannot be used); a missing endpoint, a 5xx, a body
        we cannot read or a shape we do not know give None: the balance is only advisory.
        """
        session = self._session or self._open()
        try:
            async with session.get(self._credits_url, allow_redirects=False,
                                   timeout=self._timeout_total) as response:
                if response.status in (401, 402, 403):
                    raise await self._api_error(response)
                if response.status != 200:
                    return None
                raw = await response.read()
        except WIRE_FAILURES as exc:
            raise self._wire_error(exc, "GET /credits failed") from None
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return balance_from_payload(payload)

    async def _read_json(self, response: aiohttp.ClientResponse) -> Completion:
        raw = await response.read()
        try:
            return parse_json_body(raw, response.status)
        except TransportError:
            # No JSON opens like an event stream: one with a JSON label is read as a stream.
            if raw.lstrip().startswith(_SSE_OPENINGS):
                return parse_sse_bytes(raw, response.status)
            raise

    async def _api_error(self, response: aiohttp.ClientResponse) -> BatchrunError:
        body = await response.read()
        if self._key_bytes and self._key_bytes in body:
            body = body.replace(self._key_bytes, _masked(self._key).encode())
        if b"data:" in body:  # an error sent as an event stream
            body = _error_event(body) or body
        retry_after = parse_retry_after(response.headers, cap_s=self.settings.max_retry_after_s)
        error = error_from_response(response.status, body, retry_after=retry_after)
        if isinstance(error, RateLimitedError):
            error.rate_limit = rate_limit_of(response.headers)
        return error

    def _wire_error(self, exc: BaseException, what: str) -> TransportError:
        message = f"{what}: {describe_failure(exc, self.settings)}"
        return TransportError(mask_key(message, self._key))

    def _scrubbed(self, exc: BatchrunError) -> BatchrunError:
        if self._key and self._key in exc.message:
            exc.message = mask_key(exc.message, self._key)
            exc.args = (exc.message,)
        return exc


def _error_event(raw: bytes) -> bytes | None:
    """The ``{"error": …}`` event of an error status sent as an event stream, if there is one."""
    decoder = SSEDecoder()
    for event in [*decoder.feed(raw), *decoder.flush()]:
        try:
            obj = orjson.loads(event)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and obj.get("error"):
            return event.encode()
    return None


def describe_failure(exc: BaseException, settings: ClientSettings) -> str:
    """A short reason for a wire failure, in the words a user can act on."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"connect timed out after {settings.connect_timeout_s:g}s"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"read timed out: no data for {settings.read_timeout_s:g}s"
    if isinstance(exc, TimeoutError):  # neither connect nor read: the overall limit
        if settings.request_timeout_s is not None:
            return f"request timed out: no complete answer within {settings.request_timeout_s:g}s"
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        detail = _AIOHTTP_MESSAGE.search(str(exc))
        return f"body cut off: {detail.group(1) if detail else _short(exc)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error)
        return f"cannot connect to {exc.host}:{exc.port}: {reason}"
    if isinstance(exc, ConnectionResetError) or (
            isinstance(exc, aiohttp.ClientOSError) and isinstance(exc.__cause__,
                                                                  ConnectionResetError)):
        return "connection reset by peer"
    return f"{type(exc).__name__}: {_short(exc)}" if str(exc) else type(exc).__name__


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def balance_from_payload(payload: Any) -> float | None:
    """The balance in ``{"credits": x}``, ``{"balance": x}`` or ``{"data": {…}}`` shapes.

    None for a shape we do not know and for "unlimited" (null, a word, or a negative value).
    """
    if not isinstance(payload, dict):
        return None
    for key in ("credits", "balance", "remaining_credits", "credit_balance", "total_available",
                "remaining"):
        if key in payload:
            return _balance_value(payload[key])
    nested = payload.get("data")
    if isinstance(nested, dict):
        return balance_from_payload(nested)
    return None


def _balance_value(value: Any) -> float | None:
    if isinstance(value, dict):
        return balance_from_payload(value)
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None  # "unlimited" and friends
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        return None
    return number
