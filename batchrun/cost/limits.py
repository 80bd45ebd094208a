"""Rows that cannot fit the model: refused before sending, as a row error (pure).

A prompt far beyond the context window is refused by the gateway anyway, after uploading it
(a 100 MB line is 100 MB on the wire, again on every retry if a proxy cuts it). The estimate
is an estimate, so only a clear excess is refused here; a borderline row is sent and the
gateway has the last word.
"""

from __future__ import annotations

from batchrun.core.errors import RowError
from batchrun.cost.catalog import model_facts

# The window is the catalog's (``model_facts(model).context_window``); unknown models: no check.
# Refuse only when the estimate passes the window by this factor: the per-script character
# rule may overestimate a text by a good margin, never by half again.
MARGIN = 1.5


class PromptTooLargeError(RowError):
    """The row's prompt is estimated far beyond the model's context window; not sent."""

    http_status = None
    code = "context_length_exceeded"
    error_type = "invalid_request_error"


def cannot_overflow(model: str, text_body_bytes: int) -> bool:
    """True when a text-only body of this many bytes cannot be refused by ``prompt_too_large``:
    no estimate gives a text more tokens than its UTF-8 bytes, and the JSON body holds them all."""
    window = model_facts(model).context_window
    return window is None or text_body_bytes <= window * MARGIN


def prompt_too_large(model: str, estimated_prompt_tokens: int) -> PromptTooLargeError | None:
    """The error for a prompt that cannot fit ``model``'s context window, else None."""
    window = model_facts(model).context_window
    if window is None or estimated_prompt_tokens <= window * MARGIN:
        return None
    return PromptTooLargeError(
        f"prompt of about {estimated_prompt_tokens:,} tokens is far beyond {model}'s "
        f"{window:,}-token context window; not sent (split the row, or put media in files)"
    )
