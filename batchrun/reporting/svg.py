"""Tiny inline-SVG charts for the HTML report (pure: values in, markup out; no network, no JS)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

BAR_COLOUR = "#4e79a7"
LINE_COLOUR = "#e15759"
WIDTH = 640
HEIGHT = 220
MARGIN_LEFT = 64
MARGIN_BOTTOM = 40
MARGIN_TOP = 16
MARGIN_RIGHT = 16


def _plot_box() -> tuple[float, float, float, float]:
    return (MARGIN_LEFT, MARGIN_TOP, WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
            HEIGHT - MARGIN_TOP - MARGIN_BOTTOM)


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _frame(title: str, body: str, y_max: float, y_label: str) -> str:
    left, top, width, height = _plot_box()
    axis = (
        f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" '
        'stroke="#555"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + height}" stroke="#555"/>'
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11">'
        f"{escape(_number(y_max))}</text>"
        f'<text x="{left - 6}" y="{top + height}" text-anchor="end" font-size="11">0</text>'
        f'<text x="12" y="{top + height / 2}" font-size="11" '
        f'transform="rotate(-90 12 {top + height / 2})" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    return (
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"{axis}{body}</svg></figure>"
    )


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], y_label: str) -> str:
    """Vertical bars, one per label; an empty series draws an empty frame saying so."""
    left, top, width, height = _plot_box()
    if not values or max(values) <= 0:
        empty = (f'<text x="{left + width / 2}" y="{top + height / 2}" text-anchor="middle" '
                 'font-size="13" fill="#777">no data</text>')
        return _frame(title, empty, 0, y_label)
    y_max = max(values)
    slot = width / len(values)
    bar_width = max(1.0, slot * 0.8)
    parts: list[str] = []
    label_every = max(1, len(labels) // 10)
    for position, (label, value) in enumerate(zip(labels, values, strict=True)):
        bar_height = height * value / y_max
        x = left + position * slot + (slot - bar_width) / 2
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{top + height - bar_height:.1f}" '
            f'width="{bar_width:.1f}" height="{bar_height:.1f}" fill="{BAR_COLOUR}">'
            f"<title>{escape(label)}: {escape(_number(value))}</title></rect>"
        )
        if position % label_every == 0:
            parts.append(
                f'<text x="{x + bar_width / 2:.1f}" y="{top + height + 14}" font-size="10" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return _frame(title, "".join(parts), y_max, y_label)


def line_chart(
    title: str, xs: Sequence[float], ys: Sequence[float], y_label: str, x_label: str
) -> str:
    """A polyline of (x, y) points scaled to the box; x is labelled at both ends."""
    left, top, width, height = _plot_box()
    if len(xs) < 2 or max(ys, default=0) <= 0:
        empty = (f'<text x="{left + width / 2}" y="{top + height / 2}" text-anchor="middle" '
                 'font-size="13" fill="#777">not enough data</text>')
        return _frame(title, empty, 0, y_label)
    x_min, x_max = min(xs), max(xs)
    y_max = max(ys)
    span = (x_max - x_min) or 1.0
    points = " ".join(
        f"{left + width * (x - x_min) / span:.1f},{top + height - height * y / y_max:.1f}"
        for x, y in zip(xs, ys, strict=True)
    )
    body = (
        f'<polyline class="line" points="{points}" fill="none" stroke="{LINE_COLOUR}" '
        'stroke-width="2"/>'
        f'<text x="{left}" y="{top + height + 14}" font-size="10">{escape(_number(x_min))}'
        "</text>"
        f'<text x="{left + width}" y="{top + height + 14}" font-size="10" text-anchor="end">'
        f"{escape(_number(x_max))}</text>"
        f'<text x="{left + width / 2}" y="{top + height + 30}" font-size="11" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    return _frame(title, body, y_max, y_label)
