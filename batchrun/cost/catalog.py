"""Price table per model and the seed's billing formula (pure)."""

from __future__ import annotations

from dataclasses import dataclass

# 160 credits = $0.80 (seed), so one credit is half a cent.
USD_PER_CREDIT = 0.005
DEFAULT_MODEL = "gemini-3.1-pro"


@dataclass(frozen=True)
class Price:
    """Credits per million tokens; reasoning tokens are recorded but not billed (seed)."""

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


PRICES: dict[str, Price] = {
    "gemini-3.1-pro": Price(input_credits_per_m=160.0, output_credits_per_m=960.0),
}


def price_for(model: str, overrides: dict[str, Price] | None = None) -> Price:
    """The price of ``model``: job-spec overrides first, then the table, then by prefix.

    The gateway answers with versions such as ``gemini-3.1-pro-preview``; they bill as the base.
    """
    table = {**PRICES, **(overrides or {})}
    if model in table:
        return table[model]
    for name in sorted(table, key=len, reverse=True):
        if model.startswith(name):
            return table[name]
    return table[DEFAULT_MODEL]
