"""The one module that speaks HTTP: POST a chat completion, read JSON or SSE, map failures.

httpx's API over ``httpx_aiohttp.AiohttpTransport``: httpx's own pool degrades badly under
high concurrency (encode/httpx#3215), aiohttp's does not. One client and one aiohttp
``TCPConnector`` (``limit=max_connections``) serve every request of a run.

Every failure leaves as a ``BatchrunError``: API errors by the seed's table, everything on the
wire (timeouts, resets, cut bodies, garbage) as ``TransportError``. The API key never appears in
a message: error bodies are scrubbed and transport errors are re-raised without their cause.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, cast

import aiohttp
import anyio
import httpx
import orjson
from aiohttp.http_exceptions import HttpProcessingError
from httpx_aiohttp import AiohttpTransport

from batchrun import __version__
from batchrun.errors import BatchrunError, TransportError, describe_body, error_from_response
from batchrun.response import StreamAccumulator, decode_event, parse_completion
from batchrun.result import Completion
from batchrun.retry_after import parse_retry_after
from batchrun.sse import SSEDecoder

USER_AGENT = f"batchrun/{__version__}"
_AIOHTTP_MESSAGE = re.compile(r"message='([^']*)'")
# How long to wait for the end of the body once [DONE] is in (see ``_drain``).
DRAIN_AFTER_DONE_S = 0.5

# Everything that means "no usable answer came over the wire". httpx_aiohttp maps most aiohttp
# errors to httpx ones, but not all of them (and not those raised while a stream is closed).
_WIRE_FAILURES: tuple[type[BaseException], ...] = (
    httpx.RequestError,  # TransportError, TimeoutException, DecodingError …
    aiohttp.ClientError,
    HttpProcessingError,
    TimeoutError,  # asyncio.TimeoutError is this on 3.11
    OSError,  # ConnectionResetError, ssl.SSLError …
    EOFError,
)


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
        self._transport = AiohttpTransport(client=self._make_session)
        self._http = httpx.AsyncClient(
            transport=self._transport,
            headers={"Authorization": f"Bearer {settings.api_key}", "User-Agent": USER_AGENT},
            # pool=None: waiting for a free connection is the runner's concurrency at work,
            # not a fault; a stalled connect or read is.
            timeout=httpx.Timeout(connect=settings.connect_timeout_s,
                                  read=settings.read_timeout_s,
                                  write=settings.read_timeout_s, pool=None),
            # Proxies from the environment would make httpx route around our transport.
            trust_env=False,
        )
        self._json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._stream_headers = {"Content-Type": "application/json",
                                "Accept": "text/event-stream"}

    def __repr__(self) -> str:
        return (f"ApiClient(endpoint={self.settings.endpoint!r}, "
                f"max_connections={self.settings.max_connections})")

    def _make_session(self) -> aiohttp.ClientSession:
        """Built on first use, inside the running event loop, as aiohttp wants."""
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections,
            limit_per_host=0,  # the total limit is the one that matters: one host
            ssl=self._transport.ssl_context,  # httpx's (certifi) verification, not aiohttp's
            # Idle connections are dropped before common server keep-alives (15 s+) expire,
            # so a POST rarely lands on a socket the server has just closed.
            keepalive_timeout=15.0,
        )
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
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
        await self._http.aclose()  # closes the transport and with it the aiohttp session

    async def complete(self, body: bytes | SizedBody, *, stream: bool) -> Completion:
        """POST one already-encoded request body; return its completion or raise its error.

        A ``SizedBody`` is streamed in its chunks with a Content-Length (never chunked
        transfer encoding), so a large body is never copied whole into the socket's buffer.
        The whole exchange is bounded by ``request_timeout_s`` (a trickling stream retries).
        """
        limit = self.settings.request_timeout_s
        if limit is None:
            return await self._complete(body, stream=stream)
        with anyio.move_on_after(limit) as scope:
            return await self._complete(body, stream=stream)
        # Only reached when the scope cancelled the request: the answer took too long overall.
        assert scope.cancelled_caught
        raise TransportError(f"request timed out: no complete answer within {limit:g}s")

    async def _complete(self, body: bytes | SizedBody, *, stream: bool) -> Completion:
        headers = self._stream_headers if stream else self._json_headers
        if not isinstance(body, bytes):
            headers = {**headers, "Content-Length": str(body.size)}
        request = self._http.build_request("POST", self._chat_url, content=body, headers=headers)
        try:
            response = await self._http.send(request, stream=True)
        except _WIRE_FAILURES as exc:
            raise self._wire_error(exc, "request failed") from None
        try:
            if not 200 <= response.status_code < 300:
                raise await self._api_error(response)
            content_type = response.headers.get("content-type", "")
            if "html" in content_type:  # a captive portal, a proxy's page: not the API
                raw = await response.aread()
                raise TransportError(
                    f"HTTP {response.status_code} answer is {describe_body(raw)}")
            if "event-stream" in content_type or (stream and "json" not in content_type):
                return await self._read_stream(response)
            return await self._read_json(response)
        except _WIRE_FAILURES as exc:
            raise self._wire_error(exc, "reading the answer failed") from None
        except BatchrunError as exc:
            raise self._scrubbed(exc) from None
        finally:
            await self._close(response)

    async def get_credits(self) -> float | None:
        """The balance from ``GET {endpoint}/credits``; None when unknown or unlimited.

        401/402/403 raise their error (the key cannot be used); a missing endpoint, a 5xx, a body
        we cannot read or a shape we do not know give None: the balance is only advisory.
        """
        try:
            response = await self._http.get(self._credits_url,
                                             headers={"Accept": "application/json"})
        except _WIRE_FAILURES as exc:
            raise self._wire_error(exc, "GET /credits failed") from None
        if response.status_code in (401, 402, 403):
            raise await self._api_error(response)
        if response.status_code != 200:
            return None
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return None
        return balance_from_payload(payload)

    async def _read_json(self, response: httpx.Response) -> Completion:
        raw = await response.aread()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if raw.lstrip()[:5] == b"data:":  # an event stream with a JSON content type
                return _parse_sse_bytes(raw, response.status_code)
            snippet = raw[:120].decode("utf-8", "replace")
            raise TransportError(
                f"HTTP {response.status_code} answer is not JSON ({len(raw)} bytes): "
                f"{snippet!r}") from None
        return parse_completion(payload, response.status_code)

    async def _read_stream(self, response: httpx.Response) -> Completion:
        decoder = SSEDecoder()
        accumulator = StreamAccumulator(response.status_code)
        chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        async with contextlib.aclosing(chunks):
            async for data in chunks:
                for event in decoder.feed(data):
                    if accumulator.feed_event(event):
                        completion = accumulator.finish(saw_done=True)
                        await _drain(chunks)
                        return completion
        return _finish_stream(decoder, accumulator)

    async def _api_error(self, response: httpx.Response) -> BatchrunError:
        body = await response.aread()
        if self._key_bytes and self._key_bytes in body:
            body = body.replace(self._key_bytes, _masked(self._key).encode())
        if b"data:" in body:  # an error sent as an event stream
            body = _error_event(body) or body
        retry_after = parse_retry_after(response.headers, cap_s=self.settings.max_retry_after_s)
        return error_from_response(response.status_code, body, retry_after=retry_after)

    def _wire_error(self, exc: BaseException, what: str) -> TransportError:
        message = f"{what}: {describe_failure(exc, self.settings)}"
        return TransportError(mask_key(message, self._key))

    def _scrubbed(self, exc: BatchrunError) -> BatchrunError:
        if self._key and self._key in exc.message:
            exc.message = mask_key(exc.message, self._key)
            exc.args = (exc.message,)
        return exc

    @staticmethod
    async def _close(response: httpx.Response) -> None:
        with contextlib.suppress(*_WIRE_FAILURES):
            await response.aclose()


async def _drain(chunks: AsyncGenerator[bytes, None]) -> None:
    """Read the few bytes after [DONE] (the chunked-body terminator) so that aiohttp sees a
    complete body and puts the connection back in the pool instead of closing it. Bounded:
    a server that keeps the stream open after [DONE] only costs us that connection."""
    with anyio.move_on_after(DRAIN_AFTER_DONE_S), contextlib.suppress(*_WIRE_FAILURES):
        async for _ in chunks:
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


def _parse_sse_bytes(raw: bytes, http_status: int) -> Completion:
    decoder = SSEDecoder()
    accumulator = StreamAccumulator(http_status)
    for event in decoder.feed(raw):
        if accumulator.feed_event(event):
            return accumulator.finish(saw_done=True)
    return _finish_stream(decoder, accumulator)


def describe_failure(exc: BaseException, settings: ClientSettings) -> str:
    """A short reason for a wire failure, from the aiohttp error behind httpx's when there is one.

    httpx_aiohttp files every aiohttp connection error (a server disconnect too) under
    ``ConnectTimeout``, so the original error says more than the mapped one.
    """
    cause: BaseException = exc
    if isinstance(exc, httpx.HTTPError) and exc.__cause__ is not None:
        cause = exc.__cause__
    if isinstance(cause, aiohttp.ConnectionTimeoutError) or (
            cause is exc and isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)):
        return f"connect timed out after {settings.connect_timeout_s:g}s"
    if isinstance(cause, aiohttp.SocketTimeoutError) or (
            cause is exc and isinstance(exc, httpx.ReadTimeout)):
        return f"read timed out: no data for {settings.read_timeout_s:g}s"
    if isinstance(cause, TimeoutError | httpx.TimeoutException):
        return "timed out"
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(cause, aiohttp.ClientPayloadError):
        detail = _AIOHTTP_MESSAGE.search(str(cause))
        return f"body cut off: {detail.group(1) if detail else _short(cause)}"
    if isinstance(cause, aiohttp.ClientConnectorError):
        reason = cause.os_error.strerror or str(cause.os_error)
        return f"cannot connect to {cause.host}:{cause.port}: {reason}"
    if isinstance(cause, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(cause, httpx.DecodingError):
        return f"cannot decode the body ({_short(cause)})"
    return f"{type(cause).__name__}: {_short(cause)}" if str(cause) else type(cause).__name__


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
