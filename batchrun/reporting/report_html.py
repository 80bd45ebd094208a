"""The report's markup (pure): a header a team lead can forward (what was run, where, how long,
estimate vs actual, retries, finish reasons, cost by kind), then full-width charts, errors and
the costliest rows."""

from __future__ import annotations

import time
from html import escape

from batchrun.reporting.axes import duration_label
from batchrun.reporting.estimated import ManifestEstimate
from batchrun.reporting.report_charts import charts
from batchrun.reporting.report_data import ReportData, paid
from batchrun.reporting.report_style import STYLE
from batchrun.reporting.run_facts import RunFacts
from batchrun.store.retries import CAUSE_NOT_RECORDED

# What a finish reason means for the answer (OpenAI's chat completion object:
# https://platform.openai.com/docs/api-reference/chat/object).
FINISH_MEANINGS = {
    "stop": "the answer ended by itself",
    "length": "cut at the output token limit (max_tokens): the answer is incomplete",
    "content_filter": "withheld or cut by the content filter",
    "tool_calls": "the model called a tool",
}


def _stamp(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _table(head: list[str], rows: list[list[str]], *, text: tuple[int, ...] = (0,)) -> str:
    """A table of already-escaped cells; the columns not in ``text`` hold numbers and align
    right."""
    header = "".join(f"<th>{cell}</th>" for cell in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"" if at in text else "num"}">{cell}</td>'
                         for at, cell in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _facts(facts: RunFacts, data: ReportData) -> str:
    job = (escape(facts.job_name) if facts.job_name is not None
           else "no job file (the defaults and command-line flags)")
    models = ", ".join(f"{escape(name)} ({count:,})" for name, count in
                       data.answer_models.most_common() if name != facts.model)
    answered_by = f' <span class="muted">answers came from {models}</span>' if models else ""
    state = "running now" if facts.running else (
        "finished" if not data.rows_pending else f"{data.rows_pending:,} rows not done yet")
    items = [
        ("Job", job),
        ("Model", escape(facts.model) + answered_by),
        ("Endpoint", escape(facts.endpoint)),
        ("Manifest", f"{escape(facts.manifest)} ({facts.rows_total:,} rows)"),
        ("Run directory", escape(facts.run_dir)),
        ("Time", f"{_stamp(data.first_start)} → {_stamp(data.last_finish)}"),
        ("Duration", f"{duration_label(data.duration_s)} (first request to last row, "
                     f"all sessions) · {state}"),
    ]
    return '<dl class="facts">' + "".join(
        f"<dt>{name}</dt><dd>{value}</dd>" for name, value in items) + "</dl>"


def _card(label: str, value: str, detail: str = "") -> str:
    small = f"<small>{escape(detail)}</small>" if detail else ""
    return f'<div class="card">{escape(label)}<b>{escape(value)}</b>{small}</div>'


def _rate(data: ReportData) -> tuple[str, str]:
    finished = data.rows_ok + data.rows_failed
    if data.duration_s < 1:
        # Less than a second gives no rate worth the name (60 rows in 6 ms is not 10,000/s).
        return f"{finished:,} rows", f"in {duration_label(data.duration_s)}"
    per_s = finished / data.duration_s
    detail = f"{finished:,} rows in {duration_label(data.duration_s)}"
    if per_s < 1:
        return f"{per_s * 60:,.1f} rows/min", detail
    return f"{per_s:,.1f} rows/s", detail


def _cards(facts: RunFacts, data: ReportData, manifest: ManifestEstimate) -> str:
    estimate = manifest.estimate
    versus = ("no estimate" if estimate is None
              else f"{_ratio(data.credits, estimate.credits.expected)} the estimate "
                   f"({estimate.credits.expected:,.2f})")
    rate, rate_detail = _rate(data)
    retried = (f"{duration_label(data.retry_seconds)} of row time" if data.retries_total
               else "every try answered")
    cards = [
        _card("rows ok", f"{data.rows_ok:,}",
              f"{data.rows_reused:,} reused from an earlier run" if data.rows_reused else ""),
        _card("rows failed", f"{data.rows_failed:,}"),
        _card("rows pending", f"{data.rows_pending:,}"),
        _card("spent (credits)", f"{data.credits:,.4f}", versus),
        _card("spent (USD)", f"${data.credits * facts.usd_per_credit:,.4f}"),
        _card("duration", duration_label(data.duration_s)),
        _card("throughput", rate, rate_detail),
        _card("retries", f"{data.retries_total:,}", retried),
    ]
    return f'<div class="cards">{"".join(cards)}</div>'


def _ratio(actual: float, expected: float) -> str:
    return f"{actual / expected:,.2f}×" if expected > 0 else "—"


def _estimate_section(facts: RunFacts, data: ReportData, manifest: ManifestEstimate) -> str:
    estimate = manifest.estimate
    if estimate is None:
        note = escape(manifest.note or "no estimate")
        mean = (f"{data.completion_tokens / data.rows_ok:,.0f}" if data.rows_ok else "—")
        return (f"<p>{note}.</p>" + _table(
            ["", "job", "actual"],
            [["output tokens per answered row", f"{facts.expected_output_tokens:,} expected",
              mean]]))
    usd = facts.usd_per_credit
    rows = [
        ["rows", f"{estimate.rows_sendable:,} sendable", "",
         f"{data.rows_ok + data.rows_failed:,} done", ""],
        ["prompt tokens", f"{estimate.prompt_tokens:,}", "", f"{data.prompt_tokens:,}",
         _ratio(data.prompt_tokens, estimate.prompt_tokens)],
        ["output tokens", f"{estimate.output_tokens.expected:,.0f}",
         f"{estimate.output_tokens.low:,.0f}–{estimate.output_tokens.high:,.0f}",
         f"{data.completion_tokens:,}",
         _ratio(data.completion_tokens, estimate.output_tokens.expected)],
        ["credits", f"{estimate.credits.expected:,.4f}",
         f"{estimate.credits.low:,.4f}–{estimate.credits.high:,.4f}", f"{data.credits:,.4f}",
         _ratio(data.credits, estimate.credits.expected)],
        ["USD", f"${estimate.credits.expected * usd:,.4f}",
         f"${estimate.credits.low * usd:,.4f}–${estimate.credits.high * usd:,.4f}",
         f"${data.credits * usd:,.4f}", _ratio(data.credits, estimate.credits.expected)],
    ]
    partial = (f" {data.rows_pending:,} rows are not done yet: the actual covers the rows done."
               if data.rows_pending else "")
    basis = (f"Estimated from the manifest as <code>batchrun estimate</code> does, with "
             f"{facts.expected_output_tokens:,} output tokens per row (the job's "
             f"expected_output_tokens; the band is ×0.5 to ×2).{escape(partial)}")
    return _table(["", "estimate", "band", "actual", "actual ÷ estimate"], rows) + \
        f'<p class="muted">{basis}</p>'


def _kinds_section(facts: RunFacts, data: ReportData, manifest: ManifestEstimate) -> str:
    by_kind = manifest.estimate.by_kind if manifest.estimate else {}
    kinds = sorted(set(data.rows_by_kind) | set(data.cost_by_kind) | set(by_kind))
    rows = []
    for kind in kinds:
        rows_done = data.rows_by_kind.get(kind, 0)
        spent = data.cost_by_kind.get(kind, 0.0)
        expected = f"{by_kind[kind].credits:,.4f}" if kind in by_kind else "—"
        per_row = f"{spent / rows_done:,.5f}" if rows_done else "—"
        rows.append([escape(kind), f"{rows_done:,}", expected, f"{spent:,.4f}",
                     f"${spent * facts.usd_per_credit:,.4f}", per_row])
    return _table(["kind", "rows done", "estimate", "credits", "USD", "credits per row"], rows)


def _retries_section(data: ReportData, facts: RunFacts) -> str:
    if not data.retries:
        return "<p>No retries: every row was answered or failed on its first try.</p>"
    rows = [[escape(cause), f"{entry.retries:,}", f"{entry.rows:,}",
             duration_label(entry.seconds)]
            for cause, entry in sorted(data.retries.items(), key=lambda item: -item[1].retries)]
    note = (f"Tries per row: at most {facts.max_attempts} in one session (max_attempts); a row "
            "that failed them all is sent again by a resume. Time lost is what the retried "
            "rows spent on failed tries and the waits between them, summed over rows (they "
            "run side by side).")
    if CAUSE_NOT_RECORDED in data.retries:
        note += (" The journal keeps how many tries an answered row took, not what the "
                 "failed ones answered.")
    return (_table(["cause", "retries", "rows", "time lost"], rows)
            + f'<p class="muted">{escape(note)}</p>')


def _finish_section(data: ReportData) -> str:
    total = sum(data.finish_reasons.values())
    if not total:
        return "<p>No answered rows yet.</p>"
    rows = [[escape(reason), f"{count:,}", f"{count / total:.0%}",
             escape(FINISH_MEANINGS.get(reason, ""))]
            for reason, count in data.finish_reasons.most_common()]
    return _table(["finish reason", "rows", "share", "meaning"], rows, text=(0, 3))


def _errors_section(data: ReportData) -> str:
    if not data.errors:
        return "<p>No errors.</p>"
    rows = [[escape(code), f"{count:,}", "<br>".join(
                f"{escape(row_id)}: {escape(message[:200])}"
                for row_id, message in data.error_examples.get(code, []))]
            for code, count in data.errors.most_common()]
    return _table(["code", "rows", "examples"], rows, text=(0, 2))


def _costliest_section(data: ReportData) -> str:
    rows = [[escape(str(r["id"])), f"{paid(r):.6f}", f"{r.get('prompt_tokens') or 0:,}",
             f"{r.get('completion_tokens') or 0:,}", f"{r.get('reasoning_tokens') or 0:,}",
             duration_label((r.get("latency_ms") or 0) / 1000)]
            for r in data.costliest]
    if not rows:
        return "<p>Nothing was paid for yet.</p>"
    return _table(["id", "credits", "prompt", "completion", "reasoning", "latency"], rows)


def render(facts: RunFacts, data: ReportData, manifest: ManifestEstimate, *,
           generated_at: float | None = None) -> str:
    """The whole HTML document."""
    title = facts.job_name if facts.job_name is not None else f"run {facts.run_dir}"
    figures = "".join(charts(data, manifest.estimate))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>batchrun report: {escape(title)}</title>
<style>{STYLE}</style></head><body>
<header><h1>batchrun report: {escape(title)}</h1>
<p class="muted">generated {_stamp(generated_at or time.time())}</p>
{_facts(facts, data)}</header>
{_cards(facts, data, manifest)}
<div class="pair">
<section><h2>Estimate vs actual</h2>{_estimate_section(facts, data, manifest)}</section>
<section><h2>Cost by kind of row</h2>{_kinds_section(facts, data, manifest)}</section>
<section><h2>Retries</h2>{_retries_section(data, facts)}</section>
<section><h2>Finish reasons</h2>{_finish_section(data)}</section>
</div>
<h2>Charts</h2><div class="charts">{figures}</div>
<div class="pair">
<section><h2>Errors by code</h2>{_errors_section(data)}</section>
<section><h2>Costliest rows</h2>{_costliest_section(data)}</section>
</div>
</body></html>
"""
