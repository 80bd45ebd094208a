"""What to say when no row of a manifest can be sent: the columns the manifest has, and the
job field that turns one of them into the prompt (``prompt_template``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.reader import iter_records
from batchrun.manifest.rows import ID_KEYS, NEEDS
from batchrun.manifest.template import MISSING_COLUMN

# The example job whose prompt_template reads a column (``{text}``).
TEMPLATE_EXAMPLE_JOB = "jobs/summarise.toml"
# Column names that usually hold the text to send, most likely first.
_TEXT_LIKE = ("text", "content", "document", "body", "article", "question", "query", "input",
              "message", "description", "transcript", "prompt_text")
_NOT_TEXT = {*ID_KEYS, "system", "media", "method", "url"}
COLUMNS_READ = 1000  # rows whose columns are listed (a manifest's first rows say enough)


def columns_found(manifest: Path, rows: int = COLUMNS_READ) -> list[str]:
    """The column names of the manifest's first ``rows`` rows, in the order first seen."""
    seen: dict[str, None] = {}
    for count, (_, record) in enumerate(iter_records(manifest), start=1):
        seen.update(dict.fromkeys(record))
        if count >= rows:
            break
    return list(seen)


def template_advice(columns: Sequence[str], template: str | None) -> str:
    """How to make rows of these columns sendable: a ``prompt_template`` that reads one."""
    found = ", ".join(columns) if columns else "none"
    if template is not None:
        return (f"the job's prompt_template ({template!r}) reads columns this manifest does not "
                f"have; columns found: {found}. Name them in the template as {{column}}")
    column = next((name for name in _TEXT_LIKE if name in columns), None) or next(
        (name for name in columns if name not in _NOT_TEXT), "COLUMN")
    return (f"columns found: {found}. A row needs `prompt` (or `messages`, or an OpenAI batch "
            f"`body`); to send another column, name it in the job: prompt_template = "
            f"\"{{{column}}}\" ({TEMPLATE_EXAMPLE_JOB} shows a template), or rename the column "
            "to prompt")


def nothing_sendable(manifest: Path, job: JobSpec, *, rows_read: int, rows_sendable: int,
                     reasons: Sequence[str]) -> InputError | None:
    """The error to stop on when rows were read and none of them can be sent; ``reasons`` are
    the first unsendable rows' reasons. A teaching message when rows lack their text."""
    if not rows_read or rows_sendable:
        return None
    message = f"no row of {manifest} can be sent ({rows_read:,} rows read, none sendable)"
    if any(NEEDS in reason or MISSING_COLUMN in reason for reason in reasons):
        advice = template_advice(columns_found(manifest), job.prompt_template)
        return InputError(f"{message}: {advice}")
    first = f"; the first: {reasons[0]}" if reasons else ""
    return InputError(f"{message}{first}")
