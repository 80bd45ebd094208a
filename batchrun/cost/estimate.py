"""A run's estimate: rows, prompt tokens and the output band, priced into credits and USD
(pure). One pass over the rows gathers a ``Tally`` (token counts per row come from ``tokens``);
``assumed_estimate`` prices it with the job's expected output, ``calibrate`` with a sample's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchrun.cost.catalog import Price
from batchrun.cost.tokens import RowEstimate

# Output band around the job's expected_output_tokens when nothing was calibrated.
OUTPUT_LOW_FACTOR = 0.5
OUTPUT_HIGH_FACTOR = 2.0

KINDS = ("text", "image", "pdf", "audio", "video")
UNSENDABLE_LISTED = 100  # rows listed by name; all are counted






























@dataclass
class Band:
    """A low / expected / high triple (a total over rows, not one row)."""

    low: float = 0.0
    expected: float = 0.0
    high: float = 0.0

    def as_dict(self, digits: int | None = None) -> dict[str, float]:
        values = {"low": self.low, "expected": self.expected, "high": self.high}
        if digits is None:
            return values
        return {k: round(v, digits) for k, v in values.items()}

    def plus(self, other: Band) -> Band:
        return Band(self.low + other.low, self.expected + other.expected, self.high + other.high)

    def map(self, convert: Callable[[float], float]) -> Band:
        """The same band in other units (credits → USD)."""
        return Band(convert(self.low), convert(self.expected), convert(self.high))

    @classmethod
    def exact(cls, value: float) -> Band:
        return cls(value, value, value)


@dataclass
class KindTally:
    rows: int = 0
    prompt_tokens: int = 0


@dataclass(frozen=True)
class Unsendable:
    """A manifest row that cannot be sent as written, and why."""

    id: str
    line: int
    reason: str


@dataclass
class Tally:
    """What one pass over the rows gathers: rows and estimated prompt tokens by kind, and the
    rows that cannot be sent. No prices and no output assumption yet: those come after."""

    by_kind: dict[str, KindTally] = field(default_factory=dict)
    rows_unsendable: int = 0
    unsendable: list[Unsendable] = field(default_factory=list)
    max_listed: int = UNSENDABLE_LISTED

    def add(self, estimate: RowEstimate) -> None:
        totals = self.by_kind.get(estimate.kind)
        if totals is None:
            totals = self.by_kind[estimate.kind] = KindTally()
        totals.rows += 1
        totals.prompt_tokens += estimate.prompt_tokens

    def add_rows(self, kind: str, rows: int, prompt_tokens: int) -> None:
        """Many rows of one kind at once (their tokens summed)."""
        totals = self.by_kind.get(kind)
        if totals is None:
            totals = self.by_kind[kind] = KindTally()
        totals.rows += rows
        totals.prompt_tokens += prompt_tokens

    def add_unsendable(self, row_id: str, line: int, reason: str) -> None:
        self.rows_unsendable += 1
        if len(self.unsendable) < self.max_listed:
            self.unsendable.append(Unsendable(row_id, line, reason))

    def minus(self, other: Tally) -> Tally:
        """This tally without the sendable rows of ``other`` (e.g. a sample already sent)."""
        left = Tally(rows_unsendable=self.rows_unsendable, unsendable=list(self.unsendable))
        for kind, totals in self.by_kind.items():
            taken = other.by_kind.get(kind, KindTally())
            left.by_kind[kind] = KindTally(
                max(0, totals.rows - taken.rows), max(0, totals.prompt_tokens - taken.prompt_tokens)
            )
        return left

    @property
    def rows_sendable(self) -> int:
        return sum(totals.rows for totals in self.by_kind.values())

    @property
    def rows(self) -> int:
        return self.rows_sendable + self.rows_unsendable

    @property
    def prompt_tokens(self) -> int:
        return sum(totals.prompt_tokens for totals in self.by_kind.values())


@dataclass
class KindEstimate:
    rows: int = 0
    prompt_tokens: int = 0
    output_tokens: float = 0.0  # expected
    credits: float = 0.0  # expected


@dataclass
class RunEstimate:
    """Totals over a manifest: what ``estimate --json`` prints (the README's Commands section
    lists its keys)."""

    rows: int = 0
    rows_unsendable: int = 0
    unsendable: list[Unsendable] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: Band = field(default_factory=Band)
    credits: Band = field(default_factory=Band)
    usd: Band = field(default_factory=Band)
    by_kind: dict[str, KindEstimate] = field(default_factory=dict)
    basis: str = ""  # how output (and prompt) tokens were arrived at

    @property
    def rows_sendable(self) -> int:
        return self.rows - self.rows_unsendable

    def plus(self, other: RunEstimate) -> RunEstimate:
        """The sum of two disjoint parts of a run (e.g. rows already paid + rows to send)."""
        by_kind: dict[str, KindEstimate] = {}
        for part in (self.by_kind, other.by_kind):
            for kind, totals in part.items():
                into = by_kind.setdefault(kind, KindEstimate())
                into.rows += totals.rows
                into.prompt_tokens += totals.prompt_tokens
                into.output_tokens += totals.output_tokens
                into.credits += totals.credits
        return RunEstimate(
            rows=self.rows + other.rows,
            rows_unsendable=self.rows_unsendable + other.rows_unsendable,
            unsendable=(self.unsendable + other.unsendable)[:UNSENDABLE_LISTED],
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            output_tokens=self.output_tokens.plus(other.output_tokens),
            credits=self.credits.plus(other.credits),
            usd=self.usd.plus(other.usd),
            by_kind=by_kind,
            basis="; ".join(part for part in (self.basis, other.basis) if part),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "rows_unsendable": self.rows_unsendable,
            "unsendable": [
                {"id": row.id, "line": row.line, "reason": row.reason} for row in self.unsendable
            ],
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": {k: round(v) for k, v in self.output_tokens.as_dict().items()},
            "credits": self.credits.as_dict(6),
            "usd": self.usd.as_dict(6),
            "by_kind": {
                kind: {
                    "rows": totals.rows,
                    "tokens": totals.prompt_tokens,
                    "output_tokens": round(totals.output_tokens),
                    "credits": round(totals.credits, 6),
                }
                for kind in KINDS
                for totals in (self.by_kind.get(kind, KindEstimate()),)
            },
            "basis": self.basis,
            "note": "estimates: exact token counts exist only after each call",
        }


def assumed_estimate(tally: Tally, expected_output: int, price: Price) -> RunEstimate:
    """The uncalibrated estimate: every sendable row answers ``expected_output`` tokens, within
    a band of ×OUTPUT_LOW_FACTOR to ×OUTPUT_HIGH_FACTOR; prompt tokens as estimated."""
    rows = tally.rows_sendable
    prompt = tally.prompt_tokens
    output = Band(
        rows * expected_output * OUTPUT_LOW_FACTOR,
        float(rows * expected_output),
        rows * expected_output * OUTPUT_HIGH_FACTOR,
    )
    credits = Band(
        price.credits(prompt, output.low),
        price.credits(prompt, output.expected),
        price.credits(prompt, output.high),
    )
    by_kind = {
        kind: KindEstimate(
            rows=totals.rows,
            prompt_tokens=totals.prompt_tokens,
            output_tokens=float(totals.rows * expected_output),
            credits=price.credits(totals.prompt_tokens, totals.rows * expected_output),
        )
        for kind, totals in tally.by_kind.items()
    }
    return RunEstimate(
        rows=tally.rows,
        rows_unsendable=tally.rows_unsendable,
        unsendable=list(tally.unsendable),
        prompt_tokens=prompt,
        output_tokens=output,
        credits=credits,
        usd=credits.map(price.usd),
        by_kind=by_kind,
        basis=(
            f"assumed output: {expected_output:,} tokens per row (expected_output_tokens), "
            f"band x{OUTPUT_LOW_FACTOR:g} to x{OUTPUT_HIGH_FACTOR:g}"
        ),
    )




def estimate_lines(
    estimate: RunEstimate, *, rows_total: int | None = None, label: str = "rows to send"
) -> list[str]:
    """The estimate for people (stderr): rows, tokens, credits and USD bands, kinds, and the
    rows that cannot be sent with their reasons."""
    total = estimate.rows if rows_total is None else rows_total
    output, credits, usd = estimate.output_tokens, estimate.credits, estimate.usd
    lines = [
        f"  {label} {estimate.rows_sendable:,} of {total:,} · unsendable "
        f"{estimate.rows_unsendable:,}",
        f"  prompt tokens ≈ {estimate.prompt_tokens:,} · output tokens ≈ "
        f"{round(output.expected):,} ({round(output.low):,}–{round(output.high):,})",
        f"  credits ≈ {credits.expected:,.4f} ({credits.low:,.4f}–{credits.high:,.4f}) · "
        f"USD ≈ ${usd.expected:,.4f} (${usd.low:,.4f}–${usd.high:,.4f})",
    ]
    kinds = [
        f"{kind} {totals.rows:,} rows / {totals.prompt_tokens:,} tok / {totals.credits:,.4f} cr"
        for kind in KINDS
        if (totals := estimate.by_kind.get(kind)) is not None and totals.rows
    ]
    if len(kinds) > 1:
        lines.append("  by kind: " + " · ".join(kinds))
    shown = 0
    for places, reason in _by_reason(estimate.unsendable)[:10]:
        shown += len(places)
        if len(places) == 1:
            lines.append(f"  unsendable: {places[0]}: {reason}")
        else:  # one line for rows that fail alike, not the same reason ten times
            where = ", ".join(places[:3]) + (", …" if len(places) > 3 else "")
            lines.append(f"  unsendable ×{len(places):,} ({where}): {reason}")
    if estimate.rows_unsendable > shown:
        lines.append(
            f"  … and {estimate.rows_unsendable - shown:,} more unsendable rows "
            f"(--json lists the first {UNSENDABLE_LISTED})"
        )
    if estimate.basis:
        lines.append(f"  basis: {estimate.basis}")
    lines.append("  (an estimate: exact token counts exist only after each call)")
    return lines


_PLACE = re.compile(r"(?:line|row) \d+(?=: )")


def _by_reason(rows: list[Unsendable]) -> list[tuple[list[str], str]]:
    """(places, reason) of the listed unsendable rows, rows with the same reason together, in
    the order first met. A reason that starts with its place ("line 7: …") is cut there."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        match = _PLACE.match(row.reason)
        place, reason = ((match.group(0), row.reason[match.end() + 2:]) if match
                         else (row.id, row.reason.removeprefix(f"{row.id}: ")))
        groups.setdefault(reason, []).append(place)
    return [(places, reason) for reason, places in groups.items()]
