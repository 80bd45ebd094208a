"""What schema retries will cost, from a calibration sample (pure).

A row with a JSON Schema whose answer does not fit is asked again (``schema_retries``), and
every try is paid. The sample says how often that happens (tries asked again per row sent)
and what such a try costs (its prompt carries the answer and the validation error, so it costs
more than a first try); the rows still to send are expected to need as many, at that price.
The figure is an expectation, given without an interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchrun.cost.catalog import Price
from batchrun.cost.estimate import Band, RunEstimate


@dataclass(frozen=True)
class SchemaRetries:
    """The tries a calibration sample asked again because an answer did not fit its schema."""

    rows: int  # sample rows sent (answered or not): the rate's denominator
    tries: int  # tries asked again
    credits: float  # what those tries cost, as billed
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def rate(self) -> float:
        """Tries asked again per row."""
        return self.tries / self.rows if self.rows else 0.0

    @property
    def per_try(self) -> float:
        """Credits of one try asked again."""
        return self.credits / self.tries if self.tries else 0.0

    def projected(self, rows: int, price: Price) -> RunEstimate:
        """The expected retries of ``rows`` rows still to send (no rows of their own: only
        tokens and credits, to add to the run's estimate)."""
        tries = self.rate * rows
        share = tries / self.tries if self.tries else 0.0
        credits = self.per_try * tries
        return RunEstimate(
            prompt_tokens=round(self.prompt_tokens * share),
            output_tokens=Band.exact(self.completion_tokens * share),
            credits=Band.exact(credits),
            usd=Band.exact(price.usd(credits)),
            basis=f"schema retries: {self.rate:.3f} tries a row x {self.per_try:,.4f} credits "
                  "a try (from the sample)",
        )

    def line(self, rows: int, price: Price) -> str:
        """The estimate's extra line (stderr)."""
        if not self.tries:
            return (f"  schema retries: none in the sample ({self.rows:,} rows sent, every "
                    "answer fitted its schema or failed otherwise): none expected")
        expected = self.projected(rows, price).credits.expected
        return (f"  schema retries: {self.tries:,} tries asked again over {self.rows:,} sample "
                f"rows ({self.rate:.3f} a row) x ≈ {self.per_try:,.4f} credits a try = ≈ "
                f"{expected:,.4f} credits (${price.usd(expected):,.4f}) expected for the "
                f"{rows:,} rows still to send (in the total above)")

    def as_dict(self, rows: int, price: Price) -> dict[str, Any]:
        return {"sample_rows": self.rows, "tries": self.tries,
                "rate": round(self.rate, 6), "credits_per_try": round(self.per_try, 6),
                "rows_to_send": rows,
                "expected_credits": round(self.projected(rows, price).credits.expected, 6)}
