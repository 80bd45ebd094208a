"""Inline-SVG charts for the HTML report (pure: values in, markup out; no network, no JS).

Every chart spans the page's width (``width="100%"`` over a fixed view box) and has real axes:
a y axis with gridlines at round ticks (``axes.value_ticks``) and its unit, an x axis whose
ticks the caller chooses (round latencies, round times, categories) and a title saying what is
counted. Values on hover come from each mark's ``<title>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from batchrun.reporting.axes import tick_label, value_ticks

BAR_COLOUR = "#4e79a7"
LINE_COLOUR = "#e15759"
ESTIMATE_COLOUR = "#b8b0ac"
GRID_COLOUR = "#e3e3e3"
AXIS_COLOUR = "#555"
WIDTH = 1000
HEIGHT = 260
MARGIN_LEFT = 78
MARGIN_RIGHT = 24
MARGIN_TOP = 30  # room for a legend
MARGIN_BOTTOM = 50
MAX_X_LABELS = 12


@dataclass(frozen=True)
class Series:
    """One set of bars or one line, with its legend name and colour."""

    name: str
    values: Sequence[float]
    colour: str = BAR_COLOUR


@dataclass(frozen=True)
class Box:
    """The plot area inside the view box."""

    left: float = MARGIN_LEFT
    top: float = MARGIN_TOP
    width: float = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    height: float = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def y(self, value: float, y_top: float) -> float:
        return self.bottom - self.height * value / y_top


BOX = Box()


def _figure(title: str, body: str) -> str:
    return (
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}">{body}</svg></figure>'
    )


def empty_chart(title: str, message: str) -> str:
    """A titled strip (not a whole empty frame) saying why there is no chart."""
    return (f'<figure class="chart empty"><figcaption>{escape(title)}</figcaption>'
            f'<p class="empty">{escape(message)}</p></figure>')


def _y_axis(high: float, label: str, *, whole: bool) -> tuple[str, float]:
    """Gridlines and labels at round ticks from 0 to at least ``high``; the top tick."""
    ticks = value_ticks(high, whole=whole)
    step = ticks[1] - ticks[0]
    top = ticks[-1]
    parts = []
    for tick in ticks:
        y = BOX.y(tick, top)
        parts.append(
            f'<line x1="{BOX.left}" y1="{y:.1f}" x2="{BOX.left + BOX.width}" y2="{y:.1f}" '
            f'stroke="{GRID_COLOUR if tick else AXIS_COLOUR}"/>'
            f'<text class="tick y" x="{BOX.left - 8}" y="{y + 4:.1f}" text-anchor="end" '
            f'font-size="13">{escape(tick_label(tick, step))}</text>')
    middle = BOX.top + BOX.height / 2
    parts.append(f'<text x="18" y="{middle}" font-size="13" text-anchor="middle" '
                 f'transform="rotate(-90 18 {middle})">{escape(label)}</text>')
    return "".join(parts), top


def _x_tick(x: float, label: str) -> str:
    return (f'<line x1="{x:.1f}" y1="{BOX.bottom}" x2="{x:.1f}" y2="{BOX.bottom + 5}" '
            f'stroke="{AXIS_COLOUR}"/><text class="tick x" x="{x:.1f}" y="{BOX.bottom + 20}" '
            f'text-anchor="middle" font-size="13">{escape(label)}</text>')


def _x_title(label: str) -> str:
    return (f'<text x="{BOX.left + BOX.width / 2}" y="{HEIGHT - 6}" font-size="13" '
            f'text-anchor="middle">{escape(label)}</text>')


def _legend(series: Sequence[Series]) -> str:
    if len(series) < 2:
        return ""
    parts = []
    x = BOX.left + BOX.width
    for item in reversed(series):
        x -= 9 * len(item.name) + 34
        parts.append(f'<rect x="{x:.0f}" y="8" width="12" height="12" fill="{item.colour}"/>'
                     f'<text x="{x + 17:.0f}" y="19" font-size="13">{escape(item.name)}</text>')
    return "".join(parts)


def _bar(x: float, width: float, value: float, y_top: float, colour: str, tip: str) -> str:
    y = BOX.y(value, y_top)
    return (f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{max(1.0, width):.1f}" '
            f'height="{BOX.bottom - y:.1f}" fill="{colour}"><title>{escape(tip)}</title></rect>')


def column_chart(title: str, categories: Sequence[str], series: Sequence[Series],
                 y_label: str, value_label: Callable[[float], str]) -> str:
    """Grouped vertical bars: one group per category, one bar per series (legend above)."""
    high = max((value for item in series for value in item.values), default=0.0)
    if not categories or high <= 0:
        return empty_chart(title, "nothing to show")
    axis, top = _y_axis(high, y_label, whole=False)
    slot = BOX.width / len(categories)
    bar_width = min(120.0, slot * 0.7 / len(series))
    parts = [axis, _legend(series)]
    for at, category in enumerate(categories):
        group_left = BOX.left + at * slot + (slot - bar_width * len(series)) / 2
        for index, item in enumerate(series):
            value = item.values[at]
            parts.append(_bar(group_left + index * bar_width, bar_width - 2, value, top,
                              item.colour, f"{category}, {item.name}: {value_label(value)}"))
        parts.append(_x_tick(BOX.left + (at + 0.5) * slot, category))
    return _figure(title, "".join(parts))


def interval_chart(title: str, edges: Sequence[float], heights: Sequence[float], *,
                   x_label: str, y_label: str, edge_label: Callable[[float], str],
                   log_x: bool = False, whole: bool = False,
                   x_ticks: Sequence[float] | None = None) -> str:
    """Bars over numeric intervals (a histogram, or rows per bucket of time): bar ``i``
    spans [``edges[i]``, ``edges[i + 1]``). Ticks fall on ``x_ticks``, else on the edges
    (every k-th, so that the labels do not crowd)."""
    if not heights or max(heights) <= 0:
        return empty_chart(title, "no data")
    axis, top = _y_axis(max(heights), y_label, whole=whole)
    ticks = list(x_ticks) if x_ticks is not None else list(edges)
    # Given ticks may reach past the last bar (a round end time): the axis runs to them, so
    # charts over the same time line up.
    scale = _x_scale(min(edges[0], ticks[0]), max(edges[-1], ticks[-1]), log_x)
    parts = [axis]
    for at, height in enumerate(heights):
        x0, x1 = scale(edges[at]), scale(edges[at + 1])
        tip = (f"{edge_label(edges[at])} to {edge_label(edges[at + 1])}: "
               f"{tick_label(height, 0.01 if not whole else 1)}")
        if height > 0:
            parts.append(_bar(x0 + 1, x1 - x0 - 2, height, top, BAR_COLOUR, tip))
    every = max(1, math.ceil(len(ticks) / MAX_X_LABELS))
    parts.extend(_x_tick(scale(tick), edge_label(tick))
                 for at, tick in enumerate(ticks) if at % every == 0)
    parts.append(_x_title(x_label))
    return _figure(title, "".join(parts))


def line_chart(title: str, xs: Sequence[float], ys: Sequence[float], *, x_ticks: Sequence[float],
               x_label: str, y_label: str, tick_text: Callable[[float], str]) -> str:
    """A line through (x, y) points over round x ticks (the last tick ends the axis)."""
    if len(xs) < 2 or max(ys, default=0.0) <= 0:
        return empty_chart(title, "not enough data")
    axis, top = _y_axis(max(ys), y_label, whole=False)
    scale = _x_scale(x_ticks[0], x_ticks[-1], False)
    points = " ".join(f"{scale(x):.1f},{BOX.y(y, top):.1f}" for x, y in zip(xs, ys, strict=True))
    parts = [axis, f'<polyline class="line" points="{points}" fill="none" '
                   f'stroke="{LINE_COLOUR}" stroke-width="2.5"/>']
    every = max(1, math.ceil(len(x_ticks) / MAX_X_LABELS))
    parts.extend(_x_tick(scale(tick), tick_text(tick))
                 for at, tick in enumerate(x_ticks) if at % every == 0)
    parts.append(_x_title(x_label))
    return _figure(title, "".join(parts))


def _x_scale(low: float, high: float, log: bool) -> Callable[[float], float]:
    if log and low > 0:
        span = math.log(high / low) or 1.0
        return lambda value: BOX.left + BOX.width * math.log(max(value, low) / low) / span
    width = (high - low) or 1.0
    return lambda value: BOX.left + BOX.width * (value - low) / width
