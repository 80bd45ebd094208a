"""Is there room for the run's results? Checked once, before the first request is sent."""

from __future__ import annotations

import os
from pathlib import Path

from batchrun.core.errors import InputError

# Below this a run cannot even write its first results: refuse rather than pay for answers
# that could not be kept.
MIN_FREE_BYTES = 1024 * 1024
# A journal line holds the answer (about 4 bytes a token), its thoughts and some 800 bytes of
# fields; results.parquet holds it again, compressed.
_ROW_OVERHEAD_BYTES = 800
_BYTES_PER_OUTPUT_TOKEN = 4 * 2


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def bytes_needed(rows: int, expected_output_tokens: int) -> int:
    """A rough upper estimate of the journal and results.parquet for ``rows`` answers."""
    per_row = _ROW_OVERHEAD_BYTES + _BYTES_PER_OUTPUT_TOKEN * expected_output_tokens
    return int(rows * per_row * 1.5)


def check_free_space(path: Path, *, rows: int, expected_output_tokens: int) -> str | None:
    """Raise ``InputError`` on a (nearly) full filesystem; return a warning when the run looks
    bigger than the space left, None when all is well."""
    try:
        free = free_bytes(path)
    except OSError:
        return None  # no statvfs here: the write probe has already passed
    if free < MIN_FREE_BYTES:
        raise InputError(
            f"run directory {path} is on a full filesystem ({_size(free)} free); free some "
            "space or choose another --out; nothing was sent"
        )
    needed = bytes_needed(rows, expected_output_tokens)
    if free < needed:
        return (
            f"warning: {_size(free)} free where {path} is; the results of {rows:,} rows may "
            f"need about {_size(needed)}. If the disk fills, the run stops and resumes later."
        )
    return None


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"
