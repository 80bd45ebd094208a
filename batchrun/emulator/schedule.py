"""A request limit that changes during a run: ``"1200@0,300@60,1200@120"`` (pure).

Each item is ``RPM@SECONDS``: from that many seconds after the emulator started (or was last
reset) the limit is RPM requests per minute, until the next item; the last one holds for good.
A shared gateway whose spare capacity drops and comes back is the case this stands for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RateStep:
    """From ``at_s`` seconds on, the limit is ``rpm`` requests per minute."""

    at_s: float
    rpm: float


Schedule = tuple[RateStep, ...]


def _number(text: str, what: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"rpm schedule item {item!r}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"rpm schedule item {item!r}: {what} must be finite")
    return value


def _step(item: str) -> RateStep:
    rate_text, sep, at_text = item.partition("@")
    if not sep:
        raise ValueError(f"rpm schedule item {item!r} is not RPM@SECONDS (e.g. 300@60)")
    rpm = _number(rate_text.strip(), "the rate", item)
    at_s = _number(at_text.strip(), "the time", item)
    if rpm <= 0:
        raise ValueError(f"rpm schedule item {item!r}: the rate must be > 0")
    if at_s < 0:
        raise ValueError(f"rpm schedule item {item!r}: the time must be >= 0")
    return RateStep(at_s, rpm)


def parse_rpm_schedule(text: str) -> Schedule:
    """``"1200@0,300@60"`` -> steps; ValueError saying what is wrong otherwise."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise ValueError("rpm schedule is empty or has an empty item: write RPM@SECONDS,... "
                         "e.g. 1200@0,300@60")
    steps = tuple(_step(item) for item in items)
    if steps[0].at_s != 0:
        raise ValueError("rpm schedule must start at 0 seconds (e.g. 1200@0,...)")
    for before, after in zip(steps, steps[1:], strict=False):
        if after.at_s <= before.at_s:
            raise ValueError(f"rpm schedule times must increase: {after.at_s:g} s comes after "
                             f"{before.at_s:g} s")
    return steps


def format_rpm_schedule(steps: Schedule) -> str:
    """The text form ``parse_rpm_schedule`` reads back."""
    return ",".join(f"{step.rpm:g}@{step.at_s:g}" for step in steps)


def rpm_at(steps: Schedule, elapsed_s: float) -> float:
    """The limit in force ``elapsed_s`` seconds after the clock started."""
    current = steps[0].rpm
    for step in steps:
        if step.at_s > elapsed_s:
            break
        current = step.rpm
    return current


def allowed_between(steps: Schedule, start_s: float, end_s: float) -> float:
    """Requests the limit allows from ``start_s`` to ``end_s``: the integral of rpm/60."""
    if end_s <= start_s:
        return 0.0
    total = 0.0
    for index, step in enumerate(steps):
        step_end = steps[index + 1].at_s if index + 1 < len(steps) else math.inf
        low, high = max(start_s, step.at_s), min(end_s, step_end)
        if high > low:
            total += (high - low) * step.rpm / 60.0
    return total
