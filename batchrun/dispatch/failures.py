"""What a failed attempt is counted as in the journal (``RowResult.failed_attempts``): its
HTTP status and error code, the way the README's error table names them."""

from __future__ import annotations

from batchrun.core.errors import BatchrunError


def failure_cause(error: BaseException) -> str:
    """``"503 upstream_error"``, ``"429 rate_limit_exceeded"``, ``"transport_error"`` (no
    answer: a timeout, a reset, a cut stream)."""
    if isinstance(error, BatchrunError):
        return f"{error.http_status} {error.code}" if error.http_status else error.code
    return type(error).__name__
