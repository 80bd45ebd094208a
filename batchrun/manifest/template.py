"""The job's ``prompt_template``: checked once, filled per row from the row's columns."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchrun.core.errors import InputError

# How a row that lacks a column of the template is told so (``hints`` looks for it).
MISSING_COLUMN = "prompt_template needs column"


class BadRow(Exception):
    """A problem of one row; becomes ``Row.error``."""


@dataclass(frozen=True)
class Template:
    text: str
    columns: tuple[str, ...]


_ROOT_NAME = re.compile(r"[^.\[]*")


def compile_template(text: str | None) -> Template | None:
    """Check a ``str.format_map`` template once and list the columns it reads."""
    if text is None:
        return None
    columns: list[str] = []

    def walk(fmt: str, depth: int) -> None:
        try:
            parsed = list(string.Formatter().parse(fmt))
        except ValueError as exc:
            raise InputError(f"prompt_template is not a valid format string: {exc}") from None
        for _literal, field_name, spec, conversion in parsed:
            if field_name is None:
                continue
            match = _ROOT_NAME.match(field_name)
            root = match.group(0) if match else ""
            if not root or root.isdigit():
                raise InputError(
                    f"prompt_template has a positional field {{{field_name}}}; "
                    "name a column instead, like {title}"
                )
            if conversion not in (None, "r", "s", "a"):
                raise InputError(f"prompt_template: unknown conversion !{conversion} "
                                 f"in {{{field_name}}}")
            columns.append(root)
            if spec and depth < 2:
                walk(spec, depth + 1)

    walk(text, 0)
    return Template(text=text, columns=tuple(dict.fromkeys(columns)))


def fill_template(template: Template, record: Mapping[str, Any]) -> str:
    for column in template.columns:
        if column not in record:
            raise BadRow(f"{MISSING_COLUMN} {column!r}, which this row lacks")
        if record[column] is None:
            raise BadRow(f"{MISSING_COLUMN} {column!r}, which is null in this row")
    try:
        return template.text.format_map(record)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise BadRow(f"prompt_template could not be filled from this row: {exc!r}") from None
