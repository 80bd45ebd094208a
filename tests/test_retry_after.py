"""parse_retry_after and parse_ratelimit_headers: headers in, seconds out."""

from __future__ import annotations

from email.utils import formatdate

import httpx
import pytest

from batchrun.api.retry_after import parse_duration, parse_ratelimit_headers, parse_retry_after
from batchrun.core.ratelimit_info import RateLimitInfo

NOW = 1_776_356_269.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"RETRY-AFTER": " 7 "}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "250", "Retry-After": "9"}, 0.25),  # ms wins
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),  # bad ms falls through
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "120"}, 60.0),  # capped
        ({"retry-after": "1e12"}, None),  # absurd: an epoch timestamp, not a wait
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after": formatdate(NOW + 10, usegmt=True)}, 10.0),
        ({"retry-after": formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"retry-after": formatdate(NOW + 3600, usegmt=True)}, 60.0),
        ({"retry-after": formatdate(NOW + 10 * 86400, usegmt=True)}, None),
        ({"retry-after": "Wed, 99 Foo 2026 99:99:99 GMT"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_cap_is_configurable() -> None:
    assert parse_retry_after({"retry-after": "120"}, cap_s=300) == 120.0
    assert parse_retry_after({"retry-after-ms": "9000"}, cap_s=5) == 5.0


def test_http_date_uses_the_clock_by_default() -> None:
    import time

    wait = parse_retry_after({"retry-after": formatdate(time.time() + 20, usegmt=True)})
    assert wait is not None and 18 <= wait <= 20


def test_works_on_httpx_headers() -> None:
    headers = httpx.Headers({"Retry-After": "5", "X-RateLimit-Remaining-Requests": "3"})
    assert parse_retry_after(headers) == 5.0
    assert parse_ratelimit_headers(headers).remaining_requests == 3


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5),
        ("12", 12.0), ("1.5", 1.5), ("250us", 0.00025), ("7m", 420.0), ("", None),
        ("soon", None), ("5 s", None), ("1s2", None), ("s", None), (None, None),
        ("100000h", None), ("-3", 0.0),
    ],
)
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    result = parse_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds)


def test_parse_ratelimit_headers() -> None:
    info = parse_ratelimit_headers({
        "X-RateLimit-Limit-Requests": "500",
        "x-ratelimit-limit-tokens": "200000",
        "x-ratelimit-remaining-requests": "499",
        "X-Ratelimit-Remaining-Tokens": "199000.0",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-reset-tokens": "6m0s",
    })
    assert info == RateLimitInfo(limit_requests=500, limit_tokens=200000,
                                 remaining_requests=499, remaining_tokens=199000,
                                 reset_requests_s=0.12, reset_tokens_s=360.0)
    assert info.known


def test_parse_ratelimit_headers_absent_or_garbage() -> None:
    assert parse_ratelimit_headers({}) == RateLimitInfo()
    assert not parse_ratelimit_headers({"content-type": "application/json"}).known
    info = parse_ratelimit_headers({"x-ratelimit-remaining-requests": "many",
                                    "x-ratelimit-reset-tokens": "later"})
    assert info.remaining_requests is None and info.reset_tokens_s is None
