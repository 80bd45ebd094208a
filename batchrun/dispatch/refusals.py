"""What 429s say about the rate, as numbers: counts over a stretch of time, the share of
refusals that is background, and the tests that weigh one against the other (pure: every
clock value is handed in). ``ratecontrol`` decides with them."""

from __future__ import annotations

import math
from collections.abc import Reversible
from dataclasses import dataclass

# A share of 0 would make a single refusal infinitely telling.
SHARE_FLOOR = 0.002


@dataclass
class Epoch:
    """Counts since the last decision; outcomes before ``starts_at`` are not counted."""

    starts_at: float
    sent: int = 0
    ok: int = 0
    refused: int = 0
    # (time, taken so far) at the first and the last refusal, "taken" being sent less
    # refused: between two refusals of its own a token bucket is empty at both ends, so
    # what it took in between is its rate, whatever burst it held before.
    first_refusal: tuple[float, int] | None = None
    last_refusal: tuple[float, int] | None = None

    @property
    def outcomes(self) -> int:
        """Answers and refusals, or what was sent when more: a 429 comes back at once, an
        answer a latency later, so right after a decision refusals alone are no share."""
        return max(self.ok + self.refused, self.sent)

    @property
    def share(self) -> float:
        return self.refused / self.outcomes if self.outcomes else 0.0

    def note_refusal(self, now: float) -> None:
        """Count one refusal come back at ``now``."""
        self.refused += 1
        taken = self.sent - self.refused
        if self.first_refusal is None:
            self.first_refusal = (now, taken)
        self.last_refusal = (now, taken)

    def drained_rate(self, min_span_s: float = 0.3, min_taken: int = 4) -> float | None:
        """Requests/min the server took between the first and the last refusal, when they
        are far enough apart to measure by (None otherwise)."""
        if self.first_refusal is None or self.last_refusal is None:
            return None
        span = self.last_refusal[0] - self.first_refusal[0]
        taken = self.last_refusal[1] - self.first_refusal[1]
        if span < min_span_s or taken < min_taken:
            return None
        return taken * 60.0 / span


def taken_over(stretches: Reversible[tuple[float, int]], window_s: float) -> float:
    """Requests/min taken over the last ``window_s`` seconds of ``stretches`` ((seconds,
    taken), oldest first): long enough that a bucket's burst cannot pass for its rate.
    0 when they span less."""
    seconds, taken = 0.0, 0
    for elapsed, count in reversed(stretches):
        seconds, taken = seconds + elapsed, taken + count
        if seconds >= window_s:
            return taken * 60.0 / seconds
    return 0.0


def sum_epochs(first: Epoch, *others: Epoch) -> Epoch:
    """The counts of several epochs as one, starting with ``first``."""
    return Epoch(first.starts_at, first.sent + sum(e.sent for e in others),
                 first.ok + sum(e.ok for e in others),
                 first.refused + sum(e.refused for e in others))


@dataclass
class Background:
    """The share of requests refused whatever our rate, pooled over the last ``window``
    answers. It rises only by a trial (``prove``): pooling alone never takes it above what
    a trial showed, or a limit crept over slowly would pass for background."""

    window: float = 1000.0
    refused: float = 0.0
    outcomes: float = 0.0
    proven: float = 0.0  # the most a trial showed it can be
    seen_at_rpm: float = 0.0  # the highest rate it was seen at

    @property
    def share(self) -> float:
        return min(self.refused / self.outcomes, self.proven) if self.outcomes else 0.0

    def pool(self, epoch: Epoch, rpm: float | None = None) -> None:
        """Add ``epoch``'s counts (sent at ``rpm``) to the measure."""
        self.refused += epoch.refused
        self.outcomes += epoch.outcomes
        if self.outcomes > self.window:
            keep = self.window / self.outcomes
            self.refused *= keep
            self.outcomes *= keep
        self.refused = min(self.refused, self.proven * self.outcomes)
        if rpm is not None:
            self.seen_at_rpm = max(self.seen_at_rpm, rpm)

    def prove(self, trial: Epoch, rpm: float | None, cap: float) -> None:
        """A trial showed refusals at ``trial``'s share whatever the rate: allow the share
        up to two standard deviations above it (never above ``cap``), and pool it."""
        spread = math.sqrt(trial.share * (1.0 - trial.share) / max(1, trial.outcomes))
        self.proven = min(cap, max(self.proven, trial.share + 2.0 * spread))
        self.pool(trial, rpm)


def overloaded(epoch: Epoch, background: Background, margin: float,
               extra_margin: float = 0.0) -> bool:
    """Does ``epoch`` show more refusals than the background explains, by more than
    ``margin`` (+ ``extra_margin``) of its outcomes and three standard deviations of a
    binomial draw of its size? (A floor of 1% keeps a quiet start from twitching; the
    background's own measuring error, over its pooled answers, widens the spread.)"""
    outcomes = epoch.outcomes
    if epoch.refused < 3 or outcomes == 0:
        return False
    base = background.share
    excess = epoch.refused - outcomes * base
    known = max(background.outcomes, float(outcomes))
    spread = math.sqrt(outcomes * max(base, 0.01) * (1.0 - base) * (1.0 + outcomes / known))
    return excess > (margin + extra_margin) * outcomes + 3.0 * spread


def refused_beyond(epoch: Epoch, background: Background, at_least: int = 2) -> bool:
    """A looser test than ``overloaded``: ``at_least`` refusals and two standard deviations
    above the background. For a probe above a known limit, where a false alarm only sends
    the rate back under that limit and each refusal waited for is one more paid."""
    if epoch.refused < at_least:
        return False  # every answer while probing asks: the usual one stops here
    share = background.share
    spread = math.sqrt(epoch.outcomes * max(share, 0.01))
    return epoch.refused > epoch.outcomes * share + 2.0 * spread


def rose(before: Epoch, after: Epoch) -> bool:
    """Did the refused share at least double from ``before`` to ``after``, beyond two
    standard deviations of the difference of two binomial shares?"""
    if after.outcomes == 0 or before.outcomes == 0:
        return False
    pooled = (before.refused + after.refused) / (before.outcomes + after.outcomes)
    spread = math.sqrt(pooled * (1.0 - pooled) * (1.0 / before.outcomes + 1.0 / after.outcomes))
    return before.share <= 0.5 * after.share and after.share - before.share > 2.0 * spread


def same_share_evidence(before: Epoch, trial: Epoch, background: float) -> float:
    """How much likelier it is that ``trial`` refused the same share as ``before`` (the
    refusals are not ours) than the ``background`` share (they were): a generalised
    log-likelihood ratio; above 0 the share stayed when we sent less."""
    same = _clamp(sum_epochs(before, trial).share)
    return (_log_likelihood(before, same) + _log_likelihood(trial, same)
            - _log_likelihood(before, _clamp(before.share))
            - _log_likelihood(trial, _clamp(background)))


def _clamp(share: float) -> float:
    return min(max(share, SHARE_FLOOR), 1.0 - SHARE_FLOOR)


def _log_likelihood(epoch: Epoch, share: float) -> float:
    """Log-likelihood of ``epoch``'s refusals at ``share`` (binomial, without its constant)."""
    return (epoch.refused * math.log(share)
            + (epoch.outcomes - epoch.refused) * math.log(1.0 - share))
