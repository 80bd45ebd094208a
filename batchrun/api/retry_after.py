"""Read how long a server asks us to wait: ``Retry-After`` and ``x-ratelimit-*`` headers (pure)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

from batchrun.core.ratelimit_info import RateLimitInfo

# Any of these in an answer means the server publishes its limits (see ``rate_limit_of``).
_RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                 "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens")

# A wait longer than this is not a wait but a misreading (an epoch timestamp, a typo):
# fall back to our own backoff rather than sleep for it.
ABSURD_WAIT_S = 86_400.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_retry_after(
    headers: Mapping[str, str], *, now: float | None = None, cap_s: float = 60.0
) -> float | None:
    """Seconds to wait before retrying, or None when the headers do not say (use backoff).

    ``retry-after-ms`` first, then ``retry-after`` as seconds, then as an HTTP date. A date in
    the past is 0, a long wait is capped at ``cap_s``, garbage or an absurd value is None.
    """
    millis = _number(_header(headers, "retry-after-ms"))
    if millis is not None:
        return _bounded(millis / 1000.0, cap_s)
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return _bounded(seconds, cap_s)
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP dates are GMT
    current = time.time() if now is None else now
    return _bounded(when.timestamp() - current, cap_s)


def parse_ratelimit_headers(headers: Mapping[str, str]) -> RateLimitInfo:
    """The ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers, where present."""
    return RateLimitInfo(
        limit_requests=_count(_header(headers, "x-ratelimit-limit-requests")),
        limit_tokens=_count(_header(headers, "x-ratelimit-limit-tokens")),
        remaining_requests=_count(_header(headers, "x-ratelimit-remaining-requests")),
        remaining_tokens=_count(_header(headers, "x-ratelimit-remaining-tokens")),
        reset_requests_s=parse_duration(_header(headers, "x-ratelimit-reset-requests")),
        reset_tokens_s=parse_duration(_header(headers, "x-ratelimit-reset-tokens")),
    )


def rate_limit_of(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """The ``x-ratelimit-*`` headers of an answer, or None when it has none (the usual case,
    checked cheaply: this runs for every answer)."""
    for name in _RATE_HEADERS:
        if name in headers:
            return parse_ratelimit_headers(headers)
    return None


def parse_duration(text: str | None) -> float | None:
    """``"6m0s"``, ``"1s"``, ``"20ms"``, ``"1h2m3.5s"`` or plain seconds ``"12.5"``; else None."""
    if text is None:
        return None
    text = text.strip()
    plain = _number(text)
    if plain is not None:
        return max(plain, 0.0) if plain <= ABSURD_WAIT_S else None
    if not text:
        return None
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        position = match.end()
    if position != len(text) or position == 0:
        return None
    return total if total <= ABSURD_WAIT_S else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that also works on a plain dict."""
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _bounded(seconds: float, cap_s: float) -> float | None:
    if seconds > ABSURD_WAIT_S:
        return None
    return min(max(seconds, 0.0), cap_s)


def _count(text: str | None) -> int | None:
    value = _number(text)
    if value is None:
        return None
    return max(int(value), 0)
