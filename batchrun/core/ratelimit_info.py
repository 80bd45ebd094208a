"""What ``x-ratelimit-*`` headers said, as the errors and answers of every layer carry it.

Parsed from the headers by ``api.retry_after``; read by the limiter in ``dispatch``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimitInfo:
    """What ``x-ratelimit-*`` headers said; None where a header was absent or unreadable."""

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    @property
    def known(self) -> bool:
        return any(value is not None for value in (
            self.limit_requests, self.limit_tokens, self.remaining_requests,
            self.remaining_tokens, self.reset_requests_s, self.reset_tokens_s))
