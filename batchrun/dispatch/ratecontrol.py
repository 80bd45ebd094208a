"""The request rate to keep to, decided from the answers: tells "you are too fast" from
"the server is full" (pure: every clock value is handed in).

A shared gateway refuses a share of requests with 429 whatever our own rate is: its upstream,
or other tenants, are busy. Slowing down does not lower such refusals, it only wastes the
capacity we were given; only refusals that our rate causes call for a cut. So a 429 is evidence
to weigh, not an order:

- Answers and refusals are counted in **epochs** of at least ``epoch_s`` and ``min_outcomes``
  answers (at most ``epoch_max_s``). At each epoch's end the refused share is compared with the
  **background share**, the share of refusals learnt not to be ours: the epoch shows
  **overload** when its share is above the background by more than ``margin`` and three
  standard deviations of a binomial draw of that size (so noise does not count as evidence).
  A flood (at least ``flood_refusals`` refused, most of what came back) decides at once.
- On overload the rate is **cut** to ``decrease`` × the rate the server accepted over that
  epoch (sent less refused: never a stretch a pause of ours emptied, as the epoch restarts at
  every decision), and a **trial** epoch starts once the pause is over and the answers to
  requests sent before the cut are back (``settle_s``).
- The trial judges the cut: if the refused share fell (by half, or to the background), the
  refusals were ours and the cut stays; if it did not fall, they were not ours: the cut is
  **undone** (the rate goes back to what it was) and the background share is raised to what
  was measured, so refusals at that share no longer count as overload. Refusals gone
  altogether in an epoch of ``min_outcomes`` answers (no background learnt) keep the cut at
  once: at a low rate the shares' test would wait out several epochs, and the climb with it.
- A quiet epoch with fewer refusals than the background share lowers it (an average), so it
  follows a gateway that gets calmer; it rises only by a trial (a gateway that gets busier
  shows overload, and the trial that follows proves the refusals are not ours).
- While workers wait on the rate it **climbs back**: within ``recover_s`` to 95% of the limit
  last measured, then by ``probe_per_s`` of the rate a second (the limit is likely still
  there), and once ``beyond`` that limit without overload (it moved up) by a probe that
  doubles every ``probe_double_s``, so a raised limit is found in seconds, not hours; never
  above ``--rpm`` or a limit the server announced. A cut decided on a flood (refusals within
  instants, too few to measure the server by) is a floor, not a limit: from it the rate
  doubles each second until refusals show where the limit is (TCP's slow start).
- A limit the server announces (``x-ratelimit-limit-requests``) is kept to at once, up or down
  (at 99% of it when it is below ``--rpm``).

In figures (``bench/real_conditions.py``, README "Rate limits and 429s"): 1% to 10% of
background 429s cost about their own share of throughput and no more; a token bucket the
client is not told of is found, and a limit that moves is followed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

# Share of an announced limit we keep to when it is below --rpm.
ANNOUNCED_SHARE = 0.99

REASON_UNLIMITED = "no limit"
REASON_CONFIGURED = "--rpm"
REASON_ANNOUNCED = "limit announced by the server"
REASON_CUT = "cut after overload"
REASON_CLIMB = "climbing back after a cut"

STEADY = "steady"
TRIAL = "trial"

# What one epoch's end decided (``RateController.decision``).
CUT = "cut"
UNDONE = "undone"
KEPT = "kept"


@dataclass
class Epoch:
    """Counts since the last decision; outcomes before ``starts_at`` are not counted."""

    starts_at: float
    sent: int = 0
    ok: int = 0
    refused: int = 0

    @property
    def outcomes(self) -> int:
        """Answers and refusals, or what was sent when more: a 429 comes back at once, an
        answer a latency later, so right after a decision refusals alone are no share."""
        return max(self.ok + self.refused, self.sent)

    @property
    def share(self) -> float:
        return self.refused / self.outcomes if self.outcomes else 0.0


@dataclass
class RateController:
    """The request rate to keep to (requests/min, None: no limit) and why."""

    configured: float | None  # --rpm: never exceeded
    decrease: float = 0.8
    recover_s: float = 10.0
    probe_per_s: float = 0.01
    probe_double_s: float = 2.0
    beyond: float = 1.05  # past this many times the limit last measured, the limit moved up
    min_rpm: float = 1.0
    epoch_s: float = 1.0
    epoch_max_s: float = 5.0
    min_outcomes: int = 20
    margin: float = 0.02
    flood_refusals: int = 10
    settle_s: float = 0.5
    background_weight: float = 0.3  # how far a quiet epoch moves the background share
    # Refused shares from here up are overload whatever a trial says: a gateway refusing
    # this much at any rate is not helped by our sending more.
    max_background: float = 0.3
    max_trial_epochs: int = 3  # a trial that stays unclear this long keeps the cut
    server_limit: float | None = None
    rate: float | None = field(default=None, init=False)
    reason: str = field(default=REASON_UNLIMITED, init=False)
    background: float = field(default=0.0, init=False)
    state: str = field(default=STEADY, init=False)
    epoch: Epoch = field(default_factory=lambda: Epoch(0.0), init=False)
    estimate: float | None = field(default=None, init=False)  # the limit last measured
    cuts: int = field(default=0, init=False)
    undone: int = field(default=0, init=False)
    decision: str | None = field(default=None, init=False)  # the last epoch's verdict
    _before_cut: float | None = field(default=None, init=False)
    _reason_before_cut: str = field(default=REASON_UNLIMITED, init=False)
    _at_cut: Epoch = field(default_factory=lambda: Epoch(0.0), init=False)
    _trial: Epoch = field(default_factory=lambda: Epoch(0.0), init=False)  # earlier epochs
    _recent: deque[Epoch] = field(default_factory=lambda: deque(maxlen=2), init=False)
    _trial_epochs: int = field(default=0, init=False)
    _fast_step_per_s: float = field(default=0.0, init=False)
    _probing_s: float = field(default=0.0, init=False)
    _rough_estimate: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.rate = self.configured
        self.reason = REASON_CONFIGURED if self.configured is not None else REASON_UNLIMITED

    # --- limits -------------------------------------------------------------------------
    @property
    def ceiling(self) -> float | None:
        """--rpm, or a hair under the announced limit when that is lower: the server's
        bucket, drained by what we sent before we knew, fills again and absorbs jitter."""
        if self.server_limit is None:
            return self.configured
        if self.configured is not None and self.configured <= self.server_limit:
            return self.configured
        return self.server_limit * ANNOUNCED_SHARE

    def announce(self, limit_rpm: float, now: float) -> bool:
        """The server said its limit; keep to it at once. True when the rate changed."""
        if limit_rpm <= 0 or limit_rpm == self.server_limit:
            return False
        self.server_limit = limit_rpm
        ceiling = self.ceiling
        assert ceiling is not None
        changed = self.rate != ceiling
        self.rate = ceiling
        self.reason = REASON_ANNOUNCED if ceiling != self.configured else REASON_CONFIGURED
        # Answers from before the change say nothing about the rate now.
        self.state = STEADY
        self.epoch = Epoch(now)
        return changed

    # --- evidence -----------------------------------------------------------------------
    def sent(self, now: float) -> None:
        if now >= self.epoch.starts_at:
            self.epoch.sent += 1

    def answered(self, now: float) -> bool:
        """A request was served; True when the rate changed."""
        if now < self.epoch.starts_at:
            return False
        self.epoch.ok += 1
        return self._maybe_decide(now)

    def refused(self, now: float) -> bool:
        """A 429 about the rate came back; True when the rate changed."""
        epoch = self.epoch
        if now < epoch.starts_at:
            return False
        epoch.refused += 1
        if epoch.refused > epoch.outcomes * self.background + 1:
            # More refused than the background explains: probe gently from here.
            self._probing_s = 0.0
            self._rough_estimate = False
        return self._maybe_decide(now)

    def overloaded(self, epoch: Epoch, extra_margin: float = 0.0) -> bool:
        """Does ``epoch`` show more refusals than the background explains? (A flood, judged
        on a few instants, must clear ``extra_margin`` more: a cluster of background
        refusals right after a decision is not one.)"""
        outcomes = epoch.outcomes
        if epoch.refused < 3 or outcomes == 0:
            return False
        base = self.background
        # Refusals beyond what the background explains, against three standard deviations
        # of a binomial draw of this size (a floor of 1% keeps a quiet start from twitching).
        excess = epoch.refused - outcomes * base
        spread = math.sqrt(outcomes * max(base, 0.01) * (1.0 - base))
        return excess > (self.margin + extra_margin) * outcomes + 3.0 * spread

    @staticmethod
    def fell(before: Epoch, after: Epoch) -> bool:
        """Did the refused share fall from ``before`` to ``after`` by at least half, beyond
        two standard deviations of the difference of two binomial shares? (Swapped: did it
        rise by as much.)"""
        if after.outcomes == 0:
            return True  # nothing came back to judge by: keep the cut, the safe side
        drop = before.share - after.share
        pooled = (before.refused + after.refused) / (before.outcomes + after.outcomes)
        spread = math.sqrt(pooled * (1.0 - pooled)
                           * (1.0 / max(1, before.outcomes) + 1.0 / after.outcomes))
        return after.share <= 0.5 * before.share and drop > 2.0 * spread

    def _vanished(self, before: Epoch, latest: Epoch) -> bool:
        """Refusals gone altogether in the trial's latest epoch (of ``min_outcomes`` answers at
        least) after a cut that showed some, with no background share learnt: they were ours.
        At a low rate the shares' test needs more answers than the trial's epochs bring (5 a
        second at 300/min), and the climb back waits on the trial."""
        return (self.background == 0.0 and before.refused >= 3 and latest.refused == 0
                and latest.outcomes >= self.min_outcomes)

    def _maybe_decide(self, now: float) -> bool:
        epoch = self.epoch
        elapsed = now - epoch.starts_at
        flood = epoch.refused >= self.flood_refusals and epoch.refused * 2 > epoch.outcomes \
            and self.overloaded(epoch, extra_margin=0.25)
        # A trial compares two shares: it needs more answers than spotting a flood does.
        wanted = self.min_outcomes * (2 if self.state == TRIAL else 1)
        if not flood and elapsed < self.epoch_max_s and (
                elapsed < self.epoch_s or epoch.outcomes < wanted):
            return False
        return self._decide(now, elapsed)

    def _decide(self, now: float, elapsed: float) -> bool:
        epoch = self.epoch
        overloaded = self.overloaded(epoch)
        self.epoch = Epoch(now)
        if self.state == TRIAL:
            return self._judge_trial(now, epoch, elapsed)
        if not overloaded:
            self.decision = None
            self._recent.append(epoch)
            if epoch.share < self.background:
                # Calmer than learnt: let the background share fall. It rises only when a
                # trial proves refusals were not ours (a probe above a limit must not teach
                # that its refusals are background).
                self.background += self.background_weight * (epoch.share - self.background)
            return False
        return self._cut(now, epoch, elapsed)

    def _judge_trial(self, now: float, epoch: Epoch, elapsed: float) -> bool:
        """Did the cut lower the refused share? Keep it, undo it, or watch one more epoch."""
        trial = _sum(epoch, self._trial)
        before = self._at_cut
        if self.fell(before, trial) or self._vanished(before, epoch):
            self.state, self.decision = STEADY, KEPT  # the refusals were ours
            return False
        if trial.share >= self.max_background or self.fell(trial, before):
            # Still refused wholesale, or more than before, at the lower rate: the cut was
            # not deep enough (its measure held the server's burst), not a sign that the
            # refusals are not ours.
            return self._cut(now, epoch, elapsed)
        if trial.share >= 0.7 * before.share:
            # The same share with less sent: not ours. Undo, and learn the share.
            self.state, self.decision = STEADY, UNDONE
            self.undone += 1
            self.background = max(self.background, min(trial.share, before.share))
            changed = self.rate != self._before_cut
            self.rate, self.reason = self._before_cut, self._reason_before_cut
            return changed
        if self._trial_epochs < self.max_trial_epochs:
            self._trial, self._trial_epochs = trial, self._trial_epochs + 1
            self.decision = None  # it fell some, not clearly: one more epoch at this rate
            return False
        self.state, self.decision = STEADY, KEPT  # still unclear: the safe side
        return False

    def _cut(self, now: float, epoch: Epoch, elapsed: float) -> bool:
        # A flood decides within instants: over less than half a second, a server's
        # burst would pass for its rate.
        accepted = max(0, epoch.sent - epoch.refused) * 60.0 / max(0.5, elapsed)
        measures = [x for x in (self.rate, accepted) if x is not None and x > 0]
        if not measures:
            return False  # nothing sent that we could measure
        self._before_cut, self._reason_before_cut = self.rate, self.reason
        # The share before the cut, over the last few epochs: the one that showed overload
        # alone was picked for its high share, and would make any trial look like a fall.
        self._at_cut = _sum(epoch, *self._recent)
        self._recent.clear()
        self.estimate = min(measures)
        # A flood's measure spans instants: a floor, not the limit; no gentle probe near it.
        self._rough_estimate = elapsed < self.epoch_s
        self.rate = max(self.min_rpm, self.estimate * self.decrease)
        self.reason = REASON_CUT
        self._fast_step_per_s = max(0.0, 0.95 * self.estimate - self.rate) / self.recover_s
        self._probing_s = 0.0
        self.cuts += 1
        self.decision = CUT
        self.state = TRIAL
        self.epoch = Epoch(now + self.settle_s)
        self._trial, self._trial_epochs = Epoch(now), 1
        return True

    def pause_over(self, until: float) -> None:
        """A pause of all dispatch ends at ``until``: the trial starts after it."""
        if self.state == TRIAL:
            self.epoch.starts_at = max(self.epoch.starts_at, until + self.settle_s)

    # --- climbing back ------------------------------------------------------------------
    def grow(self, seconds: float) -> bool:
        """Workers waited on the rate for ``seconds``: climb back; True when it changed."""
        if self.rate is None or seconds <= 0 or self.cuts == 0 or self.state == TRIAL:
            return False
        ceiling = self.ceiling
        if ceiling is not None and self.rate >= ceiling:
            return False
        estimate = self.estimate if self.estimate is not None else 0.0
        if self._rough_estimate:
            # Cut on a flood's rough measure: double each second until refusals say where
            # the limit is (TCP's slow start), rather than creep up from a guess.
            grown = self.rate * 2.0 ** seconds
        elif self.rate < 0.95 * estimate and self._fast_step_per_s > 0:
            grown = min(0.95 * estimate, self.rate + self._fast_step_per_s * seconds)
        elif self.rate < self.beyond * estimate:
            # Near the limit last measured: probe gently, it is likely still there.
            grown = self.rate * (1.0 + self.probe_per_s * seconds)
        else:
            # Well past it without overload: the limit moved up. Probe faster and faster.
            self._probing_s += seconds
            step = self.probe_per_s * 2.0 ** (self._probing_s / self.probe_double_s)
            grown = self.rate * (1.0 + step * seconds)
        self.rate = min(grown, ceiling) if ceiling is not None else grown
        self.reason = REASON_CLIMB
        if ceiling is not None and self.rate >= ceiling:
            self.reason = REASON_CONFIGURED if ceiling == self.configured else REASON_ANNOUNCED
        return True

    def describe(self) -> str:
        """The rate and why, for the progress display."""
        shown = "unlimited" if self.rate is None else f"{self.rate:,.0f}/min"
        note = self.reason
        if self.background >= 0.005:
            note += f"; {self.background:.0%} of requests refused regardless of rate"
        return f"{shown} ({note})"


def _sum(first: Epoch, *others: Epoch) -> Epoch:
    """The counts of several epochs as one, starting with ``first``."""
    return Epoch(first.starts_at, first.sent + sum(e.sent for e in others),
                 first.ok + sum(e.ok for e in others),
                 first.refused + sum(e.refused for e in others))
