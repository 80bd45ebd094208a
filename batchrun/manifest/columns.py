"""Which of a manifest's columns a job never reads: ``estimate`` lists them (they are kept, and
``export --with-input`` gives them back), with a hint when one is a setting's name misspelt."""

from __future__ import annotations

from collections.abc import Iterable

from batchrun.manifest.job import JobSpec
from batchrun.manifest.settings import UnusedColumn, unused_columns, used_columns
from batchrun.manifest.template import compile_template


def job_columns(job: JobSpec) -> frozenset[str]:
    """Every column ``job`` reads from a row."""
    template = compile_template(job.prompt_template)
    return used_columns(job.columns, template.columns if template else (), job.media_columns)


def unused_by(seen: Iterable[str], job: JobSpec) -> list[UnusedColumn]:
    """The columns ``seen`` that ``job`` does not read, each with its did-you-mean hint."""
    return unused_columns(seen, job_columns(job))


def unused_lines(unused: list[UnusedColumn]) -> list[str]:
    """The estimate's lines about them: one listing, then one warning per likely typo."""
    if not unused:
        return []
    lines = [f"  columns not used by the job (kept; `export --with-input` gives them back): "
             f"{', '.join(column.name for column in unused)}"]
    lines += [f"warning: column {column.name} is not used; did you mean {column.did_you_mean}?"
              for column in unused if column.did_you_mean]
    return lines
