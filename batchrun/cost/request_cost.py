"""What a built request may cost: its estimated prompt tokens, the context-window check and the
upper bound of its prompt tokens the budget reserves (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from batchrun.cost.budget import prompt_token_bound
from batchrun.cost.catalog import MediaRules, rules_for
from batchrun.cost.limits import cannot_overflow, prompt_too_large
from batchrun.cost.tokens import RowEstimate, messages_estimate
from batchrun.media.meta import MediaMeta


class RequestCost(NamedTuple):
    """A tuple, not a frozen dataclass: one is made per row, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) costs half as much again."""

    estimate: RowEstimate | None  # None when not asked for (see ``request_cost``'s counts)
    prompt_bound: int  # an upper bound on the prompt's tokens (for the credit budget); 0: none


def request_cost(
    messages: Iterable[Any],
    metas: Mapping[str, MediaMeta],
    *,
    model: str,
    body_bytes: int,
    text_only: bool,
    counts: bool = True,
    rules: MediaRules | None = None,
) -> RequestCost:
    """Estimate a request's prompt and bound it; ``PromptTooLargeError`` (a RowError) when the
    prompt is far beyond ``model``'s context window.

    ``metas``: the media metadata read while building, by the URL (or marker) in the messages.
    ``counts=False``: the caller needs no token estimate nor bound (no --tpm, no budget), so a
    text-only body of ``body_bytes`` too small to overflow the window is not counted at all
    (estimate None, bound 0): at thousands of rows a second the count showed in the profile.
    """
    estimate: RowEstimate | None = None
    if counts or not text_only or not cannot_overflow(model, body_bytes):
        rules = rules if rules is not None else rules_for(model)
        estimate = messages_estimate(messages, metas, rules)
        # The model's window first: no request size could make such a prompt succeed.
        too_large = prompt_too_large(model, estimate.prompt_tokens)
        if too_large is not None:
            raise too_large
    bound = 0
    if counts:
        rules = rules if rules is not None else rules_for(model)
        bound = prompt_token_bound(messages, metas, rules)
    return RequestCost(estimate, bound)
