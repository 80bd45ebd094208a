"""How the emulator misbehaves on purpose: the bodies and wire behaviour of injected faults.

Kept apart from the handler so each fault reads as what a client would meet in the wild:
a proxy's HTML 502, a 200 that is an HTML page, a stream that stalls or ends early, an answer
without usage. Billing is decided by the caller (``emulator._chat_inner``): the answer-shaped
faults are billed (the upstream did the work), the proxy-shaped ones are not.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

PROXY_502_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
NOT_JSON_HTML = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body>Checking your browser before accessing the site.</body></html>"
)


def proxy_502() -> web.Response:
    """A reverse proxy's own error page: HTML, no ``{"error": …}`` body."""
    return web.Response(status=502, body=PROXY_502_HTML, content_type="text/html")


def not_json_200() -> web.Response:
    """A 200 whose body is an interstitial HTML page instead of the API's answer."""
    return web.Response(status=200, body=NOT_JSON_HTML, content_type="text/html")


def _gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def write_quietly(request: web.BaseRequest, response: web.StreamResponse,
                        data: bytes) -> bool:
    """Write unless the client has gone; False when it has (a stalled answer's reader left)."""
    if _gone(request):
        return False
    try:
        await response.write(data)
    except (ConnectionError, RuntimeError):
        return False
    return True


async def stalled_json(request: web.Request, headers: dict[str, str], payload: bytes,
                       stall_s: float) -> web.StreamResponse:
    """Half of a JSON body, a stall of ``stall_s``, then the rest if anyone still listens."""
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/json"
    response.content_length = len(payload)
    await response.prepare(request)
    half = len(payload) // 2
    if await write_quietly(request, response, payload[:half]):
        await asyncio.sleep(stall_s)
        if await write_quietly(request, response, payload[half:]):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
    return response


async def early_eof_json(request: web.Request, headers: dict[str, str],
                         payload: bytes) -> web.StreamResponse:
    """Half of a JSON body sent chunked, then a clean end: the client gets a short body."""
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    if await write_quietly(request, response, payload[: len(payload) // 2]):
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
    return response


def half_of(events: list[bytes]) -> int:
    """How many leading events make "about half" an answer: role delta, keep-alive, some
    content; never the usage chunk nor ``[DONE]``."""
    return max(3, (len(events) - 2) // 2)
