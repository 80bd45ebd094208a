"""Exception tree mirroring the gateway's error table; the runner decides by ``isinstance``.

The table (HTTP status, ``code``, ``type``) is the one of the gateway's API reference (https://api.aivideoapi.ai);
the README's "Troubleshooting the API's errors" says what batchrun does with each row.

``BatchrunError``
 ├─ ``InputError``            bad manifest, job spec or flags (exit 2)
 ├─ ``RowError``              this row cannot succeed; record it and go on
 │   ├─ ``InvalidRequestError``  400 invalid_request, 404 task_not_found, other 4xx
 │   └─ ``MediaError``           a media file is missing, outside the root, too big …
 ├─ ``RetryableError``        try the same request again later
 │   ├─ ``RateLimitedError``     429 rate_limit_exceeded
 │   ├─ ``ServerError``          500 internal_error and other 5xx
 │   ├─ ``UpstreamError``        503 upstream_error (may be prohibited content)
 │   └─ ``TransportError``       timeouts, resets, truncated or malformed answers
 └─ ``FatalError``            stop dispatching: nothing after this will succeed
     ├─ ``AuthenticationError``  401 invalid_api_key
     ├─ ``InsufficientCreditsError`` 402 insufficient_credits
     ├─ ``PermissionDeniedError`` 403 ip_not_allowed
     ├─ ``ModelNotFoundError``   404 model_not_found
     ├─ ``EndpointNotFoundError`` 404 without the API's error body, or a redirect
     ├─ ``SpendLimitError``      429 spend_limit_exceeded
     ├─ ``StorageError``         the run directory cannot be written (disk full …)
     └─ ``CircuitOpenError``     the circuit breaker: the rows fail alike, stop early
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

import orjson

from batchrun.core.ratelimit_info import RateLimitInfo


class BatchrunError(Exception):
    """Base of every error batchrun raises on purpose."""

    http_status: int | None = None
    code: str = "error"
    error_type: str = "batchrun_error"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if http_status is not None:
            self.http_status = http_status
        if code is not None:
            self.code = code
        if error_type is not None:
            self.error_type = error_type
        # Seconds the server asked us to wait (429/503), already capped by the parser.
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = f"{self.http_status} " if self.http_status else ""
        return f"{prefix}{self.code}: {self.message}"


class InputError(BatchrunError):
    """The manifest, the job spec or the command line is wrong; nothing was sent."""

    code = "input_error"
    error_type = "input_error"


class RowError(BatchrunError):
    """This row cannot succeed as written; it is recorded as an error, the run goes on."""

    code = "row_error"
    error_type = "invalid_request_error"


class InvalidRequestError(RowError):
    """400 invalid_request (or another 4xx the table does not make fatal)."""

    http_status = 400
    code = "invalid_request"


class MediaError(RowError):
    """A media file of the row is missing, outside the media root, unreadable or too big."""

    code = "media_error"
    error_type = "media_error"


class RetryableError(BatchrunError):
    """A transient failure: the same request may succeed if sent again later."""

    code = "retryable_error"


class RateLimitedError(RetryableError):
    """429 rate_limit_exceeded: slow down, honour Retry-After."""

    http_status = 429
    code = "rate_limit_exceeded"
    error_type = "rate_limit_error"
    # The answer's x-ratelimit-* headers when it had any (set by the client).
    rate_limit: RateLimitInfo | None = None


class ServerError(RetryableError):
    """500 internal_error, or another 5xx such as a proxy's 502/504."""

    http_status = 500
    code = "internal_error"
    error_type = "api_error"


class UpstreamError(RetryableError):
    """503 upstream_error: provider trouble, or content it refused (refunded by the gateway)."""

    http_status = 503
    code = "upstream_error"
    error_type = "upstream_error"


class TransportError(RetryableError):
    """No usable answer: timeout, reset connection, truncated stream, unparseable body."""

    code = "transport_error"
    error_type = "transport_error"


class FatalError(BatchrunError):
    """Every further request would fail the same way: stop dispatch, keep what is done."""

    code = "fatal_error"
    advice = "fix the cause, then run the same command again to resume"


class AuthenticationError(FatalError):
    """401 invalid_api_key: the key is invalid, disabled or deleted."""

    http_status = 401
    code = "invalid_api_key"
    error_type = "authentication_error"
    advice = "check BATCHRUN_API_KEY (keys start with sk-), then run the same command to resume"


class InsufficientCreditsError(FatalError):
    """402 insufficient_credits: the balance is too low."""

    http_status = 402
    code = "insufficient_credits"
    error_type = "billing_error"
    advice = "top up (Dashboard > Billing), then run the same command to resume"


class PermissionDeniedError(FatalError):
    """403 ip_not_allowed: this machine's IP is not in the key's allowlist."""

    http_status = 403
    code = "ip_not_allowed"
    error_type = "permission_error"
    advice = "add this machine's IP to the key's allowlist, then run the same command to resume"


class ModelNotFoundError(FatalError):
    """404 model_not_found: the model does not exist or is inactive."""

    http_status = 404
    code = "model_not_found"
    error_type = "invalid_request_error"
    advice = "fix `model` in the job spec, then run the same command to resume"


