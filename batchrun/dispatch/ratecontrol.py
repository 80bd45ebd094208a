"""The request rate to keep to, decided from the answers: tells "you are too fast" from
"the server is full", and finds a limit nobody announced (pure: clock values are handed in;
the statistics are in ``refusals``). A shared gateway refuses a share of requests whatever our
rate (its upstream or other tenants are busy): slowing down does not lower such refusals, it
wastes the capacity we have. So a 429 is evidence to weigh, not an order:

- Answers and refusals are counted in **epochs** of at least ``epoch_s`` and ``min_outcomes``
  answers (at most ``epoch_max_s``). An epoch shows **overload** when its refused share is above
  the **background share** (the refusals learnt not to be ours) by more than ``margin`` and
  three standard deviations (of a binomial draw that size, and of the background's own
  measure); so do the last three epochs together, which catches a share that stays above it.
  A flood (``flood_refusals`` refused, most of what came back) decides at once.
- On overload the rate is **cut** to ``under`` × what the server took between the epoch's first
  and last refusal (a token bucket is empty at both, so its burst does not count), or when they
  came too close together, ``decrease`` × what it took over the epoch. A **trial** starts once
  the answers to requests sent before the cut are back (``settle_s``).
- The trial weighs the refusals at the lower rate (a likelihood ratio, up to
  ``max_trial_epochs`` epochs or ``max_trial_s``, sooner at ``evidence_needed``): fell to the
  background, they were ours and the cut is **kept**; the same share as before, they may be
  background or a limit the cut did not get under, so it **cuts once more** (when no
  background is known yet); the same share again: both cuts are **undone**, the share learnt.
- The background share is pooled over the last ``Background.window`` answers, up and down,
  while we send at a rate it was seen at; it never rises above what a trial showed (a limit
  crept over slowly must not pass for background); it is forgotten if overload shows within
  ``undo_doubt_s`` of the undo that taught it (a limit that moved during the trial).
- While workers wait on the rate it **climbs back**: within ``recover_s`` to 95% of the limit
  measured, then ``probe_per_s`` of the rate a second; past it (``beyond``) it **probes** by a
  step from ``probe_from`` a second, doubling every ``probe_double_s`` (at most
  ``max_probe_step``). Two refusals above the background end a probe without a trial: back to
  ``under`` × the limit measured again between them; far past the old limit (it moved up),
  once they measure the new one (or a window of answers shows the move: the next probe starts
  brisk). A cut on a flood whose measure spans instants is a floor: from it the rate doubles
  each second (TCP's slow start).
- A limit the server announces (``x-ratelimit-limit-requests``) is kept to at once, up or down
  (at 99% of it when it is below ``--rpm``). Never above ``--rpm``.

In figures (``bench/real_conditions.py``, README "Rate limits and 429s"): 1% to 10% of
background 429s cost about their own share of throughput and no more; a limit stepping 1,200
→ 300 → 1,200/min that nobody announces is followed within 1–16 s at 0.955–0.985 of what it
allowed, with 3.6–3.7% of requests refused (three runs).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

from batchrun.dispatch.refusals import (
    Background,
    Epoch,
    overloaded,
    refused_beyond,
    rose,
    same_share_evidence,
    sum_epochs,
    taken_over,
)

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
class RateController:
    """The request rate to keep to (requests/min, None: no limit) and why."""

    configured: float | None  # --rpm: never exceeded
    decrease: float = 0.8  # of the rate taken over an epoch, when no better measure
    under: float = 0.95  # of a limit measured between refusals
    recover_s: float = 10.0
    probe_per_s: float = 0.02
    probe_from: float = 0.03
    probe_double_s: float = 1.5
    max_probe_step: float = 0.3
    beyond: float = 1.05  # past this many times the limit measured, probe for a new one
    moved_up: float = 1.25  # a failed probe's window this far above the limit: it moved
    far_refusals: int = 6  # refusals a probe far past the limit waits for, to measure it
    window_s: float = 5.0  # seconds of answers a failed probe's window spans
    min_rpm: float = 1.0
    epoch_s: float = 1.0
    epoch_max_s: float = 5.0
    min_outcomes: int = 20
    margin: float = 0.02
    flood_refusals: int = 10
    settle_s: float = 0.5
    max_background: float = 0.3  # refused shares from here up are overload whatever a trial says
    max_trial_epochs: int = 6  # a trial decides on the evidence it has by then,
    max_trial_s: float = 10.0  # or after this long (epochs of 20 answers are slow at 300/min)
    evidence_needed: float = math.log(20.0)  # likelihood ratio that ends a trial early
    undo_doubt_s: float = 3.0
    server_limit: float | None = None
    rate: float | None = field(default=None, init=False)
    reason: str = field(default=REASON_UNLIMITED, init=False)
    state: str = field(default=STEADY, init=False)
    epoch: Epoch = field(default_factory=lambda: Epoch(0.0), init=False)
    estimate: float | None = field(default=None, init=False)  # the limit last measured
    cuts: int = field(default=0, init=False)
    undone: int = field(default=0, init=False)
    decision: str | None = field(default=None, init=False)  # the last epoch's verdict
    _background: Background = field(default_factory=Background, init=False)
    _before_undo: Background = field(default_factory=Background, init=False)
    _undone_at: float = field(default=-math.inf, init=False)
    _before_cut: float | None = field(default=None, init=False)
    _reason_before_cut: str = field(default=REASON_UNLIMITED, init=False)
    _at_cut: Epoch = field(default_factory=lambda: Epoch(0.0), init=False)
    _trial: Epoch = field(default_factory=lambda: Epoch(0.0), init=False)  # earlier epochs
    _trial_epochs: int = field(default=0, init=False)
    _recut: bool = field(default=False, init=False)  # this trial judges a second cut
    _first_trial: Epoch = field(default_factory=lambda: Epoch(0.0), init=False)
    _recent: deque[Epoch] = field(default_factory=lambda: deque(maxlen=2), init=False)
    # (seconds, taken) of the steady epochs since the last cut, for a failed probe's window.
    _taken: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=30), init=False)
    _fast_step_per_s: float = field(default=0.0, init=False)
    _probing_s: float = field(default=0.0, init=False)
    _brisk: bool = field(default=False, init=False)  # the limit moved up: probe briskly
    _rough_estimate: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.rate = self.configured
        self.reason = REASON_CONFIGURED if self.configured is not None else REASON_UNLIMITED

    @property
    def background(self) -> float:
        """The share of requests learnt to be refused whatever our rate."""
        return self._background.share

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
        self.state, self._recut = STEADY, False
        self.epoch = Epoch(now)
        return changed

    @property
    def probing(self) -> bool:
        """Is the rate above the limit last measured (looking for one that moved up)?"""
        return (self.estimate is not None and self.rate is not None
                and not self._rough_estimate and self.rate > self.estimate)

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
        epoch.note_refusal(now)
        if self._overloaded(epoch):
            # More refused than the background explains: probe gently from here.
            self._probing_s = 0.0
            self._rough_estimate = False
        return self._maybe_decide(now)

    def _overloaded(self, epoch: Epoch, extra_margin: float = 0.0) -> bool:
        return overloaded(epoch, self._background, self.margin, extra_margin)

    def _maybe_decide(self, now: float) -> bool:
        epoch = self.epoch
        if self.state == STEADY and self.probing and refused_beyond(epoch, self._background) \
                and self._measured_enough(epoch):
            return self._probe_failed(now)
        elapsed = now - epoch.starts_at
        flood = epoch.refused >= self.flood_refusals and epoch.refused * 2 > epoch.outcomes \
            and self._overloaded(epoch, extra_margin=0.25)
        if not flood and elapsed < self.epoch_max_s and (
                elapsed < self.epoch_s or epoch.outcomes < self.min_outcomes):
            return False
        return self._decide(now, elapsed)

    def _decide(self, now: float, elapsed: float) -> bool:
        epoch = self.epoch
        overload = self._overloaded(epoch) or (
            self.state == STEADY and bool(self._recent)
            and self._overloaded(sum_epochs(epoch, *self._recent)))
        self.epoch = Epoch(now)
        if self.state == TRIAL:
            return self._judge_trial(now, epoch, elapsed)
        if overload:
            return self._cut(now, epoch, elapsed)
        self.decision = None
        self._recent.append(epoch)
        self._taken.append((elapsed, epoch.sent - epoch.refused))
        sent_rpm = epoch.sent * 60.0 / elapsed if elapsed > 0 else 0.0
        if self._background.outcomes > 0 and (
                self.rate is None or sent_rpm <= 1.1 * self._background.seen_at_rpm):
            # At a rate the background was seen at (or no limit, so no probe): pool this
            # epoch into its measure, up or down (above it, a probe's refusals must not
            # teach that they are background).
            self._background.pool(epoch, sent_rpm)
        return False

    def _judge_trial(self, now: float, epoch: Epoch, elapsed: float) -> bool:
        """Did the cut lower the refused share? Keep it, cut again, undo it, or watch one
        more epoch."""
        trial = sum_epochs(epoch, self._trial)
        before = self._at_cut
        if trial.share >= self.max_background or rose(before, trial):
            # Still refused wholesale, or more than before, at the lower rate: the cut did
            # not get under the limit, not a sign that the refusals are not ours.
            return self._cut(now, epoch, elapsed)
        evidence = same_share_evidence(before, trial, self.background)
        if abs(evidence) < self.evidence_needed and self._trial_epochs < self.max_trial_epochs \
                and now - self._trial.starts_at < self.max_trial_s:
            self._trial, self._trial_epochs = trial, self._trial_epochs + 1
            self.decision = None  # not clear yet: one more epoch at this rate
            return False
        if evidence <= 0.0:
            self.state, self.decision, self._recut = STEADY, KEPT, False  # they were ours
            return False
        if not self._recut and self._background.outcomes == 0:
            # The same share with less sent, no background known: the gateway's, or a limit
            # this cut did not get under. Once more from what this trial saw taken: under a
            # limit the share then falls; background stays where it was at any rate.
            changed = self._cut(now, epoch, elapsed, before=sum_epochs(before, trial))
            self._recut, self._first_trial = True, trial
            return changed
        return self._undo(now, trial)

    def _undo(self, now: float, trial: Epoch) -> bool:
        """The same share at lower rates: not ours. Back to the rate before the cuts, and
        learn the share from the trials (none of them picked for its share)."""
        self.state, self.decision = STEADY, UNDONE
        self.undone += 1
        self._before_undo, self._undone_at = replace(self._background), now
        if self._recut:  # the two trials measured it afresh
            self._background.refused = self._background.outcomes = 0.0
            trial = sum_epochs(trial, self._first_trial)
        self._recut = False
        self._background.prove(trial, self._before_cut, cap=self.max_background)
        changed = self.rate != self._before_cut
        self.rate, self.reason = self._before_cut, self._reason_before_cut
        self.estimate = self._before_cut  # the cuts measured the background, not a limit
        return changed

    def _doubt_undo(self, now: float) -> None:
        """Overload right after an undo: the undo was wrong (the limit moved during its
        trial), and so is the background share it taught."""
        if now - self._undone_at <= self.undo_doubt_s:
            self._background, self._undone_at = self._before_undo, -math.inf

    def _cut(self, now: float, epoch: Epoch, elapsed: float, before: Epoch | None = None
             ) -> bool:
        drained = epoch.drained_rate()
        # A flood decides within instants: over less than 0.5 s a burst would pass for rate.
        taken = drained if drained is not None else \
            max(0, epoch.sent - epoch.refused) * 60.0 / max(0.5, elapsed)
        measures = [x for x in (self.rate, taken) if x is not None and x > 0]
        if not measures:
            return False  # nothing sent that we could measure
        self._doubt_undo(now)
        if self.state != TRIAL:  # a cut within a trial deepens the same sequence of cuts
            self._before_cut, self._reason_before_cut = self.rate, self.reason
        # The share before the cut, over the last few epochs: the one that showed overload
        # alone was picked for its high share, and would make any trial look like a fall.
        self._at_cut = before if before is not None else sum_epochs(epoch, *self._recent)
        self.estimate = min(measures)
        # A flood's measure spans instants: a floor, not the limit; no gentle probe near it.
        self._rough_estimate = elapsed < self.epoch_s and drained is None
        share = self.under if drained is not None else self.decrease
        self.rate = max(self.min_rpm, self.estimate * share)
        self._fast_step_per_s = max(0.0, 0.95 * self.estimate - self.rate) / self.recover_s
        self.state = TRIAL
        self._trial, self._trial_epochs = Epoch(now), 1
        return self._restart(now)

    def _measured_enough(self, epoch: Epoch) -> bool:
        """Near the old limit a probe fails at once; far past it (it moved up), once its
        refusals measure the new one, or ``far_refusals`` came (backing off to a guess from
        before the move would creep up from far under it)."""
        assert self.estimate is not None and self.rate is not None
        return (self.rate <= self.moved_up * self.estimate or epoch.refused >= self.far_refusals
                or epoch.drained_rate() is not None)

    def _probe_failed(self, now: float) -> bool:
        """Back under the limit, measured again between the refusals (or kept, unless a
        window of the last seconds' answers shows it moved up); the probe was the trial."""
        assert self.estimate is not None and self.rate is not None
        self._doubt_undo(now)
        drained = self.epoch.drained_rate()
        moved = False
        if drained is not None:
            self.estimate = min(drained, self.rate)
        else:
            window = min(taken_over(self._taken, self.window_s), self.rate)
            if window > self.moved_up * self.estimate:
                # It moved up, to somewhere between the window's average (which lags the
                # probe) and where the probe failed: probe on briskly from under the window.
                self.estimate, moved = window, True
        self.rate = min(self.rate, self.under * self.estimate)
        self._fast_step_per_s = 0.0
        self._restart(now)
        self._brisk = moved
        return True

    def _restart(self, now: float) -> bool:
        """After a cut of either kind: new counts, a gentle start."""
        self.reason = REASON_CUT
        self.cuts += 1
        self.decision = CUT
        self._probing_s = 0.0
        self._brisk = False
        self._recent.clear()
        self._taken.clear()
        self.epoch = Epoch(now + self.settle_s)
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
        elif self._brisk:
            grown = self.rate * (1.0 + self._probe_step(seconds, head_start=2.0) * seconds)
        elif self.rate < 0.95 * estimate and self._fast_step_per_s > 0:
            grown = min(0.95 * estimate, self.rate + self._fast_step_per_s * seconds)
        elif self.rate < self.beyond * estimate:
            # Near the limit measured: probe gently, it is likely still there.
            grown = self.rate * (1.0 + self.probe_per_s * seconds)
        else:
            # Past it without refusals: the limit may have moved up. Faster and faster.
            grown = self.rate * (1.0 + self._probe_step(seconds) * seconds)
        self.rate = min(grown, ceiling) if ceiling is not None else grown
        self.reason = REASON_CLIMB
        if ceiling is not None and self.rate >= ceiling:
            self.reason = REASON_CONFIGURED if ceiling == self.configured else REASON_ANNOUNCED
        return True

    def _probe_step(self, seconds: float, head_start: float = 0.0) -> float:
        """A probe's growth a second: ``probe_from``, doubling every ``probe_double_s``
        (``head_start`` doublings ahead), at most ``max_probe_step``."""
        self._probing_s += seconds
        doublings = self._probing_s / self.probe_double_s + head_start
        return min(self.max_probe_step, self.probe_from * 2.0 ** doublings)

    def describe(self) -> str:
        """The rate and why, for the progress display."""
        shown = "unlimited" if self.rate is None else f"{self.rate:,.0f}/min"
        note = self.reason
        if self.background >= 0.005:
            note += f"; {self.background:.0%} of requests refused regardless of rate"
        return f"{shown} ({note})"
