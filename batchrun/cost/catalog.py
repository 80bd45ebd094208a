"""The one model catalog: what batchrun knows of a model, and the one rule that finds it (pure).

A model's facts: its price (credits per million tokens, the gateway's billing formula), its
input context window, its output-token limit and how it counts media tokens. Every part of
batchrun that needs one of them asks ``model_facts`` (or a thin view of it: ``price_for``,
``rules_for``), so a model is described in one place.

Lookup, one rule for every fact:
1. the name is normalised: lower case, a path prefix dropped (``models/gemini-3.1-pro`` →
   ``gemini-3.1-pro``);
2. an exact entry of ``CATALOG``;
3. the family rule: the longest entry the name starts with. The gateway answers with versions
   of a model (``gemini-3.1-pro-preview``, ``gemini-3.1-pro-001``); they bill and behave as
   their base;
4. otherwise the model is unknown: it has no price (``price_for`` raises ``UnknownModel``
   unless the job gives one: never a silent guess), the largest known output limit is
   reserved by the budget (a bound must not be too small), no context-window check (we do not
   know it), and media counted by its generation's rules (Gemini 1.x/2.x tile images, 258
   tokens a tile and 32 audio tokens a second; anything else by Gemini 3's rules).

``priced_models`` names every model the catalog prices.

Sources: prices and billing are the gateway's API reference (https://api.aivideoapi.ai);
Gemini's media token counts are Google's media-resolution page
(https://ai.google.dev/gemini-api/docs/media-resolution); context window and output limit are
those of the Gemini 3.1 Pro model page (https://ai.google.dev/gemini-api/docs/models).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

# 160 credits = $0.80 (the gateway's pricing), so one credit is half a cent.
USD_PER_CREDIT = 0.005
DEFAULT_MODEL = "gemini-3.1-pro"

# Gemini 3 at default media resolution (media-resolution page above).
IMAGE_TOKENS = 1120
PDF_PAGE_TOKENS = 560
AUDIO_TOKENS_PER_S = 25
VIDEO_FRAME_TOKENS = 70  # one frame per second, plus the audio track


@dataclass(frozen=True)
class Price:
    """Credits per million tokens; reasoning tokens are recorded but not billed (the gateway's
    billing formula)."""

    input_credits_per_m: float
    output_credits_per_m: float
    usd_per_credit: float = USD_PER_CREDIT

    def credits(self, prompt_tokens: float, completion_tokens: float) -> float:
        """credits = prompt × in/1M + completion × out/1M (reasoning excluded)."""
        return (
            prompt_tokens * self.input_credits_per_m + completion_tokens * self.output_credits_per_m
        ) / 1_000_000

    def usd(self, credits: float) -> float:
        return credits * self.usd_per_credit


@dataclass(frozen=True)
class MediaRules:
    """How one model family counts media tokens."""

    image_tokens: int  # per image, or per tile when ``image_tile_px`` is set
    pdf_page_tokens: int
    audio_tokens_per_s: float
    video_frame_tokens: int  # one frame per second, plus the audio track
    image_tile_px: int | None = None  # Gemini 2.x: 768 px tiles; ≤ half a tile is one unit


GEMINI_3_RULES = MediaRules(IMAGE_TOKENS, PDF_PAGE_TOKENS, AUDIO_TOKENS_PER_S, VIDEO_FRAME_TOKENS)
GEMINI_2_RULES = MediaRules(258, 258, 32, 258, image_tile_px=768)


@dataclass(frozen=True)
class ModelFacts:
    """Everything batchrun knows of one model."""

    name: str  # the catalog entry the facts come from (or the unknown model's own name)
    price: Price
    context_window: int | None  # input tokens; None: unknown, not checked
    output_token_limit: int
    media_rules: MediaRules
    known: bool = True


CATALOG: dict[str, ModelFacts] = {
    "gemini-3.1-pro": ModelFacts(
        name="gemini-3.1-pro",
        price=Price(input_credits_per_m=160.0, output_credits_per_m=960.0),
        context_window=1_000_000,
        output_token_limit=65_536,
        media_rules=GEMINI_3_RULES,
    ),
}
# Step 4 of the lookup: families whose media are counted by the Gemini 2.x rules.
_GEMINI_2_FAMILIES = ("gemini-1", "gemini-2")


def normalise(model: str) -> str:
    """Step 1 of the lookup: lower case, without a path prefix."""
    return model.lower().rsplit("/", 1)[-1]


@functools.lru_cache(maxsize=64)  # a run asks for its one model for every row
def model_facts(model: str) -> ModelFacts:
    """The facts of ``model`` by the lookup rule of the module docstring."""
    name = normalise(model)
    facts = CATALOG.get(name)
    if facts is not None:
        return facts
    for entry in sorted(CATALOG, key=len, reverse=True):
        if name.startswith(entry):
            return CATALOG[entry]
    return ModelFacts(
        name=model,
        price=CATALOG[DEFAULT_MODEL].price,
        context_window=None,
        output_token_limit=max(facts.output_token_limit for facts in CATALOG.values()),
        media_rules=GEMINI_2_RULES if name.startswith(_GEMINI_2_FAMILIES) else GEMINI_3_RULES,
        known=False,
    )


class UnknownModel(ValueError):
    """A model the catalog does not price, and nobody gave a price for."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"model {model!r} has no known price: batchrun's catalog prices "
            f"{', '.join(priced_models())} (and their versions, e.g. -preview); give its price "
            f"in the job file: price = {{input = …, output = …}} (credits per 1M tokens)"
        )


def priced_models() -> tuple[str, ...]:
    """Every model the catalog prices (by name; its versions follow the family rule)."""
    return tuple(sorted(CATALOG))


def is_priced(model: str, overrides: dict[str, Price] | None = None) -> bool:
    """Whether ``price_for(model, overrides)`` has an answer."""
    return bool(overrides and model in overrides) or model_facts(model).known


def price_for(model: str, overrides: dict[str, Price] | None = None) -> Price:
    """The price of ``model``: a job's own price for it (``price`` / ``[job.pricing]``) first,
    then the catalog's; ``UnknownModel`` for a model neither prices."""
    if overrides and model in overrides:
        return overrides[model]
    facts = model_facts(model)
    if not facts.known:
        raise UnknownModel(model)
    return facts.price


def rules_for(model: str) -> MediaRules:
    """How ``model`` counts media tokens."""
    return model_facts(model).media_rules
