"""The report's charts, from its figures: cost by kind (estimate next to actual), throughput
and spend over time, and the latency histogram, each with axes in the units a person reads."""

from __future__ import annotations

from batchrun.cost.estimate import RunEstimate
from batchrun.reporting.axes import (
    Buckets,
    duration_label,
    histogram,
    time_buckets,
    time_ticks,
)
from batchrun.reporting.report_data import ReportData
from batchrun.reporting.svg import (
    BAR_COLOUR,
    ESTIMATE_COLOUR,
    Series,
    column_chart,
    empty_chart,
    interval_chart,
    line_chart,
)


def charts(data: ReportData, estimate: RunEstimate | None) -> list[str]:
    start = data.first_start if data.first_start is not None else (
        data.finished_rows[0][0] if data.finished_rows else 0.0)
    buckets = time_buckets(start, data.finished_rows)
    return [
        throughput_chart(buckets),
        spend_chart(buckets),
        latency_chart(data.latencies_ms),
        cost_chart(data, estimate),
    ]


def cost_chart(data: ReportData, estimate: RunEstimate | None) -> str:
    kinds = sorted(set(data.cost_by_kind) | set(estimate.by_kind if estimate else ()))
    series = []
    if estimate is not None:
        series.append(Series("estimate (expected)",
                             [estimate.by_kind[k].credits if k in estimate.by_kind else 0.0
                              for k in kinds], ESTIMATE_COLOUR))
    series.append(Series("actual", [data.cost_by_kind.get(k, 0.0) for k in kinds], BAR_COLOUR))
    return column_chart("Cost by kind of row", kinds, series, "credits",
                        lambda value: f"{value:,.4f} credits")


def _too_short(title: str, buckets: Buckets) -> str:
    if not buckets.rows:
        return empty_chart(title, "no row has finished yet")
    return empty_chart(title, f"the rows finished within {duration_label(buckets.span_s)}: "
                              "too short for a chart over time")


def throughput_chart(buckets: Buckets) -> str:
    """Rows finished per round bucket of time, as a rate in rows/s or rows/min."""
    title = f"Throughput: rows finished per {duration_label(buckets.bucket_s)}"
    if not buckets.chartable:
        return _too_short(title, buckets)
    per_second = [rows / buckets.bucket_s for rows in buckets.rows]
    # Under one row a second, rows per minute reads better than 0.05 rows/s.
    per_minute = max(per_second) < 1
    rates = [rate * 60 for rate in per_second] if per_minute else per_second
    return interval_chart(
        title, buckets.edges, rates, x_label="time since the first request",
        y_label="rows/min" if per_minute else "rows/s", edge_label=duration_label,
        x_ticks=time_ticks(buckets.edges[-1]))


def spend_chart(buckets: Buckets) -> str:
    """Credits spent so far, at the end of each bucket."""
    title = "Spend over time (credits, cumulative)"
    if not buckets.chartable:
        return _too_short(title, buckets)
    xs = [0.0]
    ys = [0.0]
    total = 0.0
    for at, spent in enumerate(buckets.credits):
        total += spent
        xs.append(min(buckets.span_s, (at + 1) * buckets.bucket_s))
        ys.append(total)
    return line_chart(title, xs, ys, x_ticks=time_ticks(buckets.span_s),
                      x_label="time since the first request", y_label="credits",
                      tick_text=duration_label)


def latency_chart(latencies_ms: list[float]) -> str:
    """Answered rows by the time their answering try took on the wire."""
    bins = histogram(latencies_ms)
    scale = " (log scale)" if bins.log else ""
    # Even bins may be narrow beside their values (every answer near 505 ms): their labels
    # carry the digits the step needs. Log bins are 1-2-5 apart: three digits tell them.
    step_s = None
    if len(bins.edges) > 1 and not bins.log:
        step_s = (bins.edges[1] - bins.edges[0]) / 1000
    return interval_chart(
        f"Latency of answered rows{scale}", bins.edges, [float(c) for c in bins.counts],
        x_label="latency: request sent to answer read", y_label="rows",
        edge_label=lambda ms: duration_label(ms / 1000, step_s), log_x=bins.log, whole=True)