class EndpointNotFoundError(FatalError):
    """A 404 (or redirect) that is not the API's own answer: the endpoint address is wrong."""

    http_status = 404
    code = "endpoint_not_found"
    error_type = "invalid_request_error"
    advice = "check --endpoint (the API base, e.g. https://api.aivideoapi.ai/v1), then resume"


class SpendLimitError(FatalError):
    """429 spend_limit_exceeded: the key's hourly/daily/total spend limit is reached."""

    http_status = 429
    code = "spend_limit_exceeded"
    error_type = "billing_error"
    advice = "wait for the key's spend window to reset or raise the limit, then resume"


class StorageError(FatalError):
    """The run directory cannot be written (disk full, read-only): no answer could be kept."""

    code = "storage_error"
    error_type = "storage_error"
    advice = "free space in (or fix) the run directory's filesystem, then run the same command"


class CircuitOpenError(FatalError):
    """The circuit breaker tripped: the first rows, or most recent ones, fail the same way."""

    code = "circuit_open"
    error_type = "circuit_breaker"
    advice = "fix the cause named above, then run the same command to resume"


# (status, code) pairs of the gateway's error table; the status alone decides when the code is
# unknown.
_BY_CODE: dict[str, type[BatchrunError]] = {
    "invalid_request": InvalidRequestError,
    "invalid_api_key": AuthenticationError,
    "insufficient_credits": InsufficientCreditsError,
    "ip_not_allowed": PermissionDeniedError,
    "model_not_found": ModelNotFoundError,
    "task_not_found": InvalidRequestError,
    "rate_limit_exceeded": RateLimitedError,
    "spend_limit_exceeded": SpendLimitError,
    "internal_error": ServerError,
    "upstream_error": UpstreamError,
}

_BY_STATUS: dict[int, type[BatchrunError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: EndpointNotFoundError,
    408: TransportError,
    409: ServerError,
    429: RateLimitedError,
    500: ServerError,
    503: UpstreamError,
}


def error_class_for(http_status: int | None, code: str | None) -> type[BatchrunError]:
    """Pick the exception class for an API error by its code, else by its status."""
    if code and code in _BY_CODE:
        return _BY_CODE[code]
    if http_status is None:
        return TransportError
    if http_status in _BY_STATUS:
        return _BY_STATUS[http_status]
    if http_status >= 500:
        return ServerError
    if 300 <= http_status < 400:
        return EndpointNotFoundError
    return InvalidRequestError


def error_from_payload(
    http_status: int | None,
    payload: Any,
    *,
    retry_after: float | None = None,
) -> BatchrunError:
    """Build the error for a decoded JSON error body ``{"error": {...}}`` (pure)."""
    error_obj: Mapping[str, Any] = {}
    if isinstance(payload, Mapping):
        raw = payload.get("error")
        if isinstance(raw, Mapping):
            error_obj = raw
        elif isinstance(raw, str):
            error_obj = {"message": raw}
    code = error_obj.get("code")
    code_str = str(code) if code is not None else None
    message = str(error_obj.get("message") or f"HTTP {http_status}")
    error_type = error_obj.get("type")
    cls = error_class_for(http_status, code_str)
    return cls(
        message,
        http_status=http_status,
        code=code_str or None,
        error_type=str(error_type) if error_type else None,
        retry_after=retry_after,
    )


def error_from_response(
    http_status: int, body: bytes, *, retry_after: float | None = None
) -> BatchrunError:
    """Map a non-2xx answer to its error, even when the body is not JSON (a proxy's HTML)."""
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, Mapping) and "error" in payload:
        return error_from_payload(http_status, payload, retry_after=retry_after)
    cls = error_class_for(http_status, None)
    what = describe_body(body)
    # Keep the table's code for statuses it names (401, 402 …); otherwise say what came back.
    code = None if http_status in _BY_STATUS and http_status < 500 else f"http_{http_status}"
    return cls(f"HTTP {http_status} with {what}", http_status=http_status, code=code,
               retry_after=retry_after)


_HTML_START = re.compile(rb"\s*(<!doctype html|<html|<head|<body|<center|<h1)", re.IGNORECASE)
_HTML_TITLE = re.compile(rb"<(title|h1)[^>]*>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def describe_body(body: bytes) -> str:
    """What a body that is not the API's JSON holds, in a few words for an error message.

    An HTML page (a proxy's or a load balancer's error page) is named by its title rather
    than quoted as markup, so the row's error reads "an HTML page: '502 Bad Gateway'".
    """
    if not body.strip():
        return "an empty body"
    if _HTML_START.match(body[:512]):
        title = _HTML_TITLE.search(body[:8192])
        if title:
            text = html.unescape(_TAG.sub("", title.group(2).decode("utf-8", "replace")))
        else:
            text = html.unescape(_TAG.sub(" ", body[:400].decode("utf-8", "replace")))
        text = " ".join(text.split())[:120]
        return f"an HTML page, not JSON (a proxy answered?): {text!r}"
    snippet = body[:200].decode("utf-8", "replace").strip().replace("\n", " ")
    return f"a non-JSON body: {snippet!r}"
