"""JSONL manifests, line by line: a line is never held whole past ``MAX_LINE_BYTES``, and lines
a resume has done are passed over unparsed."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchrun.core.errors import InputError
from batchrun.manifest.job import JobSpec
from batchrun.manifest.rows import Row, build_row, type_name
from batchrun.manifest.template import Template

UTF8_BOM = b"\xef\xbb\xbf"

# A longer line becomes a row error without ever being held whole. Media belongs in files
# referenced by path, so real lines stay far below this.
MAX_LINE_BYTES = 128 * 1024 * 1024


_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Position:
    """Where to start reading a manifest: after line (or row) ``line``, which ends at byte
    ``offset`` of a JSONL file (0 for Parquet and CSV, which find their row by number)."""

    line: int
    offset: int = 0


def iter_jsonl(
    path: Path,
    job: JobSpec,
    template: Template | None,
    max_line_bytes: int,
    done_lines: bytes | None = None,
    start: Position | None = None,
) -> Generator[Row, None, None]:
    # From ``start`` on: a line in the middle of the file, not its first text.
    first_text_seen = start is not None and start.line > 0
    with open(path, "rb") as f:
        if start is not None:
            f.seek(start.offset)
        before = start.line if start is not None else 0
        for line_no, raw in read_lines(f, max_line_bytes, done_lines, before):
            if raw is None:
                limit = _human_bytes(max_line_bytes)
                yield Row(
                    id=f"line-{line_no}",
                    line=line_no,
                    error=f"line {line_no}: longer than {limit}; put media in files and give "
                          "their paths",
                )
                continue
            if line_no == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            if not raw or raw.isspace():
                continue
            if not first_text_seen:
                first_text_seen = True
                if raw[:64].lstrip().startswith(b"["):
                    raise InputError(
                        f"manifest {path} starts with a JSON array; batchrun reads JSON Lines: "
                        "one JSON object per line"
                    )
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield Row(id=f"line-{line_no}", line=line_no,
                          error=f"line {line_no}: {_json_problem(raw, exc)}")
                continue
            if not isinstance(record, dict):
                yield Row(
                    id=f"line-{line_no}",
                    line=line_no,
                    error=f"line {line_no}: expected a JSON object, got {type_name(record)}",
                )
                continue
            yield build_row(record, line_no, "line", job, template)


def read_lines(
    f: Any, max_line_bytes: int, done_lines: bytes | None = None, line_no: int = 0
) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; ``None`` for a line over the limit, skipped unread.
    ``line_no``: the number of the line before the file's position.

    Runs of lines marked in ``done_lines`` are read past without being yielded.
    """
    readline = f.readline
    limit = max_line_bytes + 1
    while True:
        if done_lines is not None and line_no + 1 < len(done_lines) and done_lines[line_no + 1]:
            end = done_lines.find(0, line_no + 1)
            if end < 0:
                end = len(done_lines)
            wanted = end - line_no - 1
            skipped = skip_lines(f, wanted)
            line_no += skipped
            if skipped < wanted:
                return
            continue
        raw = readline(limit)
        if not raw:
            return
        line_no += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            _read_past_line(f)
            yield line_no, None
            continue
        yield line_no, raw


def skip_lines(f: Any, count: int) -> int:
    """Read past ``count`` lines by counting newlines in big chunks (no line is ever held
    whole); returns how many there were before the end of the file."""
    skipped = 0
    while skipped < count:
        start = f.tell()
        chunk = f.read(_CHUNK)
        if not chunk:
            return skipped
        newlines = chunk.count(b"\n")
        if skipped + newlines < count:
            skipped += newlines
            continue
        end = -1
        for _ in range(count - skipped):
            end = chunk.find(b"\n", end + 1)
        f.seek(start + end + 1)
        return count
    return skipped


def _read_past_line(f: Any) -> None:
    while (rest := f.readline(_CHUNK)) and not rest.endswith(b"\n"):
        pass


def _json_problem(raw: bytes, exc: Exception) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8 (byte 0x{raw[bad.start]:02x} at column {bad.start + 1})"
    return f"invalid JSON ({exc})"


def _human_bytes(size: int) -> str:
    if size >= 1024 * 1024 and size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    return f"{size:,} bytes"
