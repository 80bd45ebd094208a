"""A manifest of plain prompt rows, read as Arrow columns instead of one ``Row`` at a time.

``estimate`` of a million text rows spends its time making a Python object per row; when every
row is a plain prompt (``id``, ``prompt``, optional ``system``, and columns nobody reads) the
same figures come from whole columns (``cost.arrow_tokens``). ``plain_batches`` yields those
columns, checked batch by batch, and raises ``NotPlain`` the moment anything would make a row
other than a plain prompt row or an error of its own (a blank or whitespace prompt, a null id,
another shape, a per-row setting, a type Arrow had to guess differently): the caller then reads
the manifest the ordinary way (``reader.iter_rows``), which says what each row is.

JSONL is read by pyarrow's streaming JSON reader, Parquet batch by batch (only the columns
used are decoded); memory stays one batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from batchrun.manifest.job import JobSpec
from batchrun.manifest.jsonl import UTF8_BOM
from batchrun.manifest.reader import manifest_format
from batchrun.manifest.settings import OUTPUT_SETTINGS, REQUEST_SETTINGS

# Columns that give a row another shape or its own settings: not plain.
_NOT_PLAIN = frozenset({"messages", "media", "body", "url", "method", *REQUEST_SETTINGS,
                        *OUTPUT_SETTINGS})
_USED = frozenset({"id", "custom_id", "prompt", "system"})
CHUNK_BYTES = 8 << 20  # JSONL read at a time (bench: 16 MB, no faster, 100 MB more RSS)
PARSE_BLOCK_BYTES = 2 << 20  # pyarrow parses blocks in parallel (a longer line: not plain)
BATCH_ROWS = 65536


class NotPlain(Exception):
    """The manifest (or the job) needs the row-by-row reader."""


@dataclass(frozen=True)
class PlainBatch:
    ids: pa.Array  # strings, as ``Row.id`` would hold them
    prompts: pa.Array  # non-blank strings
    systems: pa.Array | None  # strings or nulls (null: the job's system)
    unused: tuple[str, ...]  # the other columns of the batch


def plain_batches(path: Path, job: JobSpec) -> Iterator[PlainBatch]:
    """The manifest's rows as checked column batches; ``NotPlain`` when it is not all plain
    prompt rows (possibly after some batches: the caller starts over)."""
    if job.prompt_template or job.media_columns or job.output_schema or job.columns:
        raise NotPlain("the job reads more than id, prompt and system")
    try:
        yield from _ahead(_parquet(path) if manifest_format(path) == "parquet" else _jsonl(path))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise NotPlain(str(exc)) from None


def _ahead(batches: Generator[PlainBatch, None, None]) -> Iterator[PlainBatch]:
    """``batches``, the next one read, parsed and checked in a worker thread while the caller
    counts this one (Arrow lets go of the GIL in both): memory holds two batches, not one."""
    with ThreadPoolExecutor(1, thread_name_prefix="batchrun-manifest") as worker:
        coming = worker.submit(next, batches, None)
        try:
            while (batch := coming.result()) is not None:
                coming = worker.submit(next, batches, None)
                yield batch
        finally:
            coming.cancel()
            with contextlib.suppress(BaseException):
                coming.result()  # a generator is not closed while its next() runs
            batches.close()


def _jsonl(path: Path) -> Generator[PlainBatch, None, None]:
    """Whole lines, ``CHUNK_BYTES`` at a time, each chunk parsed by pyarrow on its own: memory
    holds one chunk (pyarrow's streaming reader decodes ahead of a slower consumer)."""
    options = pj.ReadOptions(block_size=PARSE_BLOCK_BYTES)
    with open(path, "rb") as handle:
        rest = handle.read(len(UTF8_BOM))
        if rest == UTF8_BOM:
            raise NotPlain("a byte-order mark")
        while chunk := handle.read(CHUNK_BYTES):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            if not cut:
                raise NotPlain("a line longer than a chunk")
            rest = data[cut:]
            yield _checked(pj.read_json(pa.BufferReader(data[:cut]), read_options=options))
        if rest.strip():
            yield _checked(pj.read_json(pa.BufferReader(rest), read_options=options))


def _parquet(path: Path) -> Generator[PlainBatch, None, None]:
    parquet = pq.ParquetFile(path)
    with contextlib.closing(parquet):
        names = parquet.schema_arrow.names
        if _NOT_PLAIN.intersection(names):
            raise NotPlain("a column that gives rows another shape or their own settings")
        columns = [name for name in names if name in _USED]
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            table = pa.Table.from_batches([batch])
            yield _checked(table, unused=tuple(n for n in names if n not in _USED))


def _checked(table: pa.Table, unused: tuple[str, ...] | None = None) -> PlainBatch:
    names = table.schema.names
    if _NOT_PLAIN.intersection(names):
        raise NotPlain("a column that gives rows another shape or their own settings")
    if ("id" in names) == ("custom_id" in names):
        raise NotPlain("no id column, or both id and custom_id")
    ids = _ids(table.column("id" if "id" in names else "custom_id").combine_chunks())
    if "prompt" not in names:
        raise NotPlain("no prompt column")
    prompts = _strings(table.column("prompt").combine_chunks())
    if prompts.null_count or _any_blank(prompts):
        raise NotPlain("a null or blank prompt")
    systems = None
    if "system" in names:
        systems = _strings(table.column("system").combine_chunks(), nullable=True)
    if unused is None:
        unused = tuple(name for name in names if name not in _USED)
    return PlainBatch(ids, prompts, systems, unused)


def _ids(values: pa.Array) -> pa.Array:
    if values.null_count:
        raise NotPlain("a null id")
    if pa.types.is_integer(values.type):
        return pc.cast(values, pa.string())
    ids = _strings(values)
    if _any_blank(ids):
        raise NotPlain("a blank id")
    return ids


def _strings(values: pa.Array, *, nullable: bool = False) -> pa.Array:
    if pa.types.is_null(values.type) and nullable:
        return pa.nulls(len(values), pa.string())
    if pa.types.is_large_string(values.type):
        return pc.cast(values, pa.string())
    if not pa.types.is_string(values.type):
        raise NotPlain(f"a column of {values.type}, not strings")
    return values


# Python's whitespace (what ``str.strip`` takes off), as an RE2 class: a blank value is made
# of it only. Matched in place: a text fails at its first other character, nothing is copied.
_BLANK = (r"^[\t\n\x{0B}\x{0C}\r\x{1C}-\x{1F} \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}"
          r"\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]*$")


def _any_blank(values: pa.Array) -> bool:
    # Arrow's utf8_is_space (all whitespace, not empty) holds for every character Python's
    # isspace does (tests/test_fast_estimate.py checks all 29): a cheap pass that finds no
    # candidate spares the regex, which costs about 4 times as much.
    if len(values) == values.null_count:
        return False
    if not pc.any(pc.utf8_is_space(values)).as_py() and pc.min(pc.binary_length(values)).as_py():
        return False
    return bool(pc.any(pc.match_substring_regex(values, _BLANK)).as_py())
